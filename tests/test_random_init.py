"""Random-init ResNets are the authors' random init: torchvision's ``resnet*(weights=None)`` built through
timm (docs/protocol.md §7)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from scipy import stats
from torch import nn

from medvit import create_model


def _values(t: torch.Tensor, n: int = 20_000) -> np.ndarray:
    """At most ``n`` values of ``t`` (a fixed subsample), as float64."""
    flat = t.detach().flatten().double().numpy()
    return flat if flat.size <= n else np.random.default_rng(0).choice(flat, n, replace=False)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_no_residual_block_starts_with_a_zero_last_batchnorm(name):
    model = create_model(name, "random", num_outputs=5)
    blocks = [m for m in model.net.modules() if hasattr(m, "zero_init_last")]
    assert len(blocks) == {"resnet18": 8, "resnet50": 16}[name]
    for block in blocks:
        last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
        assert torch.all(last_bn.weight == 1.0), f"{name}: a residual block's last BatchNorm scale is not 1"


def test_resnet50_init_statistics_match_torchvision():
    """Same parameter names and shapes as torchvision's resnet50(weights=None); BatchNorm parameters and
    buffers equal; every weight tensor drawn from the same distribution (two-sample KS statistic small,
    std within 5%)."""
    torch.manual_seed(0)
    ours = create_model("resnet50", "random", num_outputs=1000).net.state_dict()
    torch.manual_seed(1)
    theirs = torchvision.models.resnet50(weights=None).state_dict()
    assert list(ours) == list(theirs)
    for key, ref in theirs.items():
        got = ours[key]
        assert got.shape == ref.shape, key
        if ".bn" in key or key.startswith("bn1") or ".downsample.1." in key:
            torch.testing.assert_close(got, ref, msg=lambda m: f"{key}: {m}")
            continue
        a, b = _values(got), _values(ref)
        assert stats.ks_2samp(a, b).statistic < 0.05, key
        assert a.std() == pytest.approx(b.std(), rel=0.05), key


def test_resnet50_convolutions_are_kaiming_normal_fan_out():
    net = create_model("resnet50", "random", num_outputs=0).net
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            assert m.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05), name


def test_one_channel_random_stem_is_a_default_conv_like_the_authors_rebuilt_stem():
    """The authors replace conv1 by a fresh ``nn.Conv2d(1, ...)``: PyTorch's default init, U(±1/sqrt(fan_in))."""
    torch.manual_seed(0)
    stem = create_model("resnet50", "random", num_outputs=2, in_chans=1).net.conv1
    assert stem.weight.shape == (64, 1, 7, 7) and stem.bias is None
    bound = 1 / (1 * 7 * 7) ** 0.5
    w = stem.weight.detach().flatten().double().numpy()
    assert np.abs(w).max() <= bound
    assert stats.kstest(w, stats.uniform(-bound, 2 * bound).cdf).statistic < 0.08
