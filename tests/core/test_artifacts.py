import os
import uuid
from types import SimpleNamespace

import pytest

from sqd.artifacts import ArtifactStore
from sqd.errors import ArtifactError


def test_put_get_verifies_sha(tmp_path):
    store = ArtifactStore(str(tmp_path / "a"))
    ref = store.put_bytes("runs/r1/checkpoints/step-1.pt", b"hello")
    assert ref.size_bytes == 5 and len(ref.sha256) == 64
    assert store.get_bytes(ref.uri, ref.sha256) == b"hello"
    assert not [p for p in (tmp_path / "a/runs/r1/checkpoints").iterdir() if ".tmp-" in p.name]


def test_corrupted_artifact_is_detected(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ref = store.put_bytes("x/y.bin", b"payload")
    (tmp_path / "x/y.bin").write_bytes(b"payloaX")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        store.get_bytes(ref.uri, ref.sha256)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a//b", "a/./b", "", "a b"])
def test_keys_cannot_escape_the_store(tmp_path, key):
    with pytest.raises(ArtifactError, match="is not a relative path"):
        ArtifactStore(str(tmp_path)).get_bytes(key)


def test_missing_artifact_names_the_key(tmp_path):
    with pytest.raises(ArtifactError, match="get nope.pt: no such artifact"):
        ArtifactStore(str(tmp_path)).get_bytes("nope.pt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_store_reports_and_leaves_no_partial_file(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ArtifactError, match="cannot write"):
            ArtifactStore(str(tmp_path)).put_bytes("a/b.bin", b"x")
    finally:
        tmp_path.chmod(0o700)


def test_full_disk_store_reports_error(tmp_path, monkeypatch):
    # The temporary file is a link to /dev/full, which answers every write with ENOSPC, as a full disk does.
    monkeypatch.setattr(uuid, "uuid4", lambda: SimpleNamespace(hex="fixed"))
    (tmp_path / "d").mkdir()
    os.symlink("/dev/full", tmp_path / "d" / "f.bin.tmp-fixed")
    with pytest.raises(ArtifactError, match="cannot write .*No space left"):
        ArtifactStore(str(tmp_path)).put_bytes("d/f.bin", b"x" * 10)
    assert not (tmp_path / "d" / "f.bin").exists()
