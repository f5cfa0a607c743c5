"""The CPU's fused pass (sqd.trainer.host_sums): any layout and float dtype of weights and gradients, the angle and
the gradient norm of the float64 reference, the snapshot taken, non-finite weights giving NaN."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from sqd.trainer.host_sums import HostSnapshots
from sqd.trainer.stability import weight_angle
from sqd.trainer.weight_sums import angle_from_sums


def odd_layouts() -> list[nn.Parameter]:
    """A channels_last conv weight, a non-dense view, a float64 and a bf16 tensor, a plain vector."""
    torch.manual_seed(0)
    conv = nn.Parameter(torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last))
    strided = nn.Parameter(torch.randn(6, 10)[:, ::2])
    return [conv, strided, nn.Parameter(torch.randn(7, dtype=torch.float64)),
            nn.Parameter(torch.randn(5).to(torch.bfloat16)), nn.Parameter(torch.randn(9))]


def test_odd_layouts_and_dtypes_give_the_reference_angle_and_gradient_norm() -> None:
    params = odd_layouts()
    assert not params[0].is_contiguous() and not params[1].is_contiguous()
    snaps = HostSnapshots([params[:3], params[3:]], ["A", "B"])
    snaps.snapshot()
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(0.01 * torch.randn_like(p, dtype=torch.float32).to(p.dtype))
    grads: list[torch.Tensor | None] = [torch.randn_like(p) for p in params]
    grads[1] = torch.randn(6, 10)[:, ::2]  # not one dense block: read through a copy
    grads[4] = None  # a parameter without a gradient counts as zero
    angles, squares = snaps.sums(grads)
    assert angles is not None
    for (lo, hi), sums, square in zip([(0, 3), (3, 5)], angles, squares, strict=True):
        assert angle_from_sums(*sums) == pytest.approx(weight_angle(before[lo:hi], params[lo:hi]), rel=1e-12)
        want = math.fsum(float(g.double().square().sum()) for g in grads[lo:hi] if g is not None)
        assert square == pytest.approx(want, rel=1e-12)
    again, no_grads = snaps.sums()
    assert again is not None and all(angle_from_sums(*s) == 0.0 for s in again)  # the pass took the snapshot
    assert no_grads == [None, None]


def test_first_sums_only_snapshot() -> None:
    p = nn.Parameter(torch.randn(10))
    snaps = HostSnapshots([[p]])
    angles, squares = snaps.sums([torch.ones(10)])
    assert angles is None and squares == [10.0]
    assert snaps.has_snapshot


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_give_nan_angles(bad: float) -> None:
    p = nn.Parameter(torch.randn(100))
    snaps = HostSnapshots([[p]])
    snaps.snapshot()
    with torch.no_grad():
        p[17] = bad
    angles, _ = snaps.sums()
    assert angles is not None and math.isnan(angle_from_sums(*angles[0]))


def test_a_network_without_parameters_is_named() -> None:
    with pytest.raises(ValueError, match="'D' has no trainable"):
        HostSnapshots([[nn.Parameter(torch.ones(2))], []], ["G", "D"])


def test_without_numba_the_error_says_what_to_install() -> None:
    code = ("import sys; sys.modules['numba'] = None\n"
            "from sqd.trainer.host_sums import HostSnapshots")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "the Monitor on a CPU needs numba" in out.stderr and "pip install 'sqd[trainer]'" in out.stderr


def test_where_no_cache_can_be_written_it_compiles_each_time() -> None:
    code = ("import numba.core.caching as c; c.CacheImpl._locator_classes = []  # no writable cache location\n"
            "import torch\n"
            "from sqd.trainer.host_sums import HostSnapshots\n"
            "s = HostSnapshots([[torch.nn.Parameter(torch.ones(3))]]); s.snapshot(); print(s.sums()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(3.0, 0.0, 0.0)]"
