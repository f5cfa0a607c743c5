"""A stand-in for `sqd train` in agent tests: a tiny GAN under the Monitor, whose behaviour the preset picks.

usage: fake_train.py <preset> --run-id ID [--steps N]; presets: ok, crash, hang, stubborn, vanish.
Each start appends the run id to $FAKE_TRAIN_MARKS (so tests can count launches).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from monitor_support import tiny_gan, train  # noqa: E402

from sqd.trainer import Monitor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("preset")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    with open(os.environ["FAKE_TRAIN_MARKS"], "a") as fh:
        fh.write(f"{args.run_id} {os.environ.get('CUDA_VISIBLE_DEVICES')!r} {os.environ.get('SQD_TRAINER__AGENT_ID')}"
                 f" {' '.join(args.set)}\n")
    if args.preset == "vanish":  # dies before any Monitor exists, like a bad install would
        print("fatal: the fake trainer vanishes", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if args.preset == "stubborn":
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
    G, D = tiny_gan()
    with Monitor(G, D, name=args.preset, run_id=args.run_id, checkpoint_every=None, flush_every=5) as mon:
        train(mon, G, D, steps=args.steps)
        if args.preset == "crash":
            raise ValueError("boom from the fake trainer")
        step = args.steps
        while args.preset in ("hang", "stubborn"):
            train(mon, G, D, steps=1, start=step)
            step += 1
            time.sleep(0.05)
    print("fake training done", flush=True)


if __name__ == "__main__":
    main()
