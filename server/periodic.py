"""A server task repeated on a daemon thread until ctx.stop is set; a pass that fails (the database or the bus is
down) is logged and the next one retries."""

from __future__ import annotations

import logging
import threading

from sqd.server.context import ServerContext

log = logging.getLogger(__name__)


class Periodic:
    name = "sqd-periodic"
    first_at_start = True  # one pass at once, or only after the first interval

    def __init__(self, ctx: ServerContext):
        self.ctx = ctx
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)

    def every_s(self) -> float:
        raise NotImplementedError

    def once(self) -> object:
        raise NotImplementedError

    def start(self) -> Periodic:
        self.thread.start()
        return self

    def run(self) -> None:
        if not self.first_at_start and self.ctx.stop.wait(self.every_s()):
            return
        while not self.ctx.stop.is_set():
            try:
                self.once()
            except Exception:  # noqa: BLE001 - the database or the bus is down: the next pass retries
                log.exception("%s failed; retrying in %.0f s", self.name, self.every_s())
            self.ctx.stop.wait(self.every_s())

    def join(self, timeout_s: float) -> None:
        self.thread.join(timeout_s)
