"""SSLAM stage 2: partial mixtures and the Source Retention Loss (SRL).

The student sees [A; M]: the clips A and their partial mixtures M with
partners P (M reuses A's masks). The teacher gives, in one pass over the full
[A; M], patch and utterance targets for both halves; a second, shorter pass
over P with its unmixed-window patches dropped gives the partner's targets in
the mixed region. The SRL target of clip i is the average of A_i's own target
and the partner's target completed with A_i's own target inside the unmixed
windows (so there it is A_i's target alone).

Five loss terms (:mod:`.losses`): ``utterance`` and ``patch`` on A,
``utterance_mixed`` and ``patch_mixed`` on M, ``source_retention`` on M (its
weight of 2.0 lives in the criterion config).

A batch of one clip has no partner: it trains on the unmixed terms only and
the mixed terms are zero (logged ``mixed_fraction`` = 0).

Dimensions: B = clips, C = clone_batch, T = frames, M = mel bins, R = patch
rows, F = frequency patches, L = R * F patches, D = width.
"""

from __future__ import annotations

import logging
from typing import Dict, List, NamedTuple, Optional

import torch

from ..mixing import (
    MixingConfig,
    fit_window_rows,
    partial_mix,
    partner_indices,
    sample_unmixed_windows,
    unmixed_frames,
    unmixed_rows,
)
from .encoder import gather_kept
from .losses import patch_loss
from .pretraining import BootstrapPretrainer, PretrainingConfig, PretrainingOutput, StudentPrediction

__all__ = ["MixedTargets", "MixingPlan", "SourceRetentionPretrainer", "source_retention_targets"]

logger = logging.getLogger(__name__)


class MixedTargets(NamedTuple):
    patch: torch.Tensor  # (2B, L, D) patch targets of [A; M]
    utterance: torch.Tensor  # (2B, D) utterance targets of [A; M]
    source_retention: torch.Tensor  # (B, L, D) SRL targets of the mixtures


class MixingPlan(NamedTuple):
    partners: torch.Tensor  # (B,) index of each clip's partner
    windows: torch.Tensor  # (1 or B, num_windows) unmixed window start frames
    window_frames: int  # length of each window


def source_retention_targets(
    own: torch.Tensor, partner_mixed_region: torch.Tensor, unmixed_patch: torch.Tensor
) -> torch.Tensor:
    """Average of a clip's own target and its partner's, completed with its own.

    Args:
        own: (B, L, D) the clips' own patch targets (teacher pass over A).
        partner_mixed_region: (B, L_mixed, D) partner targets for the mixed-region
            patches of clip i, in grid order (teacher pass over P with the
            unmixed-window patches dropped).
        unmixed_patch: (1 or B, L) bool, True = patch inside an unmixed window.

    Returns:
        (B, L, D).
    """
    mixed = ~unmixed_patch.expand(own.shape[0], -1)  # (B, L)
    partner = own.clone().masked_scatter(mixed.unsqueeze(-1), partner_mixed_region)
    return (own + partner) / 2.0


class SourceRetentionPretrainer(BootstrapPretrainer):
    def __init__(self, cfg: PretrainingConfig, mixing: MixingConfig):
        super().__init__(cfg)
        mixing.validate(cfg.encoder.patch_size)
        self.mixing = mixing
        # Used only when a caller passes no generator; the fairseq model derives
        # one per batch (see ``sslam_plugin.randomness``), so nothing here needs
        # saving or depends on the process.
        self.generator = torch.Generator().manual_seed(mixing.seed)
        self._warned_short = False

    # ----------------------------------------------------------------- mixing
    def plan(self, clips: int, frames: int, generator: Optional[torch.Generator] = None) -> MixingPlan:
        """Draw partners and unmixed windows from ``generator`` (default: the model's own)."""
        generator = generator if generator is not None else self.generator
        patch = self.cfg.encoder.patch_size
        rows = frames // patch
        wanted = self.mixing.unmixed_window_frames // patch
        window_rows = fit_window_rows(rows, self.mixing.num_unmixed_windows, wanted)
        if window_rows != wanted and not self._warned_short:
            logger.warning(
                "%d unmixed windows of %d frames leave nothing to mix in %d-frame clips; "
                "using windows of %d frames (set model.mixing.unmixed_window_frames)",
                self.mixing.num_unmixed_windows, wanted * patch, frames, window_rows * patch,
            )
            self._warned_short = True
        count = clips if self.mixing.windows_per == "clip" else 1
        starts = sample_unmixed_windows(
            rows, self.mixing.num_unmixed_windows, window_rows, count, generator, self.mixing.window_sampler
        )
        partners = partner_indices(clips, self.mixing.partner, generator)
        return MixingPlan(partners, starts * patch, window_rows * patch)

    def mix(self, fbank: torch.Tensor, plan: MixingPlan) -> torch.Tensor:
        """(B, 1, T, M) clips -> (B, 1, T, M) partial mixtures."""
        unmixed = unmixed_frames(plan.windows.to(fbank.device), plan.window_frames, fbank.shape[2])
        partners = fbank[plan.partners.to(fbank.device)]
        return partial_mix(
            fbank, partners, unmixed, self.mixing.operation, self.mixing.norm_mean, self.mixing.norm_std
        )

    # ----------------------------------------------------------------- teacher
    @torch.no_grad()
    def partner_layers(self, fbank: torch.Tensor, plan: MixingPlan, unmixed_patch: torch.Tensor) -> List[torch.Tensor]:
        """Teacher layers of the partners over their mixed-region patches only.

        Returns:
            depth x (B, L_mixed, D).
        """
        teacher = self.teacher.encoder
        partners = fbank[plan.partners.to(fbank.device)]
        dtype = fbank.dtype
        with torch.autocast(fbank.device.type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16)):
            patches = teacher.embed(partners.float())  # (B, L, D)
            kept = gather_kept(patches, unmixed_patch.expand(patches.shape[0], -1))  # (B, L_mixed, D)
            return teacher.contextualize(kept, return_targets=True).layer_targets

    @torch.no_grad()
    def targets(self, fbank: torch.Tensor, both: torch.Tensor, plan: MixingPlan, unmixed_patch: torch.Tensor) -> MixedTargets:
        """All stage-2 targets: one full teacher pass over [A; M], one short pass over P.

        Args:
            fbank: (B, 1, T, M) clips A; both: (2B, 1, T, M) = [A; M].
            unmixed_patch: (1 or B, L) bool, True = patch in an unmixed window.
        """
        layers = self.teacher_layers(both)
        patch = self.patch_targets(layers)  # (2B, L, D)
        utterance = self.utterance_targets(layers, patch)  # (2B, D)
        partner = self.patch_targets(self.partner_layers(fbank, plan, unmixed_patch))  # (B, L_mixed, D)
        srl = source_retention_targets(patch[: fbank.shape[0]], partner, unmixed_patch)
        return MixedTargets(patch, utterance, srl)

    def unmixed_patches(self, plan: MixingPlan, frames: int, device: torch.device) -> torch.Tensor:
        """(1 or B, L) bool, True = patch inside an unmixed window (time-major)."""
        rows, cols = self.encoder.patch_grid(frames)
        windows = plan.windows.to(device)
        by_row = unmixed_rows(windows, plan.window_frames, self.cfg.encoder.patch_size, rows)  # (W, R)
        return by_row.repeat_interleave(cols, dim=1)  # (W, R) -> (W, L)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        fbank: torch.Tensor,
        mask: torch.Tensor,
        noise_generator: Optional[torch.Generator] = None,
        plan: Optional[MixingPlan] = None,
        mixing_generator: Optional[torch.Generator] = None,
    ) -> PretrainingOutput:
        """One stage-2 step's five losses.

        Args:
            fbank: (B, 1, T, M) clips A.
            mask: (B * C, L) bool, True = masked; reused for the mixtures.
            plan: partners and windows to use (replay); drawn from
                ``mixing_generator`` (default: the model's own) when None.
        """
        clips = fbank.shape[0]
        if clips < 2:
            return self._unmixed_only(fbank, mask.bool(), noise_generator)
        mask = mask.bool()
        plan = plan if plan is not None else self.plan(clips, fbank.shape[2], mixing_generator)
        unmixed_patch = self.unmixed_patches(plan, fbank.shape[2], fbank.device)
        both = torch.cat([fbank, self.mix(fbank, plan)])  # (2B, 1, T, M): [A; M]
        both_mask = torch.cat([mask, mask])  # (2B * C, L)

        pred = self.student(both, both_mask, noise_generator)
        t = self.targets(fbank, both, plan, unmixed_patch)

        sample_size = both_mask.sum()
        half = mask.shape[0]
        pred_a = StudentPrediction(pred.cls[:half], pred.patches[:half])
        pred_m = StudentPrediction(pred.cls[half:], pred.patches[half:])
        patch, utterance = self.bootstrap_losses(pred_a, t.patch[:clips], t.utterance[:clips], mask, sample_size)
        patch_m, utterance_m = self.bootstrap_losses(pred_m, t.patch[clips:], t.utterance[clips:], mask, sample_size)
        srl = patch_loss(pred_m.patches, t.source_retention, mask, self.cfg.loss_beta, self.cfg.loss_scale)

        losses = {
            "utterance": utterance,
            "patch": patch,
            "utterance_mixed": utterance_m,
            "patch_mixed": patch_m,
            "source_retention": srl,
        }
        logs = self.variance_logs(pred.patches[both_mask], t.patch)
        logs["masked_pct"] = mask.float().mean().detach()
        logs["mixed_fraction"] = (~unmixed_patch).float().mean().detach()
        return PretrainingOutput(losses, sample_size, logs)

    def _unmixed_only(
        self, fbank: torch.Tensor, mask: torch.Tensor, noise_generator: Optional[torch.Generator]
    ) -> PretrainingOutput:
        out = super().forward(fbank, mask, noise_generator)
        zero = out.losses["patch"] * 0.0
        losses: Dict[str, torch.Tensor] = dict(out.losses)
        losses.update(utterance_mixed=zero, patch_mixed=zero, source_retention=zero)
        logs = dict(out.logs)
        logs["mixed_fraction"] = torch.tensor(0.0)
        return PretrainingOutput(losses, out.sample_size, logs)
