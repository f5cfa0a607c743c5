"""The bus goes away in the middle of training: training never stops, events are buffered, spooled past the
bound, and delivered in order once the bus is back, with one warning."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_support import SPEC, events, of_type, points, tiny_gan, train

from sqd.bus import Bus
from sqd.embedded_redis import EmbeddedRedis
from sqd.settings import BusSettings, Settings, TrainerSettings
from sqd.trainer import Monitor
from sqd.trainer.spool import resend_leftovers


@pytest.fixture
def private_valkey() -> Iterator[EmbeddedRedis]:
    """A server of our own that the test may stop and restart (same socket, AOF keeps what it had)."""
    with tempfile.TemporaryDirectory(prefix="sqd-", dir="/tmp") as d:  # short path: a unix socket fits
        server = EmbeddedRedis(Path(d))
        server.start()
        yield server
        server.stop()


def outage_settings(tmp_path: Path, server: EmbeddedRedis) -> Settings:
    return Settings(home=tmp_path / "home", redis_url=server.url, bus=BusSettings(prefix="outage"),
                    trainer=TrainerSettings(spool_max_events=3))


def test_outage_buffers_spools_and_resends_in_order(tmp_path: Path, private_valkey: EmbeddedRedis,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    settings = outage_settings(tmp_path, private_valkey)
    bus = Bus.connect(settings)
    G, D = tiny_gan()
    mon = Monitor(G, D, name="outage", settings=settings, generator_spec=SPEC, checkpoint_every=10, flush_every=2,
                  close_timeout_s=30)
    caplog.set_level(logging.INFO, logger="sqd.trainer.spool")
    with mon:
        train(mon, G, D, steps=10)
        private_valkey.stop()
        train(mon, G, D, steps=30, start=10)  # 15 metric batches + 2 checkpoints while the bus is away
        spool = settings.home / "spool" / mon.run_id
        assert any(spool.glob("*.spool")), "events past spool_max_events go to disk"
        private_valkey.start()
        train(mon, G, D, steps=10, start=40)
    ingest = events(bus, "ingest")
    assert [e.type for e in ingest][0] == "run_started" and ingest[-1].type == "run_finished"
    assert sorted(points(ingest)["loss/G"]) == list(range(50))
    steps = [p.step for e in of_type(ingest, "metrics") for p in e.points() if p.key == "loss/G"]
    assert steps == sorted(steps), "delivered in the order they were produced"
    assert [c.step for c in of_type(events(bus, "checkpoints"), "checkpoint")] == [0, 10, 20, 30, 40, 49]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bus unreachable" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert not list(spool.glob("*.spool"))
    bus.close()


def test_spool_left_by_a_finished_process_is_resent(tmp_path: Path, private_valkey: EmbeddedRedis) -> None:
    settings = outage_settings(tmp_path, private_valkey)
    G, D = tiny_gan()
    mon = Monitor(G, D, settings=settings, checkpoint_every=None, flush_every=5, close_timeout_s=0.5)
    private_valkey.stop()
    with mon:  # the bus never answers while this run lives
        train(mon, G, D, steps=20)
    leftovers = list((settings.home / "spool").glob("*/*.spool"))
    assert len(leftovers) == 1
    private_valkey.start()
    bus = Bus.connect(settings)
    assert resend_leftovers(bus, settings.home / "spool") > 0
    ingest = events(bus, "ingest")
    assert ingest[0].type == "run_started" and ingest[-1].status == "finished"
    assert sorted(points(ingest)["loss/D"]) == list(range(20))
    assert not list((settings.home / "spool").glob("*/*.spool"))
    assert resend_leftovers(bus, settings.home / "spool") == 0
    bus.close()
