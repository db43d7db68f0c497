"""Plain PyTorch building blocks (no fairseq): encoder, decoder, targets, losses, EMA."""

from .decoder import ConvDecoder2d, DecoderConfig
from .encoder import AudioEncoder, EncoderConfig, EncoderOutput
from .pretraining import BootstrapPretrainer, PretrainingConfig, PretrainingOutput

__all__ = [
    "AudioEncoder",
    "BootstrapPretrainer",
    "ConvDecoder2d",
    "DecoderConfig",
    "EncoderConfig",
    "EncoderOutput",
    "PretrainingConfig",
    "PretrainingOutput",
]
