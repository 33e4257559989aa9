"""The cloak's picture-quality promise, judged by the reference metrics on the image as saved.

Each preset must meet its SSIMULACRA 2 / FLIP targets (docs/CLOAK.md) on three kinds of photo where
the first-generation cloak was most visible: a textured landscape, skin, a flat sky. The metrics are
the PyPI packages ``ssimulacra2`` and ``flip-evaluator``, not the cloak's own torch copies, and both
images are compared as the derivative stores them (8-bit JPEG at quality 90). Then `shutterlock protect
--preview` through the real CLI: the picture it writes has the documented layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps
from shutterlock.cloak import cloak_image, evaluate
from shutterlock.cloak.attack import PRESETS
from shutterlock.cloak.preview import BACKGROUND, CAPTION, GAP, layout

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = SHARED / "models"
JPG = SHARED / "samples" / "exif-samples" / "jpg"
PHOTOS = {
    "landscape": "tests/11-tests.jpg",  # mountain valley: rock, grass, a stream
    "skin": "exif-org/fujifilm-dx10.jpg",  # hands
    "sky": "tests/33-type_error.jpg",  # sky above a sea of clouds
}
EDGE = 768
QUALITY = 90


def share(name: str) -> Image.Image:
    im = Image.open(JPG / name)
    im.draft("RGB", (EDGE, EDGE))
    im = ImageOps.exif_transpose(im).convert("RGB")
    s = EDGE / max(im.size)
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)


@pytest.mark.parametrize("strength", list(PRESETS))
@pytest.mark.parametrize("kind", list(PHOTOS))
def test_presets_meet_their_targets_as_saved(kind: str, strength: str) -> None:
    im = share(PHOTOS[kind])
    result = cloak_image(im, strength, models_dir=MODELS, offline=True, threads=2, jpeg_quality=QUALITY)
    plain = evaluate.saved(evaluate.to_float(im), QUALITY)
    cloaked = evaluate.saved(evaluate.to_float(result.image), QUALITY)
    assert not np.array_equal(plain, cloaked), "the cloak changed nothing"
    score, flip = evaluate.ssimulacra2(plain, cloaked), evaluate.flip(plain, cloaked)
    preset = PRESETS[strength]
    print(f"{kind} {strength}: SSIMULACRA 2 {score:.2f} (target {preset.ssimulacra2}), FLIP {flip:.4f}")
    assert score >= preset.ssimulacra2
    assert flip <= preset.flip
    # What the cloak reports is what the reference packages measure (its torch copies of the metrics).
    assert result.ssimulacra2 == pytest.approx(score, abs=0.1)
    assert result.flip == pytest.approx(flip, abs=1e-3)


def test_protect_preview_has_the_documented_layout(make_home: Any, tmp_path: Path) -> None:
    home = make_home()
    home.write_config('\n[cloak]\nstrength = "standard"\noffline = true\n')
    sample = JPG / "gps" / "DSCN0010.jpg"
    out = tmp_path / "out"
    result = home.cli("protect", str(sample), "--out", str(out), "--preview", check=True)
    derivative, preview_file = out / "DSCN0010.jpg", out / "DSCN0010.preview.png"
    assert f"preview: {preview_file}" in result.stdout
    share_size = Image.open(derivative).size
    preview = np.asarray(Image.open(preview_file).convert("RGB")).astype(np.int16)
    lay = layout(share_size)
    assert (preview.shape[1], preview.shape[0]) == lay.size
    tw, th = lay.tile
    tiles = {}
    for row in range(2):  # uncloaked, cloaked
        for column in range(3):  # as saved, decoder reconstruction, 100 % crop
            left, top = lay.origin(row, column)
            tiles[row, column] = preview[top : top + th, left : left + tw]
            assert tiles[row, column].std() > 5, f"tile {row},{column} is empty"
            gap = preview[top : top + th, left - GAP : left]
            assert (gap == BACKGROUND).all(), f"no gap left of tile {row},{column}"
    assert (preview[CAPTION:CAPTION + GAP] == BACKGROUND).all()
    assert preview[:CAPTION].max() > 200, "no caption"

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-9)))

    # Top and bottom differ, by a barely visible amount.
    assert 30 < psnr(tiles[0, 0], tiles[1, 0]) < 60
    assert 30 < psnr(tiles[0, 2], tiles[1, 2]) < 60
    # What a model reconstructs moves further than the picture itself: the point of the cloak.
    assert psnr(tiles[0, 1], tiles[1, 1]) < psnr(tiles[0, 0], tiles[1, 0])
