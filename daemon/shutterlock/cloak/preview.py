"""`shutterlock protect --preview`: one picture that shows what the cloak costs and what it does.

Layout (documented in docs/CLOAK.md, checked by tests/test_cloak.py): a caption bar of
``CAPTION`` px, then two rows of three tiles, ``GAP`` px apart and around, on a dark background.
Every tile has the size of the share image scaled to fit a ``TILE`` x ``TILE`` box.

    row 0 (uncloaked):  image | taef2 decoder reconstruction | 100 % crop of the most textured region
    row 1 (cloaked):    image | taef2 decoder reconstruction | the same 100 % crop

Both images are shown as saved (8-bit JPEG at the output quality). The reconstruction is
``D(E(x))`` at 512 px, what img2img or a fine-tune starts from; the caption gives SSIMULACRA 2 and
FLIP of the cloaked image and how far its reconstruction lands from the uncloaked one's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 512
GAP = 8
CAPTION = 44
BACKGROUND = (32, 32, 32)


@dataclass(frozen=True)
class Layout:
    """Where each tile sits: (left, top) of tile (row, column); all tiles are `tile` (w, h)."""

    size: tuple[int, int]
    tile: tuple[int, int]

    def origin(self, row: int, column: int) -> tuple[int, int]:
        w, h = self.tile
        return GAP + column * (w + GAP), CAPTION + GAP + row * (h + GAP)


def layout(share_size: tuple[int, int]) -> Layout:
    w, h = share_size
    s = min(1.0, TILE / max(w, h))
    tile = (max(1, round(w * s)), max(1, round(h * s)))
    return Layout((3 * tile[0] + 4 * GAP, CAPTION + 2 * tile[1] + 3 * GAP), tile)


def textured_window(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the `size` window with the most local texture (luma gradient energy)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    gy, gx = np.gradient(grey)
    energy = np.sqrt(gx * gx + gy * gy)
    w, h = min(size[0], image.width), min(size[1], image.height)
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]
    step = max(1, min(sums.shape) // 64)
    coarse = sums[::step, ::step]
    top, left = np.unravel_index(int(np.argmax(coarse)), coarse.shape)
    return int(left * step), int(top * step)


def _saved(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def render(uncloaked: Image.Image, cloaked: Image.Image, *, strength: str, jpeg_quality: int = 90,
           models_dir: str | Path | None = None, offline: bool = False) -> Image.Image:
    """The preview picture for one share image and its cloaked version (same size)."""
    from . import evaluate, models

    if uncloaked.size != cloaked.size:
        raise ValueError(f"preview needs images of one size, got {uncloaked.size} and {cloaked.size}")
    plain, cloak = _saved(uncloaked, jpeg_quality), _saved(cloaked, jpeg_quality)
    a, b = evaluate.to_float(plain), evaluate.to_float(cloak)
    encoder = models.load("taef2", models_dir, offline=offline)
    decoder = models.load("taef2_decoder", models_dir, offline=offline)
    recon = [evaluate.reconstruct(v, decoder, encoder) for v in (a, b)]
    lay = layout(plain.size)
    tw, th = lay.tile
    left, top = textured_window(plain, lay.tile)
    box = (left, top, left + min(tw, plain.width), top + min(th, plain.height))
    canvas = Image.new("RGB", lay.size, BACKGROUND)
    for row, (image, rec) in enumerate(((plain, recon[0]), (cloak, recon[1]))):
        tiles = [image.resize(lay.tile, Image.Resampling.LANCZOS),
                 Image.fromarray(evaluate.to_u8(rec), "RGB").resize(lay.tile, Image.Resampling.LANCZOS),
                 image.crop(box)]
        for column, tile in enumerate(tiles):
            canvas.paste(tile, lay.origin(row, column))
    _caption(canvas, _describe(a, b, recon, strength, box))
    return canvas


def _describe(a: np.ndarray, b: np.ndarray, recon: list[np.ndarray], strength: str,
              box: tuple[int, int, int, int]) -> list[str]:
    import torch

    from . import evaluate, perceptual

    ta, tb = (torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1)[None] for v in (a, b))
    stick = perceptual.Yardstick(ta)
    ra, rb = (evaluate.quantise(v) for v in recon)
    mse = float(np.mean((ra - rb) ** 2))
    psnr = 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")
    return [
        f"top: uncloaked   bottom: cloaked ({strength})   columns: as saved | what taef2 reconstructs at 512 px"
        f" | 100 % crop at {box[0]},{box[1]}",
        f"cloaked vs uncloaked: SSIMULACRA 2 {stick.ssimulacra2(tb):.1f}, FLIP {stick.flip(tb):.3f};"
        f"   reconstructions differ by {psnr:.1f} dB PSNR",
    ]


def _caption(canvas: Image.Image, lines: list[str]) -> None:
    draw = ImageDraw.Draw(canvas)
    font: Any = ImageFont.load_default(size=14)
    for i, line in enumerate(lines):
        draw.text((GAP, 6 + 18 * i), line, fill=(235, 235, 235), font=font)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=6)
    return buf.getvalue()
