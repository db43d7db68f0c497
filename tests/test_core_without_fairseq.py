"""The core (features, masking, mixing, models, checkpoint layout, data tools) works where fairseq is absent."""

import sys
import textwrap

from conftest import REPO, run

SCRIPT = textwrap.dedent(
    """
    import sys, importlib.abc

    class HideFairseq(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fairseq" or name.startswith("fairseq."):
                raise ImportError("fairseq is hidden for this test")
            return None

    sys.meta_path.insert(0, HideFairseq())
    import numpy as np, torch
    import sslam_plugin
    from sslam_plugin import features, masking, mixing, randomness, checkpoints, data
    from sslam_plugin.checkpoints import official_names
    from sslam_plugin.data import scan, converters, robust, validate, parallel, labelled
    from sslam_plugin.augment import AugmentationPolicy
    from sslam_plugin import waveform, hear, inference, training_log
    from sslam_plugin.checkpoints import huggingface, official_layout
    from sslam_plugin.models import BootstrapPretrainer, PretrainingConfig, EncoderConfig, DecoderConfig
    cfg = PretrainingConfig(encoder=EncoderConfig(embed_dim=32, depth=1, num_heads=2),
                            decoder=DecoderConfig(dim=32, layers=1, groups=4), clone_batch=1)
    model = BootstrapPretrainer(cfg)
    mask = torch.from_numpy(masking.inverse_block_mask((4, 8), 1, rng=np.random.default_rng(0)))
    out = model(torch.randn(1, 1, 64, 128), mask)
    assert torch.isfinite(out.losses["patch"])
    official_names.pretrainer_to_official(model.state_dict())
    assert not any(m == "fairseq" or m.startswith("fairseq.") for m in sys.modules)
    print("OK")
    """
)


def test_core_imports_and_runs_without_fairseq():
    result = run([sys.executable, "-c", SCRIPT], cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")
