"""`Monitor(..., tags=[...])`: the tags travel in RunStarted (the server adds them to the run's tags)."""

from __future__ import annotations

import pytest
from monitor_support import events, tiny_gan, train

from sqd.bus import Bus
from sqd.settings import Settings
from sqd.trainer.monitor import Monitor


def test_tags_reach_run_started(settings: Settings, bus: Bus) -> None:
    G, D = tiny_gan()
    mon = Monitor(G, D, name="tagged", settings=settings, bus=bus, checkpoint_every=None,
                  tags=["baseline", " lr-sweep ", "baseline"])
    with mon:
        train(mon, G, D, steps=3)
    started = events(bus, "ingest")[0]
    assert started.type == "run_started" and started.tags == ["baseline", "lr-sweep"]


@pytest.mark.parametrize(("tags", "msg"), [(["a,b"], "String should match pattern"),
                                          ([""], "String should have at least 1 character")])
def test_bad_tags_are_refused_at_once(tags: list[str], msg: str) -> None:
    G, D = tiny_gan()
    with pytest.raises(ValueError, match=f"Monitor: tags .*: {msg}.*no commas"):
        Monitor(G, D, tags=tags)
