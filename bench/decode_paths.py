"""Which decode and resize path makes a 2048-px derivative fastest without a visible loss (issue 18).

    python bench/decode_paths.py [--long-edge 2048] [--rounds 3]

Inputs: the real camera JPEGs of 8 MP and more on the sample card (../shared/samples). Each path turns one
into the derivative's pixels at the long edge; the CPU time of that (best of ``--rounds``) is printed with
the quality of the result after the q90 JPEG encode every derivative gets, judged against a full-quality
reference (full decode, Lanczos, lossless) with SSIMULACRA 2 (higher is better; 90 is visually lossless,
80 "impossible to tell apart side by side at 1:1"), FLIP (lower is better) and the mean CIEDE2000 colour
difference (below ~1 invisible). The first row, the reference itself through the q90 encode, is the floor
no path can beat. Paths:

- the product's own ``decode`` + ``look.prepare`` with ``draft_tolerance`` 0.03 (the default: libjpeg-turbo
  decodes at 1/2 scale through Pillow's ``draft``, OpenCV tops it up to the long edge, or Pillow's
  Lanczos brings a larger draft down) and 0 (full decode, Lanczos downscale);
- Pillow's draft with Pillow's own bicubic top-up (the previous default);
- simplejpeg (TurboJPEG's scaled decode: 5/8 for a 12 MP photo) + Pillow Lanczos, and pyvips' thumbnail
  (shrink-on-load where it can, lanczos3 reduce), when those packages are installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import flip_evaluator
import numpy as np
import ssimulacra2
from PIL import Image
from shutterlock.derive import look
from shutterlock.derive.decode import decode, jpeg_stream_problem
from skimage.color import deltaE_ciede2000, rgb2lab

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
MIN_PIXELS = 7_900_000  # "8 MP" phones give 3264 x 2448 = 7.99 MP


def photos() -> list[Path]:
    """The sample card's camera JPEGs of about 8 MP and more whose data is intact."""
    found = []
    for path in sorted((SAMPLES / "exif-samples").rglob("*.jpg")):
        with Image.open(path) as image:
            if image.width * image.height >= MIN_PIXELS and not jpeg_stream_problem(path.read_bytes()):
                found.append(path)
    return found


def target(size: tuple[int, int], long_edge: int) -> tuple[int, int]:
    scale = long_edge / max(size)
    return round(size[0] * scale), round(size[1] * scale)


def paths(long_edge: int) -> dict[str, Callable[[Path], Image.Image]]:
    def reference(path: Path) -> Image.Image:
        with Image.open(path) as image:
            return image.convert("RGB").resize(target(image.size, long_edge), Image.Resampling.LANCZOS)

    def product(tolerance: float) -> Callable[[Path], Image.Image]:
        return lambda path: look.prepare(decode(path, long_edge=long_edge, max_pixels=10**9,
                                                draft_tolerance=tolerance))

    def pillow_bicubic(path: Path) -> Image.Image:
        with Image.open(path) as image:
            size = image.size
            image.draft("RGB", (size[0] // 2, size[1] // 2))
            return image.convert("RGB").resize(target(size, long_edge), Image.Resampling.BICUBIC)

    found: dict[str, Callable[[Path], Image.Image]] = {
        "reference: full decode + Lanczos": reference,
        "product, draft_tolerance 0.03 (default)": product(0.03),
        "product, draft_tolerance 0 (full decode)": product(0.0),
        "Pillow draft 1/2 + Pillow bicubic": pillow_bicubic,
    }
    if importlib.util.find_spec("simplejpeg"):
        import simplejpeg

        def turbo_scaled(path: Path) -> Image.Image:
            data = path.read_bytes()
            size = target(Image.open(io.BytesIO(data)).size, long_edge)
            pixels = simplejpeg.decode_jpeg(data, min_width=size[0], min_height=size[1])
            return Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS)

        found["simplejpeg scaled decode + Lanczos"] = turbo_scaled
    if importlib.util.find_spec("pyvips"):
        import pyvips

        def vips(path: Path) -> Image.Image:
            thumbnail = pyvips.Image.thumbnail(str(path), long_edge, no_rotate=True)
            return Image.fromarray(thumbnail.numpy()).convert("RGB")

        found["pyvips thumbnail"] = vips
    return found


def encoded(image: Image.Image) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long-edge", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    inputs = photos()
    candidates = paths(args.long_edge)
    print(f"{len(inputs)} camera JPEGs of ~8 MP and more: " + ", ".join(p.name for p in inputs))
    rows: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "s2": [], "flip": [], "de": []}
                                               for name in candidates}
    with tempfile.TemporaryDirectory(prefix="shutterlock-bench-") as temp:
        reference_png, candidate_png = Path(temp) / "reference.png", Path(temp) / "candidate.png"
        for path in inputs:
            reference = candidates["reference: full decode + Lanczos"](path)
            reference.save(reference_png)
            truth = np.asarray(reference, dtype=np.float32) / 255
            truth_lab = rgb2lab(truth)
            for name, make in candidates.items():
                seconds = []
                for _ in range(args.rounds):
                    started = time.process_time()
                    made = make(path)
                    seconds.append(time.process_time() - started)
                assert made.size == reference.size, (name, made.size, reference.size)
                pixels = encoded(made)
                Image.fromarray((pixels * 255).round().astype(np.uint8)).save(candidate_png)
                row = rows[name]
                row["cpu"].append(min(seconds))
                row["s2"].append(ssimulacra2.compute_ssimulacra2(str(reference_png), str(candidate_png)))
                row["flip"].append(float(flip_evaluator.evaluate(truth, pixels, "LDR", applyMagma=False)[1]))
                row["de"].append(float(deltaE_ciede2000(truth_lab, rgb2lab(pixels)).mean()))
    print(f"{'path (then q90 JPEG)':44s} {'CPU ms':>7s}  {'SSIMULACRA2 mean/min':>21s}  {'FLIP mean/max':>14s}  "
          f"{'dE2000 mean/max':>15s}")
    for name, row in rows.items():
        print(f"{name:44s} {statistics.mean(row['cpu']) * 1000:7.1f}  {statistics.mean(row['s2']):10.1f} / "
              f"{min(row['s2']):5.1f}  {statistics.mean(row['flip']):.4f}/{max(row['flip']):.4f}  "
              f"{statistics.mean(row['de']):6.3f}/{max(row['de']):.3f}")


if __name__ == "__main__":
    main()
