"""MetricBuffer: the device-side path a GPU uses (forced here on the CPU) and the host path the CPU uses."""

from __future__ import annotations

import math

import pytest
import torch

from sqd.trainer.metric_buffer import MetricBuffer


@pytest.mark.parametrize("on_device", [True, False], ids=["device-buffer", "host-floats"])
def test_rows_come_back_as_points(on_device: bool) -> None:
    buf = MetricBuffer(torch.device("cpu"), capacity=4, columns=2)
    buf.on_device = on_device
    buf.add(0, 0, {"loss/D": torch.tensor(0.5), "lr/G": 2e-3, "skip": None})
    buf.add(1, 0, {"loss/D": torch.tensor(math.nan), "angle/G": torch.tensor(1e-6, dtype=torch.float64),
                   "grad_norm/G": torch.tensor(3.0)})  # a third column: the device buffer widens
    assert not buf.full()
    window = buf.take()
    assert len(buf) == 0
    pts = sorted((k, s, v, e) for k, s, v, e, _ in window.points())
    assert pts[0] == ("angle/G", 1, 1e-6, 0)
    assert [(k, s) for k, s, *_ in pts] == [("angle/G", 1), ("grad_norm/G", 1), ("loss/D", 0), ("loss/D", 1),
                                            ("lr/G", 0)]
    values = {(k, s): v for k, s, v, *_ in pts}
    assert values[("loss/D", 0)] == 0.5 and math.isnan(values[("loss/D", 1)]) and values[("lr/G", 0)] == 2e-3


def test_buffer_reuse_after_take_keeps_rows_apart() -> None:
    buf = MetricBuffer(torch.device("cpu"), capacity=2)
    buf.on_device = True
    buf.add(0, None, {"x": torch.tensor(1.0)})
    buf.add(1, None, {"x": torch.tensor(2.0)})
    assert buf.full()
    first = buf.take()
    buf.add(2, None, {"x": torch.tensor(3.0)})  # overwrites the device rows the first window was copied from
    assert [(s, v) for _, s, v, *_ in first.points()] == [(0, 1.0), (1, 2.0)]
    assert [(s, v) for _, s, v, *_ in buf.take().points()] == [(2, 3.0)]


def test_multi_column_fields_are_decoded_on_the_host() -> None:
    """An angle is stored as its three sums, a gradient norm as the norms of its tensors; the window decodes them."""
    from sqd.trainer.metric_buffer import Field, angle, norm
    from sqd.trainer.weight_sums import angle_from_sums

    buf = MetricBuffer(torch.device("cpu"), capacity=4, columns=2)
    fields = (Field("angle/G", buf.columns("angle/G", 3), angle), Field("grad_norm/G", buf.columns("grad_norm/G", 2),
                                                                        norm))
    buf.add_device(7, 1, fields, torch.tensor([4.0, 1e-6, -1e-4, 3.0, 4.0], dtype=torch.float64), {"lr/G": 1e-3})
    assert buf.values.shape[1] >= 5 and buf.generation == 1  # widened for the five columns
    buf.add_written(8, 1, (), {"note": 1.0})  # a row a step program wrote itself (here: nothing on the device)
    assert int(buf.counter) == 1 and buf.device_rows == 2
    pts = {(k, s): v for k, s, v, _, _ in buf.take().points()}
    assert pts[("angle/G", 7)] == angle_from_sums(4.0, 1e-6, -1e-4)
    assert pts[("grad_norm/G", 7)] == 5.0 and pts[("lr/G", 7)] == 1e-3 and pts[("note", 8)] == 1.0
    assert int(buf.counter) == 0 and len(buf) == 0
