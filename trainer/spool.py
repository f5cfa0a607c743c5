"""An ordered outbox in front of the bus, so that training never stops because the bus is away.

Events wait in memory; when the bus does not answer, up to `max_events` stay in memory and older ones are spooled
to `$SQD_HOME/spool/<run_id>/<pid>-<n>.spool` (msgpack records of the wire fields, so NaN survives). When the bus is
back, the spool goes first, then memory, in the order the events were produced; delivery is at least once (a batch
cut by an error is resent whole), which ingest absorbs by `event_id`. One warning per outage, one info on recovery.

A spool left behind by a process that exited during an outage is sent by `resend_leftovers` (the trainer agent
calls it); each spool file is flock'ed by its writer, so nobody sends a file that is still being written.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgpack

from sqd.bus import Bus
from sqd.errors import BusError, DecodeError
from sqd.protocol import Event
from sqd.wire import decode, encode

log = logging.getLogger(__name__)

CHUNK = 500  # events per pipelined XADD round trip when catching up


def _write_record(fh: IO[bytes], stream: str, event: Event) -> None:
    fh.write(msgpack.packb([stream, encode(event)], use_bin_type=True))


def _read_records(path: Path) -> list[tuple[str, Event]]:
    records: list[tuple[str, Event]] = []
    with open(path, "rb") as fh:
        for item in msgpack.Unpacker(fh, raw=False, strict_map_key=False):  # a torn last record is skipped
            try:
                stream, fields = item
                records.append((str(stream), decode(fields)))
            except (ValueError, TypeError, DecodeError) as exc:
                log.error("spool %s: dropping an unreadable record (%s)", path, exc)
    return records


def _publish_in_order(bus: Bus, records: Sequence[tuple[str, Event]]) -> None:
    """Publish consecutive same-stream events together, preserving order; raises BusError."""
    i = 0
    while i < len(records):
        stream = records[i][0]
        j = i
        while j < len(records) and j - i < CHUNK and records[j][0] == stream:
            j += 1
        bus.publish(stream, [e for _, e in records[i:j]])
        i = j


@dataclass
class Outbox:
    """Used from one thread (the Monitor's sender). `send()` tries to deliver; it never raises for bus errors."""

    bus: Bus
    spool_dir: Path
    max_events: int = 10_000
    memory: deque[tuple[str, Event]] = field(default_factory=deque)
    spool_path: Path | None = None
    _spool_fh: IO[bytes] | None = None
    _spooled: int = 0
    _retry_at: float = 0.0
    _backoff_s: float = 0.5
    outage_since: float | None = None
    delivered: int = 0

    def put(self, stream: str, events: Sequence[Event]) -> None:
        self.memory.extend((stream, e) for e in events)
        if self.outage_since is not None and len(self.memory) > self.max_events:
            self._spill()

    def pending(self) -> int:
        return len(self.memory) + self._spooled

    def send(self) -> bool:
        """Deliver what is waiting unless we are backing off; True when nothing is left."""
        if not self.pending():
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            if self._spooled:
                self._send_spool()
            while self.memory:
                batch = [self.memory[i] for i in range(min(CHUNK, len(self.memory)))]
                _publish_in_order(self.bus, batch)
                for _ in batch:
                    self.memory.popleft()
                self.delivered += len(batch)
        except BusError as exc:
            self._on_outage(exc)
            return False
        if self.outage_since is not None:
            log.info("bus reachable again after %.0fs; buffered events delivered", time.time() - self.outage_since)
            self.outage_since, self._backoff_s = None, 0.5
        return True

    def _on_outage(self, exc: BusError) -> None:
        if self.outage_since is None:
            self.outage_since = time.time()
            log.warning("bus unreachable (%s); training goes on, events are buffered (%d in memory, then spooled "
                        "to %s) and sent when it is back", exc, self.max_events, self.spool_dir)
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, 10.0)
        if len(self.memory) > self.max_events:
            self._spill()

    def _spill(self) -> None:
        """Move every in-memory event to the end of the spool file (the spool always holds the oldest events)."""
        if self._spool_fh is None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            n = 0
            while (path := self.spool_dir / f"{os.getpid()}-{n}.spool").exists():
                n += 1
            self.spool_path = path
            self._spool_fh = open(path, "ab")  # noqa: SIM115 - kept open (and locked) while we own it
            fcntl.flock(self._spool_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        while self.memory:
            _write_record(self._spool_fh, *self.memory.popleft())
            self._spooled += 1
        self._spool_fh.flush()

    def _send_spool(self) -> None:
        assert self.spool_path is not None and self._spool_fh is not None
        self._spool_fh.flush()
        _publish_in_order(self.bus, _read_records(self.spool_path))
        self.delivered += self._spooled
        self._close_spool(delete=True)

    def _close_spool(self, delete: bool) -> None:
        if self._spool_fh is not None:
            self._spool_fh.close()  # releases the lock
            self._spool_fh = None
        if delete and self.spool_path is not None:
            self.spool_path.unlink(missing_ok=True)
            self.spool_path, self._spooled = None, 0

    def close(self, timeout_s: float) -> None:
        """Try to deliver everything for up to `timeout_s`; what is left stays spooled on disk (logged)."""
        deadline = time.monotonic() + timeout_s
        while not self.send() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, self._retry_at - time.monotonic())))
        if self.pending():
            self._spill()
            log.warning("bus still unreachable: %d events left in %s; the trainer agent resends them when the bus "
                        "is back (or call sqd.trainer.spool.resend_leftovers)", self._spooled, self.spool_path)
        self._close_spool(delete=False)


def resend_leftovers(bus: Bus, spool_root: Path) -> int:
    """Send and delete spool files that no live process holds; returns the number of events sent."""
    sent = 0
    for path in sorted(spool_root.glob("*/*.spool"), key=lambda p: p.stat().st_mtime):
        try:
            with open(path, "rb+") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is alive and still owns it
                records = _read_records(path)
                if records:
                    _publish_in_order(bus, records)
                path.unlink()
                sent += len(records)
        except FileNotFoundError:
            continue  # sent by another agent meanwhile
        _remove_if_empty(path.parent)
    return sent


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
