"""The bus against real servers: the pre-started Redis and the embedded Valkey (the `bus` fixture runs both)."""

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sqd.bus import Bus, Delivery, TransientError, drop_prefix
from sqd.errors import BusError
from sqd.protocol import MetricBatch, RunStarted


def batch(run="r", n=3, start=0):
    return MetricBatch.from_points(run, [("loss/D", start + i, float(i), 0, 0.0) for i in range(n)])


def consume_all(bus, handler, group="g", name="c1", until=lambda: False, timeout_s=10.0, **overrides):
    consumer = bus.consumer("ingest", group, name, **overrides)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(handler, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    return consumer


def pending_count(bus, group="g"):
    return bus.client.xpending(bus.key("ingest"), group)["pending"]


def test_publish_consume_ack(bus):
    events = [batch(n=5, start=5 * i) for i in range(4)]
    bus.publish("ingest", events)
    seen = []
    consume_all(bus, lambda ds: seen.extend(d.event for d in ds), until=lambda: len(seen) == 4)
    assert [e.event_id for e in seen] == [e.event_id for e in events]
    assert pending_count(bus) == 0


def test_nothing_is_acked_until_the_handler_returns(bus):
    bus.publish("ingest", [batch()])
    consumer = bus.consumer("ingest", "g", "c1")
    consumer.ensure_group()
    got = consumer.read_new()
    assert len(got) == 1 and pending_count(bus) == 1  # read but not handled: still pending
    consumer.handle(got, lambda ds: None)
    assert pending_count(bus) == 0


def test_a_consumer_killed_before_ack_is_reclaimed_and_processed_once(bus, settings):
    bus.publish("ingest", [batch(n=2), batch(n=2, start=2)])
    script = textwrap.dedent(f"""
        import time
        from sqd.bus import Bus
        from sqd.settings import Settings, BusSettings
        bus = Bus.connect(Settings(redis_url={settings.resolved_redis_url!r}), prefix={settings.bus.prefix!r})
        c = bus.consumer("ingest", "g", "doomed")
        c.ensure_group()
        got = c.read_new(count=1)
        print(len(got), flush=True)
        time.sleep(600)
    """)
    doomed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert doomed.stdout.readline().strip() == "1"
    doomed.kill()  # SIGKILL: no chance to ack
    doomed.wait()
    seen = []
    consume_all(bus, lambda ds: seen.extend(d.event.event_id for d in ds), name="survivor",
                until=lambda: len(seen) >= 2, min_idle_ms=200)
    assert len(seen) == 2 and len(set(seen)) == 2  # both processed, the reclaimed one exactly once
    assert pending_count(bus) == 0


def test_poison_message_is_dead_lettered_and_the_stream_keeps_flowing(bus):
    poison = batch(run="poison")
    good = [batch(run="ok", start=i * 10) for i in range(3)]
    bus.publish("ingest", [good[0], poison, good[1], good[2]])
    handled = []

    def handler(ds: list[Delivery]):
        if any(d.event.run_id == "poison" for d in ds):
            raise ValueError("cannot store this run")
        handled.extend(d.event.event_id for d in ds)

    consume_all(bus, handler, until=lambda: bus.client.xlen(bus.dead_key("ingest")) == 1 and len(handled) == 3,
                max_deliveries=3)
    assert sorted(handled) == sorted(e.event_id for e in good)
    [dead] = bus.dead_letters("ingest")
    assert b"failed 3 times" in dead["error"] and b"cannot store this run" in dead["error"]
    assert dead["d"] and dead["t"] == b"metrics"  # the original payload is kept
    assert pending_count(bus) == 0


def test_malformed_message_goes_straight_to_dead_letter_with_its_error(bus):
    bus.client.xadd(bus.key("ingest"), {"v": "1", "d": b"\x93garbage"})
    bus.publish("ingest", [batch()])
    handled = []
    consume_all(bus, lambda ds: handled.extend(ds), until=lambda: len(handled) == 1 and bus.dead_letters("ingest"))
    [dead] = bus.dead_letters("ingest")
    assert dead["error"].startswith(b"decode:")
    assert dead["d"] == b"\x93garbage"


def test_transient_errors_retry_without_dead_lettering(bus):
    bus.publish("ingest", [batch()])
    attempts = []

    def flaky(ds):
        attempts.append(1)
        if len(attempts) < 5:  # more than max_deliveries: transient failures must not count
            raise TransientError("database is down")

    consume_all(bus, flaky, until=lambda: len(attempts) >= 5 and pending_count(bus) == 0, max_deliveries=2,
                timeout_s=30)
    assert bus.dead_letters("ingest") == [] and pending_count(bus) == 0


def test_maxlen_caps_the_stream(bus):
    bus.settings = bus.settings.model_copy(update={"maxlen": 1000})
    for _ in range(30):
        bus.publish("ingest", [RunStarted(run_id=f"r{i}") for i in range(200)])
    assert bus.length("ingest") < 1000 + 200  # approximate trimming: within one macro node of the cap


def test_publish_validates_before_sending(bus):
    with pytest.raises(BusError, match="publish to ingest: no events given"):
        bus.publish("ingest", [])
    assert bus.length("ingest") == 0


def test_publish_to_unreachable_server_raises_bus_error(settings):
    dead = Bus.connect(settings, url="redis://127.0.0.1:1/0")
    with pytest.raises(BusError, match="publish to ingest:"):
        dead.publish("ingest", [batch()])


def test_drop_prefix_deletes_its_keys_and_no_others(bus, redis_url):
    bus.publish("ingest", [batch()])
    bus.publish("control", [RunStarted(run_id="r")])
    neighbour = f"{bus.settings.prefix}x:ingest"  # shares the text but not the `prefix:` namespace
    bus.client.set(neighbour, b"keep")
    try:
        assert drop_prefix(redis_url, bus.settings.prefix) == 2
        assert bus.length("ingest") == 0 and bus.client.get(neighbour) == b"keep"
    finally:
        bus.client.delete(neighbour)
