"""What hiding exact sizes costs: object format 2 (Padmé buckets) against version 1 (exact sizes).

Seals every file of ../shared/samples in memory with the real format code, and reports the storage the
padding adds, and how many files then share each stored size (the bucket can no longer tell them apart).
The sample card is mostly small test files; the same figures for a modelled card of camera files
(log-uniform 2–60 MB, sizes only: the padding depends on nothing else) follow.

    .venv/bin/python bench/padding.py
"""

from __future__ import annotations

import collections
import io
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from common import SHARED
from shutterlock.vault.format import (
    ABYTES,
    DEFAULT_CHUNK,
    Keys,
    ObjectMeta,
    padding_sizes,
    seal_stream,
)


class Counter(io.RawIOBase):
    """A sink that only counts what is written."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.size += len(data)
        return len(data)


def report(label: str, exact: list[int], padded: list[int], plain: int) -> None:
    added = sum(padded) - sum(exact)
    sets = collections.Counter(padded)
    shared = [sets[size] for size in padded]
    print(f"{label}: {len(exact)} files, {plain / 1e6:.1f} MB of originals")
    print(f"  stored, exact sizes (version 1): {sum(exact) / 1e6:.2f} MB")
    print(f"  stored, Padmé (version 2):       {sum(padded) / 1e6:.2f} MB  (+{added / 1e6:.2f} MB, "
          f"+{100 * added / sum(exact):.2f} %)")
    overhead = sorted(100 * (p - e) / e for p, e in zip(padded, exact, strict=True))
    print(f"  per file: median +{statistics.median(overhead):.2f} %, worst +{overhead[-1]:.2f} %")
    print(f"  distinct stored sizes: {len(set(exact))} → {len(sets)}; files sharing their stored size with "
          f"at least one other: {sum(1 for n in shared if n > 1)} of {len(padded)}")


def main() -> None:
    keys = Keys.from_master(bytes(32))
    exact, padded, plain = [], [], 0
    for path in sorted(p for p in (SHARED / "samples").rglob("*") if p.is_file()):
        data = path.read_bytes()
        meta = ObjectMeta(source="card", path=path.name, size=len(data), mtime_ns=0, sealed_at=0.0)
        sink = Counter()
        seal_stream(keys, meta, io.BytesIO(data), sink)  # type: ignore[arg-type]
        exact.append(unpadded_size(meta, len(data)))
        padded.append(sink.size)
        plain += len(data)
    report("../shared/samples", exact, padded, plain)

    rng = random.Random(7)
    sizes = [int(2e6 * (30 ** rng.random())) for _ in range(2000)]
    exact = [unpadded_size(ObjectMeta("card", f"IMG_{i:04d}.CR3", size, 0, 0.0), size) for i, size in enumerate(sizes)]
    padded = [e + sum(s + ABYTES for s in padding_sizes(e, DEFAULT_CHUNK)) for e in exact]
    report("modelled card (2000 camera files, log-uniform 2–60 MB)", exact, padded, sum(sizes))


def unpadded_size(meta: ObjectMeta, plain: int) -> int:
    """What version 1 stored for the same file (docs/FORMAT.md section 4): head, metadata block, chunks."""
    meta_block = -(-(4 + len(meta.to_json())) // 256) * 256 + ABYTES
    return 44 + meta_block + plain + ABYTES * max(1, -(-plain // DEFAULT_CHUNK))


if __name__ == "__main__":
    main()
