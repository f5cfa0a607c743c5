"""The artifact store (checkpoints, sample grids, logs): a local directory by default, any fsspec URL in deployment
(`s3://bucket/prefix` through s3fs, configured by `SQD_ARTIFACTS__*`; see `storage_options`).

Readers never see half an artifact. On a local (or any non-object) filesystem a write goes to `<key>.tmp-<hex>`
and is renamed into place; on an object store it is one PUT (s3fs uses one multipart upload above 100 MB), which
S3 makes visible whole or not at all, so a temporary key and a copy would only double the traffic and leave
debris after a crash. What a crash can leave is a `.tmp-` file (local) or an incomplete multipart upload (S3);
`sqd gc` removes those once they are older than its grace period. Every artifact's sha256 is returned on write
and verified on read. Keys are relative, `/`-separated and checked, so no request can reach outside the store.

Errors are `ArtifactError`s naming the key and the store; one caused by an unreachable store chains an `OSError`
that is not a `FileNotFoundError` (transport errors of botocore are wrapped in a `ConnectionError`), which is how
callers tell "try again later" from "this artifact is missing or corrupt".
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import fsspec

from sqd.errors import ArtifactError

if TYPE_CHECKING:
    from sqd.settings import ArtifactSettings, Settings

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
TEMP_MARK = re.compile(r"\.tmp-[0-9a-f]{32}$")  # what put_bytes appends while it writes to a local store
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
S3_PROTOCOLS = ("s3", "s3a")


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class StoredObject:
    """One object as listed: its key, size and last modification (seconds since the epoch)."""

    key: str
    size: int
    modified: float


@dataclass(frozen=True)
class PartialUpload:
    """An incomplete multipart upload (S3): invisible to readers, billed until aborted."""

    key: str
    upload_id: str
    initiated: float
    size: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in ("..", ".") for part in key.split("/")):
        raise ArtifactError(f"artifact key {key!r} is not a relative path of [A-Za-z0-9_.-] parts")
    return key


def storage_options(url: str, cfg: ArtifactSettings) -> dict[str, Any]:
    """fsspec options for `url` from the settings: `options` as given, plus for s3:// the endpoint, region and
    keys (each only when set, so botocore's own chain fills the rest). S3 fields on another protocol are refused:
    they would be silently ignored otherwise."""
    options = dict(cfg.options)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    s3_fields = {name for name in ("endpoint_url", "region", "access_key_id", "secret_access_key")
                 if getattr(cfg, name) is not None}
    if protocol not in S3_PROTOCOLS:
        if s3_fields:
            names = ", ".join(f"SQD_ARTIFACTS__{n.upper()}" for n in sorted(s3_fields))
            raise ArtifactError(f"{names} apply to s3:// artifact stores, but SQD_ARTIFACTS_URL is {url!r}; "
                                "unset them or point SQD_ARTIFACTS_URL at s3://bucket/prefix")
        return options
    if cfg.endpoint_url is not None:
        options.setdefault("endpoint_url", cfg.endpoint_url)
    if cfg.access_key_id is not None:
        options.setdefault("key", cfg.access_key_id)
    if cfg.secret_access_key is not None:
        options.setdefault("secret", cfg.secret_access_key.get_secret_value())
    if cfg.region is not None:
        options["client_kwargs"] = {"region_name": cfg.region, **options.get("client_kwargs", {})}
    # other processes write the same bucket: a cached listing would hide their objects from exists()/gc
    options.setdefault("use_listings_cache", False)
    return options


def _transport_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return (OSError,)
    return (OSError, BotoCoreError)


def _as_os_error(exc: BaseException) -> OSError:
    if isinstance(exc, OSError):
        return exc
    wrapped = ConnectionError(str(exc))
    wrapped.__cause__ = exc
    return wrapped


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if value is not None else 0.0


class ArtifactStore:
    def __init__(self, url: str, **options: Any):
        self.url = url.rstrip("/")
        self.options = options
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        except ImportError as exc:
            raise ArtifactError(f"artifact store {self.url}: {exc} (s3:// needs `pip install 'sqd[s3]'`)") from exc
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        self.is_local = bool(protocols & {"file", "local"})
        self.is_object_store = bool(protocols & OBJECT_STORES)
        self.is_s3 = bool(protocols & set(S3_PROTOCOLS))
        self.errors = _transport_errors()

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        url = settings.resolved_artifacts_url
        return cls(url, **storage_options(url, settings.artifacts))

    @property
    def where(self) -> str:
        endpoint = self.options.get("endpoint_url")
        return f"{self.url} (endpoint {endpoint})" if endpoint else self.url

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def verify(self) -> None:
        """Called when a role starts: a local store's directory exists (created if need be); an object store's
        bucket exists and answers. Raises ArtifactError naming the URL otherwise."""
        try:
            if self.is_local:
                self.fs.makedirs(self.root, exist_ok=True)
            elif self.is_object_store:
                self.fs.ls(self.root.split("/", 1)[0])
        except FileNotFoundError as exc:
            bucket = self.root.split("/", 1)[0]
            raise ArtifactError(f"artifact store {self.where}: bucket {bucket!r} does not exist; create it (e.g. "
                                f"`aws s3 mb s3://{bucket}` or `mc mb <alias>/{bucket}`) or fix "
                                "SQD_ARTIFACTS_URL") from exc
        except self.errors as exc:
            raise ArtifactError(f"artifact store {self.where} is not usable: {exc}") from _as_os_error(exc)

    def put_bytes(self, key: str, data: bytes) -> ArtifactRef:
        path = self._path(key)
        try:
            if self.is_object_store:
                self.fs.pipe_file(path, data)
            else:
                self._write_then_rename(path, data)
        except self.errors as exc:
            raise ArtifactError(f"put {key}: cannot write to {self.url}: {exc}") from _as_os_error(exc)
        return ArtifactRef(key, sha256_hex(data), len(data))

    def _write_then_rename(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        except BaseException:
            self._discard(tmp)
            raise

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except self.errors:
            pass

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        path = self._path(key)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise ArtifactError(f"get {key}: no such artifact in {self.url}") from exc
        except self.errors as exc:
            raise ArtifactError(f"get {key}: cannot read from {self.url}: {exc}") from _as_os_error(exc)
        if sha256 is not None and (actual := sha256_hex(data)) != sha256:
            raise ArtifactError(f"get {key}: sha256 mismatch (recorded {sha256[:12]}…, file has {actual[:12]}…): "
                                "the artifact is corrupt or was replaced")
        return bytes(data)

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

    # ---- listing and removal, for `sqd gc` ------------------------------------------------------------------
    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under `prefix` (a key). In a local store symbolic links are listed as themselves and
        never followed, so nothing outside the store is ever listed (or removed)."""
        base = self._path(prefix)
        try:
            if self.is_local:
                yield from self._walk_local(base)
                return
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return
        except self.errors as exc:
            raise ArtifactError(f"list {prefix}: cannot list {self.url}: {exc}") from _as_os_error(exc)
        for path, info in found.items():
            if info.get("type", "file") == "file":
                yield StoredObject(path[len(self.root) + 1:], int(info.get("size") or 0),
                                   _epoch(info.get("LastModified", info.get("mtime"))))

    def _walk_local(self, base: str) -> Iterator[StoredObject]:
        for folder, dirs, files in os.walk(base, followlinks=False):
            links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # a link to a folder is an object
            for name in [*files, *links]:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:  # renamed or removed since the folder was read (a write under way)
                    continue
                yield StoredObject(path[len(self.root) + 1:], st.st_size, st.st_mtime)

    def remove(self, keys: list[str]) -> None:
        """Remove these objects (a link, not its target); a key already gone is not an error."""
        if not keys:
            return
        try:
            if self.is_local:
                for key in keys:
                    try:
                        os.unlink(self._path(key))
                    except FileNotFoundError:
                        pass
            else:
                self.fs.rm([self._path(k) for k in keys])
        except FileNotFoundError:
            pass
        except self.errors as exc:
            raise ArtifactError(f"remove {len(keys)} objects from {self.url}: {exc}") from _as_os_error(exc)

    def prune_empty_dirs(self, prefix: str) -> None:
        """Local stores: remove the folders left empty under `prefix` (a folder a writer fills again in between
        is not empty and stays)."""
        if not self.is_local:
            return
        for folder, _dirs, _files in os.walk(self._path(prefix), topdown=False, followlinks=False):
            try:
                os.rmdir(folder)
            except OSError:
                pass

    def partial_uploads(self) -> list[PartialUpload]:
        """Incomplete multipart uploads under the store's prefix (S3 only; elsewhere none)."""
        if not self.is_s3:
            return []
        bucket, _, prefix = self.root.partition("/")
        found: list[PartialUpload] = []
        marker: dict[str, str] = {}
        try:
            while True:
                page = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marker)
                for upload in page.get("Uploads", []):
                    parts = self.fs.call_s3("list_parts", Bucket=bucket, Key=upload["Key"],
                                            UploadId=upload["UploadId"]).get("Parts", [])
                    found.append(PartialUpload(upload["Key"], upload["UploadId"], _epoch(upload["Initiated"]),
                                               sum(int(p.get("Size", 0)) for p in parts)))
                if not page.get("IsTruncated"):
                    return found
                marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
        except self.errors as exc:
            raise ArtifactError(f"list the incomplete uploads of {self.url}: {exc}") from _as_os_error(exc)

    def abort_upload(self, upload: PartialUpload) -> None:
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload.key, UploadId=upload.upload_id)
        except FileNotFoundError:
            pass  # completed or aborted meanwhile
        except self.errors as exc:
            raise ArtifactError(f"abort the upload of {upload.key} in {self.url}: {exc}") from _as_os_error(exc)
