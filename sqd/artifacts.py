"""The artifact store (checkpoints, sample grids): a local directory by default, any fsspec URL in deployment.

Writes go to a temporary name and are renamed into place, so a reader never sees half a file; every artifact's
sha256 is returned on write and verified on read. Keys are relative, `/`-separated and checked, so no request
can reach outside the store.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

import fsspec

from sqd.errors import ArtifactError

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    sha256: str
    size_bytes: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in ("..", ".") for part in key.split("/")):
        raise ArtifactError(f"artifact key {key!r} is not a relative path of [A-Za-z0-9_.-] parts")
    return key


class ArtifactStore:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def put_bytes(self, key: str, data: bytes) -> ArtifactRef:
        path = self._path(key)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        except OSError as exc:
            self._discard(tmp)
            raise ArtifactError(f"put {key}: cannot write to {self.url}: {exc}") from exc
        return ArtifactRef(key, sha256_hex(data), len(data))

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except OSError:
            pass

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        path = self._path(key)
        try:
            with self.fs.open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError as exc:
            raise ArtifactError(f"get {key}: no such artifact in {self.url}") from exc
        except OSError as exc:
            raise ArtifactError(f"get {key}: cannot read from {self.url}: {exc}") from exc
        if sha256 is not None and (actual := sha256_hex(data)) != sha256:
            raise ArtifactError(f"get {key}: sha256 mismatch (recorded {sha256[:12]}…, file has {actual[:12]}…): "
                                "the artifact is corrupt or was replaced")
        return data

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        self._discard(self._path(key))

    def delete_tree(self, prefix: str) -> int:
        """Remove every artifact under `prefix/` (a run's folder); returns how many files went."""
        path = self._path(prefix)
        try:
            if not self.fs.exists(path):
                return 0
            files = self.fs.find(path)
            self.fs.rm(path, recursive=True)
        except OSError as exc:
            raise ArtifactError(f"delete {prefix}/: cannot remove from {self.url}: {exc}") from exc
        return len(files)

    def local_path(self, key: str) -> str:
        """The filesystem path of a key, for local stores only (e.g. to stream a file from the server)."""
        if not self.is_local:
            raise ArtifactError(f"local_path {key}: {self.url} is not a local directory")
        return self._path(key)
