"""The ingest consumer against both Redis backends (the `settings` fixture) and SQLite: batches commit then ack,
duplicates are stored once, malformed events are dead-lettered without blocking, an outage is retried."""

from __future__ import annotations

import threading
import time

import pytest
from server_support import make_settings, pg_schema, wait_for
from sqlalchemy import func, select

from sqd.bus import INGEST
from sqd.protocol import EvaluationResult, LaunchRequest, MetricBatch, RunFinished, RunStarted
from sqd.server.context import ServerContext
from sqd.server.health import INGEST_GROUP, check_health
from sqd.server.ingest.consumer import run_consumer
from sqd.server.store import migrate
from sqd.server.store.chunk_read import run_points
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.models import Chunk, Evaluation, Run


@pytest.fixture
def ctx(settings):
    context = ServerContext.open(settings)
    migrate.upgrade(context.engine)
    yield context
    context.close()


@pytest.fixture
def consuming(ctx):
    stop = threading.Event()
    thread = threading.Thread(target=run_consumer, args=(ctx, stop), daemon=True)
    thread.start()
    wait_for(lambda: ctx.ingest.running, what="consumer start")
    yield ctx
    stop.set()
    thread.join(10)


def count(ctx, model, *where):
    with ctx.sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def stored_points(ctx):
    """Points decoded from every run's chunks."""
    with ctx.sessions() as s:
        return sum(len(p) for run in s.scalars(select(Run.id)) for p in run_points(s, run).values())


def run_row(ctx, run_id):
    with ctx.sessions() as s:
        return s.get(Run, run_id)


def pending(ctx):
    return ctx.bus.client.xpending(ctx.bus.key(INGEST), INGEST_GROUP)["pending"]


def acked_through(ctx, last_id: str) -> bool:
    """The ingest group has read up to `last_id` and acked everything it read."""
    groups = [g for g in ctx.bus.client.xinfo_groups(ctx.bus.key(INGEST)) if g["name"].decode() == INGEST_GROUP]
    return any(g["last-delivered-id"].decode() == last_id and g["pending"] == 0 for g in groups)


def batch(run="r1", start=0, n=100):
    return MetricBatch.from_points(run, [("loss/D", start + i, float(i), 0, 0.0) for i in range(n)])


def test_duplicate_deliveries_are_stored_once_and_acked(consuming):
    ctx = consuming
    first = batch()
    ctx.bus.publish(INGEST, [first, first, batch(start=50), batch(run="r2")])  # same event twice + overlap
    wait_for(lambda: stored_points(ctx) == 250, what="250 points")
    wait_for(lambda: pending(ctx) == 0, what="all acked")
    time.sleep(0.3)
    assert stored_points(ctx) == 250
    assert run_row(ctx, "r1").status == "running" and run_row(ctx, "r1").kind == "external"  # unknown run created
    assert ctx.bus.dead_letters(INGEST) == []


def test_malformed_events_are_dead_lettered_and_never_block(consuming):
    ctx = consuming
    ctx.bus.client.xadd(ctx.bus.key(INGEST), {"t": b"metrics", "v": b"1", "d": b"\xc1 not msgpack"})
    ctx.bus.publish(INGEST, [LaunchRequest(run_id="r9", preset="p"),
                             MetricBatch(run_id="r9", keys=["k"], key_index=[0], step=[2**62], value=[1.0],
                                         epoch=[None], wall_time=[0.0]),
                             batch(run="ok")])
    wait_for(lambda: stored_points(ctx) == 100, what="the good batch")
    dead = wait_for(lambda: len(d := ctx.bus.dead_letters(INGEST)) == 3 and d, what="3 dead letters")
    errors = " | ".join(d["error"].decode() for d in dead)
    assert "not valid msgpack" in errors
    assert "a 'launch' event does not belong on the ingest stream" in errors
    assert "metrics: step 4611686018427387904 is out of range" in errors
    assert wait_for(lambda: pending(ctx) == 0, what="acked") is True


def test_run_status_follows_started_and_finished(consuming):
    ctx = consuming
    t0 = time.time()
    started = RunStarted(run_id="s1", name="n", ts=t0)
    ctx.bus.publish(INGEST, [started, batch(run="s1"), RunFinished(run_id="s1", status="finished", step=99, ts=t0 + 1)])
    wait_for(lambda: run_row(ctx, "s1") is not None and run_row(ctx, "s1").status == "finished", what="finished")
    ctx.bus.publish(INGEST, [started])  # a late redelivery must not reopen the run
    ctx.bus.publish(INGEST, [EvaluationResult(run_id="s1", checkpoint_step=10, status="ok", metrics={"q": 1.0})])
    wait_for(lambda: count(ctx, Evaluation) == 1, what="evaluation")
    wait_for(lambda: pending(ctx) == 0, what="acked")
    assert run_row(ctx, "s1").status == "finished" and run_row(ctx, "s1").last_step == 99


def test_the_first_final_status_stands(consuming):
    # The trainer's Monitor says "finished"; the agent, stopping later, reports the same run "cancelled".
    ctx = consuming
    t0 = time.time()
    ids = ctx.bus.publish(INGEST, [RunStarted(run_id="f1", ts=t0),
                                   RunFinished(run_id="f1", status="finished", ts=t0 + 1),
                                   RunFinished(run_id="f1", status="cancelled", error="agent stopped", ts=t0 + 2)])
    wait_for(lambda: acked_through(ctx, ids[-1]), what="all three read and acked")
    assert run_row(ctx, "f1").status == "finished" and run_row(ctx, "f1").error is None


def test_database_outage_is_retried_not_dead_lettered(ctx, settings):
    good_engine, good_sessions = ctx.engine, ctx.sessions
    bad = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", pool_size=1)
    ctx.engine, ctx.sessions = bad, session_factory(bad)
    stop = threading.Event()
    thread = threading.Thread(target=run_consumer, args=(ctx, stop), daemon=True)
    thread.start()
    try:
        ctx.bus.publish(INGEST, [batch(run="o1")])
        wait_for(lambda: not ctx.ingest.db_ok, what="the outage to be noticed")
        assert "database unavailable" in ctx.ingest.last_error
        assert check_health(ctx).status == "degraded"
        time.sleep(1.0)  # several retries happen meanwhile
        assert ctx.bus.dead_letters(INGEST) == [] and pending(ctx) == 1
        ctx.engine, ctx.sessions = good_engine, good_sessions  # the database is back
        wait_for(lambda: stored_points(ctx) == 100, timeout_s=20, what="the batch after recovery")
        wait_for(lambda: pending(ctx) == 0 and ctx.ingest.db_ok, what="acked after recovery")
        assert ctx.bus.dead_letters(INGEST) == []
    finally:
        stop.set()
        thread.join(10)
        bad.dispose()


@pytest.mark.postgres
def test_concurrent_consumers_on_postgres_store_each_point_once(tmp_path, external_redis_url, pg_url, prefix):
    """Two ingest-only replicas on one PostgreSQL: overlapping deliveries of the same series are serialised by the
    series lock, so points and the chunks' counts are exact."""
    with pg_schema(pg_url) as db:
        settings = make_settings(tmp_path, external_redis_url, db, prefix)
        contexts = [ServerContext.open(settings) for _ in range(2)]
        migrate.upgrade(contexts[0].engine)
        stop = threading.Event()
        threads = [threading.Thread(target=run_consumer, args=(c, stop, f"replica-{i}"), daemon=True)
                   for i, c in enumerate(contexts)]
        try:
            for t in threads:
                t.start()
            events = [batch(run="c1", start=s, n=500) for s in range(0, 5000, 250)]  # every step sent twice
            for i in range(0, len(events), 2):
                contexts[0].bus.publish(INGEST, events[i:i + 2])
            wait_for(lambda: stored_points(contexts[0]) == 5250 and pending(contexts[0]) == 0, timeout_s=30,
                     what="5250 points stored and acked")
            with contexts[0].sessions() as s:
                assert s.scalar(select(func.sum(Chunk.n))) == 5250
        finally:
            stop.set()
            for t in threads:
                t.join(10)
            for c in contexts:
                c.close()
