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
weight of 2.0 lives in the criterion config). The paper's Table 3 variants
switch terms off (``MixingConfig``): ``unmixed_student=False`` drops the terms
on A and A from the student batch (MB-PMA), ``source_retention=False`` drops
the SRL and the partner pass (MB-UA-PMA, MB-PMA); MB-UA is mixing disabled.

A batch of one clip has no partner: it trains on the unmixed terms only and
the mixed terms are zero (logged ``mixed_fraction`` = 0).

Dimensions: B = clips, C = clone_batch, T = frames, M = mel bins, R = patch
rows, F = frequency patches, L = R * F patches, D = width.
"""

from __future__ import annotations

import logging
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from ..features import FbankConfig
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
from .mask_index import gather_rows, mask_index
from .losses import patch_loss
from .pretraining import BootstrapPretrainer, PretrainingConfig, PretrainingOutput, StudentPrediction

__all__ = ["MixedTargets", "MixingPlan", "SourceRetentionPretrainer", "source_retention_targets"]

logger = logging.getLogger(__name__)


class MixedTargets(NamedTuple):
    patch: torch.Tensor  # (2B, L, D) patch targets of [A; M] (B, L, D of M alone when A is not needed)
    utterance: torch.Tensor  # (2B, D) utterance targets of [A; M] (or (B, D) of M)
    source_retention: Optional[torch.Tensor]  # (B, L, D) SRL targets of the mixtures; None when switched off


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
    def __init__(self, cfg: PretrainingConfig, mixing: MixingConfig, fbank: Optional[FbankConfig] = None):
        """``fbank``: the front end the inputs come from (its normalisation is what the
        ``mean`` mixing undoes); default :class:`FbankConfig` (AudioSet statistics)."""
        super().__init__(cfg)
        mixing.validate(cfg.encoder.patch_size)
        self.mixing = mixing
        self.fbank = fbank if fbank is not None else FbankConfig()
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
            fbank, partners, unmixed, self.mixing.operation, self.fbank.norm_mean, self.fbank.norm_std
        )

    # ----------------------------------------------------------------- teacher
    @torch.no_grad()
    def partner_layers(
        self,
        fbank: torch.Tensor,
        plan: MixingPlan,
        unmixed_patch: torch.Tensor,
        mixed_index: Optional[torch.Tensor] = None,
    ) -> List[torch.Tensor]:
        """Teacher layers of the partners over their mixed-region patches only.

        Args:
            mixed_index: (B, L_mixed) the mixed-region positions, ascending (fast
                step: built at the start of the step, no sync here), or None.

        Returns:
            depth x (B, L_mixed, D).
        """
        teacher = self.teacher.encoder
        partners = fbank[plan.partners.to(fbank.device)]
        dtype = fbank.dtype
        with torch.autocast(fbank.device.type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16)):
            patches = teacher.embed(partners.float())  # (B, L, D)
            if mixed_index is None:
                kept = gather_kept(patches, unmixed_patch.expand(patches.shape[0], -1))  # (B, L_mixed, D)
            else:
                kept = gather_rows(patches, mixed_index)  # (B, L, D) -> (B, L_mixed, D)
            return teacher.contextualize(kept, return_targets=True).layer_targets

    @torch.no_grad()
    def targets(
        self,
        fbank: torch.Tensor,
        both: torch.Tensor,
        plan: MixingPlan,
        unmixed_patch: torch.Tensor,
        mixed_index: Optional[torch.Tensor] = None,
    ) -> MixedTargets:
        """All stage-2 targets: one full teacher pass over ``both``, one short pass over P (SRL only).

        Args:
            fbank: (B, 1, T, M) clips A; both: (2B, 1, T, M) = [A; M], or (B, 1, T, M) = M
                alone when neither the unmixed terms nor the SRL need A's targets.
            unmixed_patch: (1 or B, L) bool, True = patch in an unmixed window.
            mixed_index: the partner pass's positions (fast step), see :meth:`partner_layers`.
        """
        layers = self.teacher_layers(both)
        patch = self.patch_targets(layers)  # (2B or B, L, D)
        utterance = self.utterance_targets(layers, patch)  # (2B or B, D)
        if not self.mixing.source_retention:
            return MixedTargets(patch, utterance, None)
        partner = self.patch_targets(self.partner_layers(fbank, plan, unmixed_patch, mixed_index))  # (B, L_mixed, D)
        srl = source_retention_targets(patch[: fbank.shape[0]], partner, unmixed_patch)
        return MixedTargets(patch, utterance, srl)

    def loss_names(self) -> Tuple[str, ...]:
        """The terms this configuration returns, the same for every batch (ranks must agree)."""
        names: Tuple[str, ...] = ("utterance", "patch") if self.mixing.unmixed_student else ()
        names += ("utterance_mixed", "patch_mixed")
        return names + (("source_retention",) if self.mixing.source_retention else ())

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
        """One stage-2 step's losses: the five terms, or those of :meth:`loss_names`.

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
        index = self.index_mask(mask)
        mixed_index = None
        if index is not None:
            # The fast step does all its host work here, before any heavy kernel is queued:
            # the partners move to the device once, the partner pass's positions are listed.
            plan = plan._replace(partners=plan.partners.to(fbank.device))
            if self.mixing.source_retention:
                mixed_index = mask_index(unmixed_patch.expand(clips, -1)).kept  # (B, L_mixed)
        mixed = self.mix(fbank, plan)  # (B, 1, T, M)
        both = torch.cat([fbank, mixed])  # (2B, 1, T, M): [A; M]
        both_mask = torch.cat([mask, mask])  # (2B * C, L)
        own = self.mixing.unmixed_student
        # MB-PMA: the student sees M only (half the cost); the teacher still needs A for the SRL
        student_in, student_mask = (both, both_mask) if own else (mixed, mask)
        teacher_in = both if own or self.mixing.source_retention else mixed
        student_index = None if index is None else (index.cat(index) if own else index)

        pred = self.student(student_in, student_mask, noise_generator, student_index)
        t = self.targets(fbank, teacher_in, plan, unmixed_patch, mixed_index)

        sample_size = student_mask.sum()
        half = student_mask.shape[0] - mask.shape[0]  # student rows of A: C * B, or 0
        pred_m = StudentPrediction(pred.cls[half:], pred.patches[half:])
        start_m = teacher_in.shape[0] - clips  # target rows of M
        losses: Dict[str, torch.Tensor] = {}
        if own:
            pred_a = StudentPrediction(pred.cls[:half], pred.patches[:half])
            losses["patch"], losses["utterance"] = self.bootstrap_losses(
                pred_a, t.patch[:clips], t.utterance[:clips], mask, sample_size, index
            )
        losses["patch_mixed"], losses["utterance_mixed"] = self.bootstrap_losses(
            pred_m, t.patch[start_m:], t.utterance[start_m:], mask, sample_size, index
        )
        if t.source_retention is not None:
            losses["source_retention"] = patch_loss(
                pred_m.patches, t.source_retention, mask, self.cfg.loss_beta, self.cfg.loss_scale,
                None if index is None else index.masked,
            )
        logs = self.variance_logs(self.masked_patches(pred.patches, student_mask, student_index), t.patch)
        logs["masked_pct"] = mask.float().mean().detach()
        logs["mixed_fraction"] = (~unmixed_patch).float().mean().detach()
        return PretrainingOutput(losses, sample_size, logs)

    def _unmixed_only(
        self, fbank: torch.Tensor, mask: torch.Tensor, noise_generator: Optional[torch.Generator]
    ) -> PretrainingOutput:
        out = super().forward(fbank, mask, noise_generator)
        zero = out.losses["patch"] * 0.0
        # the same names as a mixed batch (mixtures-only training has nothing to learn here)
        losses: Dict[str, torch.Tensor] = {name: out.losses.get(name, zero) for name in self.loss_names()}
        for name in ("utterance_mixed", "patch_mixed", "source_retention"):
            if name in losses:
                losses[name] = zero
        logs = dict(out.logs)
        logs["mixed_fraction"] = torch.tensor(0.0)
        return PretrainingOutput(losses, out.sample_size, logs)
