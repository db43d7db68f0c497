"""Model FLOPs of a pre-training step, counted from the shapes (for model FLOPs utilisation).

Counted: the matrix products (patch embedding, qkv, attention scores and
values, output projection, MLP, decoder convolutions and projection), 2 FLOPs
per multiply-add. Not counted: norms, softmax, GELU, the losses and the
optimiser, which are memory-bound and small. The student's backward is counted
as twice its forward (the usual convention); the teacher runs forward only.

Dimensions: B = clips, C = copies per clip, L = patches, K = kept patches,
S = tokens (1 + K for the student, 1 + L for the teacher), D = width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from .decoder import DecoderConfig
from .encoder import EncoderConfig

__all__ = ["StepShape", "encoder_flops", "decoder_flops", "patch_embed_flops", "step_flops"]


@dataclass(frozen=True)
class StepShape:
    """Which sequences one step runs (stage 1, stage 2 and its variants)."""

    student_clips: int  # clips embedded for the student (B; 2B in stage 2: [A; M])
    copies: int  # masked copies per clip (clone_batch)
    kept: int  # kept patches per copy (K)
    patches: int  # patches of a full clip (L)
    teacher_clips: int  # full-length teacher sequences (B; 2B in stage 2)
    partner_clips: int = 0  # stage 2 partner pass: sequences ...
    partner_patches: int = 0  # ... of this many mixed-region patches


def encoder_flops(cfg: EncoderConfig, sequences: int, tokens: int) -> int:
    """Forward FLOPs of the transformer blocks on ``sequences`` x ``tokens`` (CLS included)."""
    d, s = cfg.embed_dim, tokens
    hidden = int(d * cfg.mlp_ratio)
    per_block = 2 * s * d * 3 * d + 2 * s * d * d + 2 * 2 * s * d * hidden + 2 * 2 * s * s * d
    return sequences * cfg.depth * per_block


def patch_embed_flops(cfg: EncoderConfig, clips: int, patches: int) -> int:
    """Forward FLOPs of the 16x16 patch projection of ``clips`` full clips."""
    return 2 * clips * patches * cfg.embed_dim * cfg.patch_size**2


def decoder_flops(cfg: DecoderConfig, embed_dim: int, sequences: int, patches: int) -> int:
    """Forward FLOPs of the conv decoder on ``sequences`` full grids of ``patches``."""
    total = 0
    for i in range(cfg.layers):
        c_in = embed_dim if i == 0 else cfg.dim
        total += 2 * patches * cfg.dim * (c_in // cfg.groups) * cfg.kernel_size**2
    total += 2 * patches * cfg.dim * embed_dim  # final projection
    return sequences * total


def step_flops(encoder: EncoderConfig, decoder: DecoderConfig, shape: StepShape) -> Dict[str, int]:
    """FLOPs of one step: student forward and backward, teacher forward.

    Returns:
        ``student_forward``, ``teacher_forward`` and ``total`` = 3 x student forward + teacher forward.
    """
    rows = shape.student_clips * shape.copies
    student = (
        patch_embed_flops(encoder, shape.student_clips, shape.patches)
        + encoder_flops(encoder, rows, 1 + shape.kept)
        + decoder_flops(decoder, encoder.embed_dim, rows, shape.patches)
    )
    teacher = patch_embed_flops(encoder, shape.teacher_clips, shape.patches) + encoder_flops(
        encoder, shape.teacher_clips, 1 + shape.patches
    )
    if shape.partner_clips:
        teacher += patch_embed_flops(encoder, shape.partner_clips, shape.patches) + encoder_flops(
            encoder, shape.partner_clips, 1 + shape.partner_patches
        )
    return {"student_forward": student, "teacher_forward": teacher, "total": 3 * student + teacher}
