"""A burst: N files dropped at once into a watched source; time from the last write until all are sealed.

    .venv/bin/python bench/burst.py [--files 1000 5000] [--size-kb 256] [--settle 2]

Each burst is a new folder of N files copied in as fast as Python can (a card import). The daemon runs
with the default engine settings except ``settle_seconds``. Target: a burst of 1,000 sealed within 20 s
of its last write, and the rate (files/s) as high for 5,000 as for 1,000 (linear cost). First, in this process,
what one event costs the stability gate with 100 and with 100,000 files pending (it should not grow).
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from pathlib import Path

from common import cleanup, installation, load_average, scratch
from shutterlock.control import ControlClient
from shutterlock.errors import ShutterlockError


def gate_cost(pending: int, events: int = 200_000) -> float:
    """Microseconds per event offered to a stability gate already holding ``pending`` candidates."""
    from shutterlock.config import SourceConfig
    from shutterlock.watch import StabilityGate

    source = SourceConfig(path=Path("/nonexistent"), name="bench")
    gate = StabilityGate(3600.0, lambda found: None)  # nothing settles during the measurement
    for index in range(pending):
        gate.offer(source, f"held/{index}", trusted=True)
    names = [f"held/{index % pending}" for index in range(events)]
    started = time.perf_counter()
    for name in names:
        gate.offer(source, name, trusted=True)
    return 1e6 * (time.perf_counter() - started) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--size-kb", type=int, default=256)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{load_average()}; stability gate: {gate_cost(100):.2f} us per event with 100 files pending, "
          f"{gate_cost(100_000):.2f} us with 100,000")
    base = scratch("burst")
    try:
        staging = base / "card"
        for burst in args.files:
            folder = staging / f"burst-{burst}"
            folder.mkdir(parents=True)
            for index in range(burst):
                (folder / f"DSC{index:05d}.JPG").write_bytes(os.urandom(args.size_kb * 1024))
        os.sync()
        ours = installation(base / "shutterlock", [base / "import"])
        ours.configure(settle=args.settle)
        with ours.daemon():
            control = ControlClient(base / "shutterlock" / "run" / "shutterlock" / "control.sock")
            Watch(control, 0).finished.wait()
            sealed_before = 0
            print(f"{os.cpu_count()} cores, files of {args.size_kb} KB, settle_seconds = {args.settle}")
            for burst in args.files:
                watch = Watch(control, sealed_before + burst, sealed_before)
                started = time.monotonic()
                target = ours.sources[0] / f"burst-{burst}"
                target.mkdir()
                for item in sorted((staging / f"burst-{burst}").iterdir()):
                    shutil.copyfile(item, target / item.name)
                last_write = time.monotonic()
                if not watch.finished.wait(3600):
                    raise SystemExit(f"a burst of {burst} was not sealed within an hour")
                sealed_before += burst
                assert watch.first is not None and watch.done is not None
                print(f"burst of {burst:6,}: copied in {last_write - started:5.1f} s; the first sealed "
                      f"{watch.first - started:5.1f} s after the first write; all sealed "
                      f"{watch.done - last_write:5.1f} s after the last write "
                      f"({burst / max(watch.done - watch.first, 1e-3):,.0f} files/s from the first sealed to the "
                      f"last; {load_average()})")
    finally:
        cleanup(base)


class Watch:
    """Polls the daemon's status in a thread (every 0.1 s) while a burst arrives: when the first original
    beyond ``before`` was sealed, and when ``target`` were sealed with nothing waiting."""

    def __init__(self, control: ControlClient, target: int, before: int = 0):
        self.control, self.target, self.before = control, target, before
        self.first: float | None = None
        self.done: float | None = None
        self.finished = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                status = self.control.call("status")
            except ShutterlockError:
                time.sleep(0.2)
                continue
            now, count = time.monotonic(), status["files"]["sealed"]
            if self.first is None and count > self.before:
                self.first = now
            if count >= self.target and not status["backlog"]["items"] and not status["pending"] \
                    and not status["scanning"]:
                self.done = now
                self.finished.set()
                return
            time.sleep(0.1)


if __name__ == "__main__":
    main()
