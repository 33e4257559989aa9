"""Cloak benchmark: the PGD baseline of design/PROTECTION.md versus every strength preset.

Run from the repo root:  PYTHONPATH=daemon .venv/bin/python bench/cloak.py [--limit N] [--no-baseline]
The full run (baseline included) takes well over half an hour on 2 cores; run it in the background.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from shutterlock.cloak import STRENGTHS, cloak_image
from shutterlock.cloak.evaluate import Scores, encoders, evaluate_many, pgd_baseline, sign_noise, to_float

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
JPG = SHARED / "samples" / "exif-samples" / "jpg"
# Real photos with a long edge of at least 1024 px (2048 px for the second list).
PHOTOS_1024 = (
    "tests/11-tests.jpg", "tests/22-canon_tags.jpg", "tests/28-hex_value.jpg", "tests/35-empty.jpg",
    "hdr/canon_hdr_NO.jpg", "hdr/iphone_hdr_NO.jpg", "mobile/jolla.jpg", "mobile/HMD_Nokia_8.3_5G.jpg",
    "Reconyx_HC500_Hyperfire.jpg", "exif-org/fujifilm-dx10.jpg",
)
PHOTOS_2048 = ("tests/30-type_error.jpg", "hdr/canon_hdr_NO.jpg")


def load(path: Path, long_edge: int) -> Image.Image:
    im = Image.open(path)
    im.draft("RGB", (long_edge, long_edge))
    im = ImageOps.exif_transpose(im).convert("RGB")
    s = long_edge / max(im.size)
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    return im.resize(size, Image.Resampling.BILINEAR)


def row(label: str, seconds: float, cpu: float, sc: Scores, ratio: float | None) -> str:
    r = f"{ratio:7.1f}" if ratio else "      -"
    scores = f"{sc.mean:6.3f} {sc.min:6.3f} {sc.psnr:6.2f} {sc.ssim:6.3f}"
    return f"{label:<38} {seconds:7.1f} {cpu:7.1f} {scores} {r}"


# sec = wall clock; cpu = process CPU seconds (the honest figure when other work shares the cores).
HEADER = (
    f"{'image / method':<38} {'sec':>7} {'cpu':>7} {'mean':>6} {'min':>6} {'psnr':>6} {'ssim':>6} "
    f"{'ratio':>7}"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=None, help="only the first N 1024-px photos")
    ap.add_argument("--limit-2048", type=int, default=None, help="only the first N 2048-px photos")
    ap.add_argument("--no-baseline", action="store_true", help="skip the (slow) PGD baseline")
    ap.add_argument("--strengths", default=",".join(s for s in STRENGTHS if s != "off"))
    ap.add_argument("--images", default=None, help="comma-separated paths (relative to the jpg samples)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    # Same engine settings for the baseline as the cloak uses internally, so the time ratio is fair.
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    encs = encoders(SHARED / "models", offline=True)
    strengths = [s for s in args.strengths.split(",") if s]
    methods = (["baseline"] if not args.no_baseline else []) + ["noise8"] + strengths
    photos = tuple(args.images.split(",")) if args.images else PHOTOS_1024
    jobs = [(p, 1024) for p in photos[: args.limit]]
    jobs += [] if args.images else [(p, 2048) for p in PHOTOS_2048[: args.limit_2048]]
    results: dict[tuple[int, str], list[tuple[float, float, Scores]]] = {}
    print(HEADER, flush=True)
    for name, edge in jobs:
        im = load(JPG / name, edge)
        x = to_float(im)
        timed: list[tuple[str, float, float, Any]] = []
        for method in methods:
            t0, c0 = time.monotonic(), time.process_time()
            if method == "baseline":
                xc = pgd_baseline(x, encs)
            elif method == "noise8":
                xc = sign_noise(x)
            else:
                res = cloak_image(
                    im, method, models_dir=SHARED / "models", offline=True, threads=args.threads
                )
                xc = to_float(res.image)
                torch.set_flush_denormal(True)
            timed.append((method, time.monotonic() - t0, time.process_time() - c0, xc))
        scores = evaluate_many(x, [t[3] for t in timed], encs)
        base = next(((s, c) for m, s, c, _ in timed if m == "baseline"), None)
        for (method, secs, cpu, _), sc in zip(timed, scores, strict=True):
            results.setdefault((edge, method), []).append((secs, cpu, sc))
            ratio = base[1] / cpu if base and method not in ("baseline", "noise8") and cpu > 0 else None
            worst = min(sc.displacement, key=lambda k: sc.displacement[k])
            label = f"{Path(name).stem[:22]}@{edge} {method}"
            print(row(label, secs, cpu, sc, ratio) + f"  worst {worst[0]}/{worst[1]}", flush=True)

    print("\nmedians (ratio = baseline cpu / preset cpu, median over images)", flush=True)
    print(HEADER)
    base_cpu = {edge: [r[1] for r in rs] for (edge, m), rs in results.items() if m == "baseline"}
    for (edge, method), rs in results.items():
        med = Scores(
            {},
            statistics.median(r[2].mean for r in rs),
            statistics.median(r[2].min for r in rs),
            statistics.median(r[2].psnr for r in rs),
            statistics.median(r[2].ssim for r in rs),
        )
        ratio = None
        if edge in base_cpu and method not in ("baseline", "noise8"):
            ratio = statistics.median(b / r[1] for b, r in zip(base_cpu[edge], rs, strict=True))
        label = f"@{edge} {method} (n={len(rs)})"
        secs, cpu = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
        print(row(label, secs, cpu, med, ratio), flush=True)

if __name__ == "__main__":
    main()
