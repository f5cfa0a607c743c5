"""`sqd gc`: free what no run needs any more, and say how much.

Data (server/store/gc.py): the runs marked deleted are erased — their chunks, then their rows. Artifacts (this
module): objects under `runs/<id>/` of a run that is not in the runs table (those of the runs just erased at once,
others after the grace period); temporary files left by crashed local writes (`<key>.tmp-<hex>`); incomplete S3
multipart uploads.

Safe while ingest and training run:
* the objects are listed first and the run ids read after, so a run whose row exists by the time gc decides is
  kept, whatever it wrote meanwhile; only listed objects are removed, never a folder wholesale;
* a run id missing from the table may be a run whose RunStarted has not been ingested yet (a Monitor run writes
  its first checkpoint before the server has seen it): its objects are kept until the newest of them is older
  than the grace period;
* a temporary file or an incomplete upload is removed only once older than the grace period, which must exceed
  the longest artifact write (default one hour);
* in a local store symbolic links are removed as links, never followed.
A run deleted while gc runs keeps its artifacts until the next gc.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from sqd.artifacts import TEMP_MARK, ArtifactStore, StoredObject
from sqd.server.store.gc import DataGc, gc_data
from sqd.server.store.models import Run

DEFAULT_GRACE_S = 3600.0


@dataclass
class Freed:
    objects: int = 0
    bytes: int = 0

    def add(self, count: int, size: int) -> None:
        self.objects += count
        self.bytes += size


@dataclass
class ArtifactGc:
    store: str
    orphan_runs: list[str] = field(default_factory=list)
    orphans: Freed = field(default_factory=Freed)
    temp_files: Freed = field(default_factory=Freed)
    partial_uploads: Freed = field(default_factory=Freed)
    young_unknown_runs: list[str] = field(default_factory=list)  # kept: maybe not ingested yet

    @property
    def total(self) -> Freed:
        parts = (self.orphans, self.temp_files, self.partial_uploads)
        return Freed(sum(p.objects for p in parts), sum(p.bytes for p in parts))


@dataclass
class GcReport:
    dry_run: bool
    grace_s: float
    artifacts: ArtifactGc
    data: DataGc

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["artifacts"]["total"] = asdict(self.artifacts.total)
        return out


def live_run_ids(engine: Engine) -> set[str]:
    """The runs whose artifacts are kept (a run in the trash too: it can still be restored)."""
    with engine.connect() as conn:
        return set(conn.scalars(select(Run.id)))


def run_of(key: str) -> str | None:
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "runs" else None


def gc_artifacts(store: ArtifactStore, live_runs: Callable[[], set[str]], grace_s: float, now: float,
                 dry_run: bool = False, erased: set[str] | frozenset[str] = frozenset()) -> ArtifactGc:
    """`erased`: runs deleted for good just now, whose artifacts go whatever their age."""
    report = ArtifactGc(store.where)
    objects = list(store.list_objects("runs"))
    uploads = store.partial_uploads()
    live = live_runs()  # after the listing: a run created meanwhile is known here
    cutoff = now - grace_s

    owned: dict[str, list[StoredObject]] = defaultdict(list)  # unknown runs' objects, temporary files aside
    newest: dict[str, float] = {}  # unknown runs' newest object, a temporary file (a write under way) included
    doomed: list[StoredObject] = []
    for obj in objects:
        temporary = TEMP_MARK.search(obj.key) is not None
        if temporary and obj.modified < cutoff:
            doomed.append(obj)
            report.temp_files.add(1, obj.size)
        if (run_id := run_of(obj.key)) is not None and run_id not in live:
            newest[run_id] = max(newest.get(run_id, obj.modified), obj.modified)
            if not temporary:
                owned[run_id].append(obj)
    orphan_runs = sorted(run_id for run_id, last in newest.items() if last < cutoff or run_id in erased)
    report.young_unknown_runs = sorted(set(newest) - set(orphan_runs))
    for run_id in orphan_runs:
        if owned[run_id]:
            report.orphan_runs.append(run_id)
            report.orphans.add(len(owned[run_id]), sum(o.size for o in owned[run_id]))
            doomed.extend(owned[run_id])
    stale = [u for u in uploads if u.initiated < cutoff]
    for upload in stale:
        report.partial_uploads.add(1, upload.size)

    if not dry_run:
        store.remove([o.key for o in doomed])
        for upload in stale:
            store.abort_upload(upload)
        for run_id in orphan_runs:
            store.prune_empty_dirs(f"runs/{run_id}")
    return report


def collect_garbage(engine: Engine, store: ArtifactStore, grace_s: float = DEFAULT_GRACE_S,
                    dry_run: bool = False, now: float | None = None) -> GcReport:
    """`sqd gc`: the data first (so rows of deleted runs go before their artifacts), then the artifacts."""
    data = gc_data(engine, dry_run=dry_run)
    erased = set(data.runs)
    artifacts = gc_artifacts(store, lambda: live_run_ids(engine) - erased, grace_s,
                             time.time() if now is None else now, dry_run, erased)
    return GcReport(dry_run, grace_s, artifacts, data)
