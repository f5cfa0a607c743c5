"""The FID Inception-v3: loading a weights file with the standard file's names (random weights saved here from
torchvision's own Inception3 — the real file cannot be downloaded), the TF-graph pooling of its blocks, the
features, and a clear error for every way the file can be wrong."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torchvision.models import inception_v3
from torchvision.models.inception import InceptionA

from sqd.errors import ModelFileMissing
from sqd.settings import Settings, WorkerSettings
from sqd.worker.inception import FEATURES, FIDInception, fid_features, load_fid_inception, quantize
from sqd.worker.model_files import INCEPTION_FILE, inception_weights_path


@functools.cache
def _standard_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def standard_state_dict() -> dict[str, torch.Tensor]:
    """What pt_inception-2015-12-05 holds: torchvision's Inception3 names, 1008 classes, no aux head and no
    num_batches_tracked (a TF conversion). Random weights, built once."""
    return dict(_standard_state_dict())


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / INCEPTION_FILE
    torch.save(standard_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(weights_file: Path) -> FIDInception:
    return load_fid_inception(weights_file)


def test_weights_load_and_features_are_pool3(model: FIDInception, weights_file: Path) -> None:
    state = torch.load(weights_file, weights_only=True)
    torch.testing.assert_close(model.net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    x = torch.rand(1, 1, 64, 64) * 2 - 1  # grey: repeated to RGB
    features = fid_features(model, x, batch_size=1)
    assert features.shape == (1, FEATURES) and torch.isfinite(features).all()
    assert (features >= 0).all()  # pool3 averages ReLU outputs


def test_blocks_pool_like_the_tf_graph(model: FIDInception) -> None:
    """Mixed_5b–7b average-pool without counting the padding (so they differ from torchvision only on the border
    of the feature map); Mixed_7c max-pools."""
    net = model.net
    x = torch.rand(1, 192, 9, 9)
    with torch.no_grad():
        ours = net.Mixed_5b(x)
        branches = InceptionA._forward(net.Mixed_5b, x)  # torchvision's own block on the same weights
        tv_out = torch.cat(branches, 1)
    pool = slice(ours.shape[1] - branches[-1].shape[1], None)
    torch.testing.assert_close(ours[:, :pool.start], tv_out[:, :pool.start])
    torch.testing.assert_close(ours[:, pool, 1:-1, 1:-1], tv_out[:, pool, 1:-1, 1:-1])
    assert not torch.allclose(ours[:, pool, 0], tv_out[:, pool, 0])
    y = torch.rand(1, 2048, 5, 5)
    with torch.no_grad():
        last = net.Mixed_7c(y)[:, -192:]
        expected = net.Mixed_7c.branch_pool(F.max_pool2d(y, 3, 1, 1))
    torch.testing.assert_close(last, expected)


def test_quantize_measures_images_as_saved() -> None:
    x = torch.linspace(-1, 1, 1000)
    q = quantize(x)
    assert torch.equal(q, quantize(q)) and (q - x).abs().max() <= 1 / 127.5 / 2 + 1e-6
    assert len(torch.unique(q)) == 256


def test_missing_file_names_the_path_and_where_to_get_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(ModelFileMissing) as err:
        inception_weights_path(settings)
    msg = str(err.value)
    assert str(settings.models_dir / INCEPTION_FILE) in msg and "pytorch-fid" in msg
    assert "SQD_WORKER__INCEPTION_WEIGHTS" in msg
    configured = Settings(home=tmp_path, worker=WorkerSettings(inception_weights=tmp_path / "elsewhere.pth"))
    with pytest.raises(ModelFileMissing, match="elsewhere.pth"):
        inception_weights_path(configured)


@pytest.mark.parametrize(("content", "message"), [
    ("garbage", r"cannot be read"),
    ("not_a_dict", r"is not a state dict of tensors"),
    ("missing_key", r"missing: Mixed_6b\.branch1x1\.conv\.weight"),
    ("wrong_classes", r"wrong shape: fc\.weight \(1000, 2048\) \(expected \(1008, 2048\)\)"),
    ("extra_key", r"unexpected: AuxLogits\.fc\.weight"),
])
def test_wrong_weights_files_are_named_with_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / INCEPTION_FILE
    state = standard_state_dict()
    if content == "garbage":
        path.write_bytes(b"PK\x03\x04 truncated")
    elif content == "not_a_dict":
        torch.save([torch.zeros(1)], path)
    else:
        if content == "missing_key":
            del state["Mixed_6b.branch1x1.conv.weight"]
        elif content == "wrong_classes":
            state["fc.weight"] = torch.zeros(1000, 2048)
        else:
            state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
        torch.save(state, path)
    with pytest.raises(ModelFileMissing, match=message) as err:
        load_fid_inception(path)
    assert str(path) in str(err.value)
