"""What provenance and the portfolio cost: signing and verifying a derivative, building and re-building
a site, and what a re-publish sends.

    python bench/publish.py [--count 20] [--rounds 5]

Inputs: ``--count`` sample photos from ../shared/samples derived at 2048 px with the cloak off (the
cloak's cost is bench/cloak.py's figure, not this one), then signed as the daemon signs them. Times
are the median of ``--rounds``; the machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, SiteConfig, WatermarkConfig, resolve_paths
from shutterlock.derive import DeriveJob, Outcome, render
from shutterlock.derive.signing import credit
from shutterlock.provenance import Treatment, identity, sign_jpeg, verify_bytes
from shutterlock.site import Candidate, Protection, build, publish

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "exif-samples"
RIGHTS = RightsConfig(creator="Bench Photographer")


def photos(count: int) -> list[Path]:
    found = [p for p in sorted(SAMPLES.rglob("*.jpg")) if p.name != "corrupted.jpg" and "invalid" not in p.parts
             and p.stat().st_size > 100_000]
    return (found * (count // len(found) + 1))[:count]


def median_ms(run: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    signer = identity.create(RIGHTS.creator)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        candidates = []
        sign_times, verify_times, sizes = [], [], []
        for index, source in enumerate(photos(args.count + 1)):
            rendered = render(DeriveJob(source=source, derive=DeriveConfig(), watermark=WatermarkConfig(),
                                        rights=RIGHTS, cloak=CloakConfig(strength="off")))
            assert rendered.outcome is Outcome.WRITTEN and rendered.jpeg and rendered.capture_time, rendered.reason
            data = rendered.jpeg
            treatment = Treatment(resized_to=rendered.resized_to, watermark=rendered.watermark)
            rights = credit(RIGHTS, rendered.capture_time.year)
            sign_times.append(median_ms(lambda d=data, t=treatment, r=rights: sign_jpeg(d, signer, t, r), args.rounds))
            signed = sign_jpeg(data, signer, treatment, rights)
            verify_times.append(median_ms(lambda s=signed: verify_bytes(s), args.rounds))
            sizes.append(len(signed) - len(data))
            output = work / "outbox" / f"{index:03d}.jpg"
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(signed)
            candidates.append(Candidate(key=f"{index:03d}", derivative=output, album=source.parent.name,
                                        protection=Protection(False, "off", True, rendered.watermark)))
        print(f"sign one derivative: median {statistics.median(sign_times):.1f} ms "
              f"(max {max(sign_times):.1f}); manifest adds {statistics.median(sizes) / 1024:.1f} KiB")
        print(f"verify one derivative: median {statistics.median(verify_times):.1f} ms")
        site = SiteConfig(base_url="https://bench.example")
        out = work / "site"
        started = time.perf_counter()
        first = build(candidates[:-1], out, site=site, rights=RIGHTS, identity=signer)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        build(candidates[:-1], out, site=site, rights=RIGHTS, identity=signer)
        warm = time.perf_counter() - started
        print(f"site build, {first.photos} photos, {len(first.files)} files: {cold:.2f} s cold, {warm:.2f} s unchanged")
        published = work / "public"
        publish(out, str(published), paths=resolve_paths())
        build(candidates, out, site=site, rights=RIGHTS, identity=signer)
        again = publish(out, str(published), paths=resolve_paths())
        print(f"re-publish after adding one photo: {len(again.uploaded)} files sent, {again.unchanged} unchanged, "
              f"{len(again.deleted)} deleted")
        shutil.rmtree(work / "outbox")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
