"""Masked latent bootstrapping (EAT, SSLAM stage 1) as a plain PyTorch module.

The student sees only the kept patches of ``clone_batch`` masked copies of each
clip; the CNN decoder predicts, at the masked patches, the EMA teacher's targets
for the full clip (patch loss); the student's CLS output regresses the mean of
those targets (utterance loss).

Dimensions: B = clips, C = clone_batch, N = B * C student sequences,
T = frames, M = mel bins, L = patches, D = width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

import torch
import torch.nn as nn

from .decoder import ConvDecoder2d, DecoderConfig, scatter_to_grid
from .ema import EMATeacher, ema_decay_at
from .encoder import AudioEncoder, EncoderConfig, gather_kept
from .losses import patch_loss, utterance_loss
from .mask_index import MaskIndex, gather_from_clips, gather_rows, mask_index
from .targets import average_layer_targets, compute_var

__all__ = ["PretrainingConfig", "PretrainingOutput", "BootstrapPretrainer"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class PretrainingConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    clone_batch: int = field(default=16, metadata={"help": "masked copies of each clip in the student batch"})
    average_top_k_layers: int = field(default=12, metadata={"help": "teacher layers averaged into patch targets"})
    utterance_target_layers: Optional[int] = field(
        default=None,
        metadata={"help": "teacher layers averaged into utterance targets (None: average_top_k_layers)"},
    )
    instance_norm_target_layer: bool = field(default=True, metadata={"help": "instance-norm each target layer"})
    layer_norm_target_layer: bool = field(default=False, metadata={"help": "layer-norm each target layer"})
    layer_norm_targets: bool = field(default=True, metadata={"help": "layer-norm the averaged target"})
    loss_beta: float = field(default=0.0, metadata={"help": "smooth L1 beta; 0 = MSE"})
    loss_scale: Optional[float] = field(default=None, metadata={"help": "loss scale; None = 1/sqrt(width)"})
    ema_decay: float = field(default=0.9998, metadata={"help": "teacher EMA decay at update 0"})
    ema_end_decay: float = field(default=0.99999, metadata={"help": "teacher EMA decay after annealing"})
    ema_anneal_end_step: int = field(default=100000, metadata={"help": "updates over which the decay anneals"})
    fast_step: bool = field(
        default=True,
        metadata={
            "help": "gather and scatter by index lists built once per step (one host sync instead of about a "
            "dozen, no (copies x patches x width) repeats) and update the teacher with foreach kernels; the "
            "losses are those of the plain step (false) bit for bit"
        },
    )
    compile_modules: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the encoder blocks (student and teacher) and the decoder; same losses to "
            "round-off, a slow first step (opt-in)"
        },
    )
    compile_mode: str = field(
        default="default",
        metadata={
            "help": "torch.compile mode when compile_modules is set: default, reduce-overhead (CUDA graphs), "
            "max-autotune or max-autotune-no-cudagraphs"
        },
    )

    def validate(self) -> None:
        self.encoder.validate()
        self.decoder.validate(self.encoder.embed_dim)
        if self.clone_batch < 1:
            raise ValueError(f"clone_batch must be >= 1, got {self.clone_batch}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.average_top_k_layers < 1:
            raise ValueError(f"average_top_k_layers must be >= 1, got {self.average_top_k_layers}")
        for name in ("ema_decay", "ema_end_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


class PretrainingOutput(NamedTuple):
    losses: Dict[str, torch.Tensor]  # named scalar loss sums, before division by sample_size
    sample_size: torch.Tensor  # number of masked patches in the student batch
    logs: Dict[str, torch.Tensor]  # extra scalars to log


class StudentPrediction(NamedTuple):
    cls: torch.Tensor  # (N, D) CLS outputs
    patches: torch.Tensor  # (N, L, D) decoder predictions on the full grid


class BootstrapPretrainer(nn.Module):
    def __init__(self, cfg: PretrainingConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg.encoder)
        self.decoder = ConvDecoder2d(cfg.decoder, cfg.encoder.embed_dim)
        self.teacher = EMATeacher(self.encoder)
        self.ema_decay = cfg.ema_decay
        if cfg.compile_modules:
            self.compile_modules()

    def compile_modules(self) -> None:
        """Compile each encoder block (student and teacher) and the decoder in place.

        ``Module.compile`` keeps parameter names, so checkpoints are unchanged.
        Blocks are compiled one by one rather than the whole step so that the
        variable-length student and the full-length teacher sequences each get
        a small graph, and the Python loop over layers (targets) stays eager.
        """
        for block in list(self.encoder.blocks) + list(self.teacher.encoder.blocks):
            block.compile(dynamic=False, mode=self.cfg.compile_mode)
        self.decoder.compile(dynamic=False, mode=self.cfg.compile_mode)

    def no_weight_decay(self) -> Set[str]:
        """Trained parameters without weight decay: the encoder's, and the decoder's norms and biases."""
        names = {"encoder." + n for n in self.encoder.no_weight_decay()}
        return names | {"decoder." + n for n, p in self.decoder.named_parameters() if p.dim() <= 1}

    # ----------------------------------------------------------------- teacher
    def ema_step(self, num_updates: int) -> None:
        """Move the teacher toward the student, with the decay for this update."""
        self.ema_decay = ema_decay_at(
            num_updates, self.cfg.ema_decay, self.cfg.ema_end_decay, self.cfg.ema_anneal_end_step
        )
        if self.ema_decay < 1.0:
            self.teacher.update(self.encoder, self.ema_decay, foreach=self.cfg.fast_step)

    @torch.no_grad()
    def teacher_layers(self, fbank: torch.Tensor) -> List[torch.Tensor]:
        """Per-layer teacher representations of the full clips: depth x (B, L, D)."""
        dtype = fbank.dtype
        with torch.autocast(fbank.device.type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16)):
            return self.teacher.encoder(fbank.float(), return_targets=True).layer_targets

    def patch_targets(self, layers: List[torch.Tensor]) -> torch.Tensor:
        """(B, L, D) targets from the top-K layers."""
        return average_layer_targets(
            layers,
            self.cfg.average_top_k_layers,
            self.cfg.instance_norm_target_layer,
            self.cfg.layer_norm_target_layer,
            self.cfg.layer_norm_targets,
        )

    def utterance_targets(self, layers: List[torch.Tensor], patch_targets: torch.Tensor) -> torch.Tensor:
        """(B, D): mean over patches of the utterance target layers."""
        k = self.cfg.utterance_target_layers
        if k is None or k == self.cfg.average_top_k_layers:
            return patch_targets.mean(dim=1)
        return average_layer_targets(
            layers, k, self.cfg.instance_norm_target_layer, self.cfg.layer_norm_target_layer, self.cfg.layer_norm_targets
        ).mean(dim=1)

    # ------------------------------------------------------------ mask index
    def index_mask(self, mask: torch.Tensor) -> Optional[MaskIndex]:
        """The step's kept/masked index lists (fast step), or None (plain step: boolean masks).

        Call once at the start of a step: it is the step's one host sync.
        """
        return mask_index(mask) if self.cfg.fast_step else None

    def masked_patches(self, patches: torch.Tensor, mask: torch.Tensor, index: Optional[MaskIndex] = None) -> torch.Tensor:
        """(N, L, D) -> (N * (L - K), D): the masked patches, in the order of ``patches[mask]``."""
        if index is None:
            return patches[mask]
        return gather_rows(patches, index.masked).reshape(-1, patches.shape[-1])

    # ----------------------------------------------------------------- student
    def student(
        self,
        fbank: torch.Tensor,
        mask: torch.Tensor,
        noise_generator: Optional[torch.Generator] = None,
        index: Optional[MaskIndex] = None,
    ) -> StudentPrediction:
        """Encode the kept patches of every masked copy and decode the full grid.

        Args:
            fbank: (B, 1, T, M).
            mask: (B * C, L) bool, True = masked, copies of a clip adjacent.
            index: the mask as index lists (fast step; :meth:`index_mask`).
        """
        b = fbank.shape[0]
        clones = self.clones_of(mask, b)
        grid = self.encoder.patch_grid(fbank.shape[2])
        if index is None:
            patches = self.encoder.embed(fbank).repeat_interleave(clones, dim=0)  # (B, L, D) -> (N, L, D)
            kept = gather_kept(patches, mask)  # (N, K, D)
        else:
            kept = gather_from_clips(self.encoder.embed(fbank), index.kept)  # (B, L, D) -> (N, K, D)
        x = self.encoder.contextualize(kept).x  # (N, 1 + K, D)
        dec_in = scatter_to_grid(
            x[:, 1:], mask, self.cfg.decoder.mask_noise_std, noise_generator,
            kept_index=None if index is None else index.kept,
        )
        return StudentPrediction(cls=x[:, 0], patches=self.decoder(dec_in, grid))

    @staticmethod
    def clones_of(mask: torch.Tensor, clips: int) -> int:
        if mask.dim() != 2 or mask.shape[0] % clips:
            raise ValueError(
                f"mask must be (clips * clone_batch, patches) with {clips} clips, got {tuple(mask.shape)}"
            )
        return mask.shape[0] // clips

    # ------------------------------------------------------------------ losses
    def bootstrap_losses(
        self,
        pred: StudentPrediction,
        patch_targets: torch.Tensor,
        utterance_targets: torch.Tensor,
        mask: torch.Tensor,
        sample_size: torch.Tensor,
        index: Optional[MaskIndex] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The patch and utterance terms (:mod:`.losses`), both summed.

        Args:
            patch_targets: (B, L, D); utterance_targets: (B, D).
            sample_size: masked patches of the whole student batch.
            index: ``mask`` as index lists (fast step), or None.

        Returns:
            (patch loss sum, utterance loss sum), float32 scalars.
        """
        beta, scale = self.cfg.loss_beta, self.cfg.loss_scale
        patch = patch_loss(pred.patches, patch_targets, mask, beta, scale, None if index is None else index.masked)
        utterance = utterance_loss(pred.cls, utterance_targets, sample_size, beta, scale)
        return patch, utterance

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        fbank: torch.Tensor,
        mask: torch.Tensor,
        noise_generator: Optional[torch.Generator] = None,
    ) -> PretrainingOutput:
        """One stage-1 step's losses.

        Args:
            fbank: (B, 1, T, M) normalised log-mel features.
            mask: (B * C, L) bool, True = masked.
        """
        mask = mask.bool()
        index = self.index_mask(mask)
        pred = self.student(fbank, mask, noise_generator, index)
        layers = self.teacher_layers(fbank)
        patch_t = self.patch_targets(layers)
        utt_t = self.utterance_targets(layers, patch_t)
        sample_size = mask.sum()
        patch, utterance = self.bootstrap_losses(pred, patch_t, utt_t, mask, sample_size, index)
        logs = self.variance_logs(self.masked_patches(pred.patches, mask, index), patch_t)
        logs["masked_pct"] = mask.float().mean().detach()
        return PretrainingOutput({"patch": patch, "utterance": utterance}, sample_size, logs)

    @torch.no_grad()
    def variance_logs(self, masked_pred: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"pred_var": compute_var(masked_pred), "target_var": compute_var(targets)}
