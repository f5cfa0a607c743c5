"""The server's packer: every `server.pack_check_s` it packs the runs that finished more than `server.pack_after_s`
ago (server/store/packs.py), one transaction per run. Any number of server processes may run it at once:
pack_run locks what it moves, and a run packed by one is not due for the others."""

from __future__ import annotations

import logging
import time

from sqlalchemy import update

from sqd.server.context import ServerContext
from sqd.server.periodic import Periodic
from sqd.server.store.chunk_codec import CorruptChunk
from sqd.server.store.models import Run
from sqd.server.store.packs import PackReport, pack_run, runs_to_pack

log = logging.getLogger(__name__)


def pack_finished(ctx: ServerContext, now: float | None = None) -> dict[str, PackReport]:
    """Pack every run due now; run id → what moved."""
    cutoff = (time.time() if now is None else now) - ctx.settings.server.pack_after_s
    with ctx.sessions() as session:
        due = runs_to_pack(session, cutoff)
    out = {}
    for run_id in due:
        try:
            with ctx.sessions() as session:
                out[run_id] = r = pack_run(session, run_id)
                session.commit()
        except CorruptChunk:
            # its pack (or a chunk) does not decode: nothing was changed; it is not tried again until a new point
            # for one of its series arrives, and the other runs are packed as usual
            log.exception("run %s cannot be packed; left as it is", run_id)
            with ctx.sessions() as session:
                session.execute(update(Run).where(Run.id == run_id).values(packed_at=time.time()))
                session.commit()
            continue
        log.info("run %s packed: %d series, %d points, %d → %d bytes", run_id, r.series, r.points, r.bytes_before,
                 r.pack_bytes)
    return out


class Packer(Periodic):
    name = "sqd-packer"
    first_at_start = False  # a starting server catches up with ingest first; packing is never urgent

    def every_s(self) -> float:
        return self.ctx.settings.server.pack_check_s

    def once(self) -> dict[str, PackReport]:
        return pack_finished(self.ctx)
