"""Draw what SSLAM stage 2 trains on, with the training code's own functions.

    sslam-plot-mixture demo_data/manifests/train.tsv --clips 2 --target-length 256 \
        --window-frames 64 -o docs/figures/mixture.png

For N clips of a manifest (one batch, in manifest order or --indices), one row
per clip: its log-mel (the training front end: ``RobustClipReader``, i.e.
``features.waveform_to_features``), its partner, the partial mixture with the
unmixed windows outlined (``SourceRetentionPretrainer.plan`` and ``.mix``, i.e.
``mixing.sample_unmixed_windows`` and ``mixing.partial_mix``, from the seed
training derives for this batch), and the patches the student keeps of the
first masked copy (``masking.inverse_block_mask`` from the clip's mask seed;
masked patches greyed out). The defaults are the paper recipe
(config/pretrain/sslam_stage2.yaml); pass the demo's --target-length 256
--window-frames 64 for config/pretrain/demo_stage2.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.data.manifest import ManifestError, read_manifest
from sslam_plugin.data.robust import RobustClipReader
from sslam_plugin.features import FbankConfig
from sslam_plugin.masking import inverse_block_mask, mask_rng
from sslam_plugin.mixing import OPERATIONS, PARTNERS, WINDOW_MODES, WINDOW_SAMPLERS, MixingConfig
from sslam_plugin.models import DecoderConfig, EncoderConfig, PretrainingConfig
from sslam_plugin.models.source_retention import MixingPlan, SourceRetentionPretrainer
from sslam_plugin.randomness import batch_seed, seeded_generator

__all__ = ["MixturePanels", "mixture_panels", "draw_mixture", "main"]

PATCH = 16
COLUMN_INCHES, ROW_INCHES, DPI = 4.0, 2.6, 100


class MixturePanels(NamedTuple):
    clips: torch.Tensor  # (N, T, M) normalised log-mels
    partners: torch.Tensor  # (N, T, M) each clip's partner
    mixtures: torch.Tensor  # (N, T, M) partial mixtures, as training builds them
    unmixed: torch.Tensor  # (1 or N, T) bool, True = frame in an unmixed window
    masks: torch.Tensor  # (N, L) bool, the first masked copy, True = masked (removed from the student)
    plan: MixingPlan
    names: list


def mixture_panels(
    manifest: Path,
    indices: Sequence[int],
    fbank: FbankConfig,
    mixing: MixingConfig,
    seed: int = 1,
    epoch: int = 1,
    mask_ratio: float = 0.8,
    mask_ratio_adjust: float = 0.07,
    mask_block_size: int = 5,
) -> MixturePanels:
    """The batch ``indices`` of ``manifest`` as stage 2 sees it in ``epoch`` (``seed`` = common.seed)."""
    if len(indices) < 2:
        raise UsageError(f"a mixture needs at least 2 clips (a partner for each; --clips, --indices), got {len(indices)}")
    clips_manifest = read_manifest(manifest)
    for i in indices:
        if not 0 <= i < len(clips_manifest):
            raise UsageError(f"{manifest}: clip index {i} is outside 0..{len(clips_manifest) - 1}")
    reader = RobustClipReader(clips_manifest, fbank, seed=seed)
    clips = torch.stack([reader.features(i) for i in indices])  # (N, T, M)
    # Only the plan and the mix are used: a minimal model holds the same code training runs.
    tiny = PretrainingConfig(
        encoder=EncoderConfig(embed_dim=8, depth=1, num_heads=1, patch_size=PATCH, num_mel_bins=fbank.num_mel_bins),
        decoder=DecoderConfig(dim=8, layers=1, groups=1),
        clone_batch=1,
        average_top_k_layers=1,
    )
    model = SourceRetentionPretrainer(tiny, mixing, fbank)
    # the fairseq model's per-batch mixing stream (training/model.py): batch seed, stream 1 + mixing.seed
    generator = seeded_generator(batch_seed(seed, epoch, list(indices)), 1 + mixing.seed)
    plan = model.plan(len(indices), fbank.target_length, generator)
    fb = clips.unsqueeze(1)  # (N, T, M) -> (N, 1, T, M)
    mixtures = model.mix(fb, plan).squeeze(1)
    grid = (fbank.target_length // PATCH, fbank.num_mel_bins // PATCH)
    masks = torch.from_numpy(np.concatenate([
        inverse_block_mask(grid, 1, mask_ratio, mask_ratio_adjust, mask_block_size, rng=mask_rng(seed, epoch, i))
        for i in indices
    ]))
    frames = torch.arange(fbank.target_length)
    starts = plan.windows  # (1 or N, num_windows) start frames
    unmixed = ((frames >= starts[..., None]) & (frames < starts[..., None] + plan.window_frames)).any(dim=1)
    names = [clips_manifest.files[i] for i in indices]
    return MixturePanels(clips, clips[plan.partners], mixtures, unmixed, masks, plan, names)


def draw_mixture(panels: MixturePanels, output: Path) -> Path:
    """One row per clip: clip, partner, mixture (unmixed windows outlined), student's kept patches."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n, frames, mels = panels.clips.shape
    cols = mels // PATCH
    fig, axes = plt.subplots(n, 4, figsize=(4 * COLUMN_INCHES, n * ROW_INCHES), squeeze=False)
    lo, hi = float(panels.clips.min()), float(panels.clips.max())
    for row in range(n):
        partner = int(panels.plan.partners[row])
        starts = panels.plan.windows[row if panels.plan.windows.shape[0] > 1 else 0].tolist()
        kept = ~panels.masks[row].reshape(frames // PATCH, cols)  # (rows, cols), True = seen by the student
        student = panels.mixtures[row].clone()
        student[~kept.repeat_interleave(PATCH, 0).repeat_interleave(PATCH, 1)] = float("nan")
        images = [
            (panels.clips[row], f"clip {row}: {Path(panels.names[row]).name}"),
            (panels.partners[row], f"partner: clip {partner}"),
            (panels.mixtures[row], "partial mixture (unmixed windows boxed)"),
            (student, f"student input: {int(kept.sum())} of {kept.numel()} patches kept"),
        ]
        for col, (image, title) in enumerate(images):
            ax = axes[row][col]
            cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.85")  # masked patches grey
            ax.imshow(image.T.numpy(), origin="lower", aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= 2:
                for start in starts:
                    ax.add_patch(Rectangle((start - 0.5, -0.5), panels.plan.window_frames, mels,
                                           fill=False, edgecolor="cyan", linewidth=1.5))
        axes[row][0].set_ylabel("mel bin", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("frame (10 ms)", fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=DPI)  # no bbox_inches="tight": the size stays N x 4 panels as documented
    plt.close(fig)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fbank, mixing = FbankConfig(), MixingConfig()  # the defaults are the owners' (the paper recipe's)
    parser.add_argument("manifest", type=Path, help="a manifest (.tsv) of clips")
    parser.add_argument("-o", "--output", type=Path, default=Path("mixture.png"))
    parser.add_argument("--clips", type=int, default=4, help="the first N clips form the batch")
    parser.add_argument("--indices", type=int, nargs="+", default=None, help="these manifest lines (0-based) instead")
    parser.add_argument("--target-length", type=int, default=fbank.target_length, help="task.target_length (frames)")
    parser.add_argument("--norm-mean", type=float, default=fbank.norm_mean, help="task.norm_mean")
    parser.add_argument("--norm-std", type=float, default=fbank.norm_std, help="task.norm_std")
    parser.add_argument(
        "--window-frames", type=int, default=mixing.unmixed_window_frames, help="model.mixing.unmixed_window_frames"
    )
    parser.add_argument(
        "--num-windows", type=int, default=mixing.num_unmixed_windows, help="model.mixing.num_unmixed_windows"
    )
    parser.add_argument("--operation", default=mixing.operation, choices=OPERATIONS)
    parser.add_argument("--partner", default=mixing.partner, choices=PARTNERS)
    parser.add_argument("--windows-per", default=mixing.windows_per, choices=WINDOW_MODES)
    parser.add_argument("--window-sampler", default=mixing.window_sampler, choices=WINDOW_SAMPLERS)
    parser.add_argument("--mixing-seed", type=int, default=mixing.seed, help="model.mixing.seed")
    parser.add_argument("--seed", type=int, default=1, help="common.seed (masks and the batch's draws)")
    parser.add_argument("--epoch", type=int, default=1)
    parser.add_argument("--mask-ratio", type=float, default=0.8)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    indices = args.indices if args.indices is not None else list(range(args.clips))
    mixing = MixingConfig(
        enabled=True, num_unmixed_windows=args.num_windows, unmixed_window_frames=args.window_frames,
        operation=args.operation, partner=args.partner, windows_per=args.windows_per,
        window_sampler=args.window_sampler, seed=args.mixing_seed,
    )
    try:  # the option values before any file: a bad one is a usage error
        fbank = FbankConfig(target_length=args.target_length, norm_mean=args.norm_mean, norm_std=args.norm_std)
        mixing.validate(PATCH)
    except ValueError as err:
        return fail(UsageError(err))
    try:
        panels = mixture_panels(args.manifest, indices, fbank, mixing, args.seed, args.epoch, args.mask_ratio)
    except (ManifestError, ValueError, OSError) as err:  # UsageError: --clips / --indices that do not fit
        return fail(err)
    print(draw_mixture(panels, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
