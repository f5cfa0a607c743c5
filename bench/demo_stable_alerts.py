"""Issue 14's demo check: does the stable demo raise a critical alert? For each recorded demo-stable run
(bench/data/corpus, seeds 0-9, recorded through the whole stack by bench/corpus_record.py): (a) the critical alerts
the server raised live while it trained, (b) the critical turning points the current detector raises on replay.

    .venv/bin/python bench/demo_stable_alerts.py
"""

from __future__ import annotations

from corpus_data import CorpusRun, load_corpus, severity


def live_criticals(run: CorpusRun) -> list[str]:
    return [f"{a['rule']}@epoch {a.get('epoch')}" for a in run.alerts if a["severity"] == "critical"]


def replay_criticals(run: CorpusRun) -> list[str]:
    # the epoch where the turn started, as the live alert records it, and where the evidence was complete
    return [f"turning@epoch {tp.epoch} (detected {tp.detected_epoch})" for tp in run.replay()
            if severity(tp) == "critical"]


def main() -> None:
    runs = [r for r in load_corpus() if r.preset == "demo-stable"]
    if not runs:
        raise SystemExit("no demo-stable runs under bench/data/corpus: record them with bench/corpus_record.py")
    for cadence in sorted({r.cadence for r in runs}):
        batch = [r for r in runs if r.cadence == cadence]
        live = replay = 0
        for run in batch:
            a, b = live_criticals(run), replay_criticals(run)
            live += bool(a)
            replay += bool(b)
            print(f"{run.name:<22} label {run.label.reason:<8} live: {', '.join(a) or 'none':<40} "
                  f"replay: {', '.join(b) or 'none'}")
        print(f"evaluated {cadence}, live (as recorded): {live} of {len(batch)} demo-stable runs raised a critical "
              f"alert")
        print(f"evaluated {cadence}, replay (current detector): {replay} of {len(batch)} demo-stable runs raised a "
              f"critical alert\n")


if __name__ == "__main__":
    main()
