"""Peak memory of the confined derive worker, to size ``[derive] memory_limit`` (its RLIMIT_AS).

    python bench/worker_memory.py [--megapixels 24] [--strength standard] [--threads 2]

Makes a JPEG of the given size (a sample photo upscaled, quality 92) in a temp dir, derives it once in a
real confined worker (DeriveRunner, as the daemon's lane does) and prints the worker's peak address space
(VmPeak: what RLIMIT_AS limits) and peak resident memory (VmHWM), read from /proc before it exits. The
weights come from ../shared/models.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image
from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig
from shutterlock.derive import DeriveJob, DeriveRunner

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE = SHARED / "samples" / "exif-samples" / "jpg" / "tests" / "42_IndexError.jpg"


def peaks(pid: int) -> dict[str, int]:
    """VmPeak and VmHWM of a live process, in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmPeak", "VmHWM"):
            found[name] = int(value.split()[0]) // 1024
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--strength", default="standard")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shutterlock-bench-") as temp:
        source = Path(temp) / "photo.jpg"
        with Image.open(SAMPLE) as sample:
            scale = (args.megapixels * 1e6 / (sample.width * sample.height)) ** 0.5
            sample.convert("RGB").resize((round(sample.width * scale), round(sample.height * scale)),
                                         Image.Resampling.BICUBIC).save(source, quality=92)
        job = DeriveJob(source=source, derive=DeriveConfig(outbox=Path(temp) / "out"), watermark=WatermarkConfig(),
                        rights=RightsConfig(creator="Bench"),
                        cloak=CloakConfig(strength=args.strength, models_dir=SHARED / "models", offline=True,
                                          threads=args.threads))
        with DeriveRunner(time_limit=3600.0) as runner:
            started = time.monotonic()
            result = runner.run(job)
            elapsed = time.monotonic() - started
            assert runner.worker_pid is not None
            memory = peaks(runner.worker_pid)
        print(f"{args.megapixels:g} MP JPEG, cloak {args.strength}, {args.threads} threads: {result.outcome} "
              f"{result.reason or ''} ({result.width}x{result.height}, cloaked {result.cloaked}) in {elapsed:.1f} s")
        print(f"worker peak address space (VmPeak, what RLIMIT_AS limits): {memory['VmPeak']} MB; "
              f"peak resident (VmHWM): {memory['VmHWM']} MB; limit {job.derive.memory_limit} MB")


if __name__ == "__main__":
    main()
