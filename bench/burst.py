"""A burst: N files dropped at once into a watched source; time from the last write until all are sealed.

    .venv/bin/python bench/burst.py [--files 1000 5000] [--size-kb 256] [--settle 2]

Each burst is a new folder of N files copied in as fast as Python can (a card import). The daemon runs
with the default engine settings except ``settle_seconds``. Target: a burst of 1,000 sealed within 20 s
of its last write, and the time per file flat from 1,000 to 5,000 (linear cost).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from common import cleanup, installation, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--size-kb", type=int, default=256)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
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
        from shutterlock.control import ControlClient

        with ours.daemon():
            control = ControlClient(base / "shutterlock" / "run" / "shutterlock" / "control.sock")
            wait_idle(control, 0, 0)
            sealed_before = 0
            print(f"{os.cpu_count()} cores, files of {args.size_kb} KB, settle_seconds = {args.settle}")
            for burst in args.files:
                started = time.monotonic()
                target = ours.sources[0] / f"burst-{burst}"
                target.mkdir()
                for item in sorted((staging / f"burst-{burst}").iterdir()):
                    shutil.copyfile(item, target / item.name)
                last_write = time.monotonic()
                first = wait_idle(control, sealed_before, burst, since=last_write)
                done = time.monotonic()
                sealed_before += burst
                after = done - last_write
                print(f"burst of {burst:6,}: copied in {last_write - started:5.1f} s; first sealed "
                      f"{first:+5.1f} s, all sealed {after:5.1f} s after the last write "
                      f"({1000 * (done - started) / burst:.2f} s per 1,000 files from the first write)")
    finally:
        cleanup(base)


def wait_idle(control: object, before: int, burst: int, since: float = 0.0, timeout: float = 3600) -> float:
    """Poll the daemon until ``before + burst`` originals are sealed and nothing waits; returns when the
    first of the burst was sealed, relative to ``since``."""
    first: float | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = control.call("status")  # type: ignore[attr-defined]
        except Exception:
            time.sleep(0.2)
            continue
        count = status["files"]["sealed"]
        if first is None and count > before:
            first = time.monotonic() - since
        if count >= before + burst and not status["backlog"]["items"] and not status["pending"]:
            return first if first is not None else 0.0
        time.sleep(0.1)
    raise SystemExit(f"not all {before + burst} sealed after {timeout} s")


if __name__ == "__main__":
    main()
