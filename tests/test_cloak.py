"""Tests for the cloak engine: protection versus random noise, determinism, weights, modes, import cost."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shutterlock.cloak import STRENGTHS, CloakError, WeightsError, cloak_image, models

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models"
JPG = SHARED / "samples" / "exif-samples" / "jpg"
PHOTOS = ("gps/DSCN0010.jpg", "exif-org/kodak-dc240.jpg", "Canon_PowerShot_S40.jpg")

# Protection of the cloak over Gaussian noise of the same SSIMULACRA 2 (as saved), (mean, min): floors
# below what was measured on these photos at 192 px (mean 1.45x and 1.12x, min 2.5x and 1.33x on
# DSCN0010 and kodak-dc240); bench/cloak.py measures it at share sizes.
OVER_NOISE = (1.0, 1.2)


def cloak(im: Image.Image, strength: str = "standard", **kw: object) -> Image.Image:
    return cloak_image(im, strength, models_dir=MODELS, offline=True, **kw).image  # type: ignore[arg-type]


def photo(name: str, long_edge: int = 192) -> Image.Image:
    im = Image.open(JPG / name).convert("RGB")
    s = long_edge / max(im.size)
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BILINEAR)


def test_import_does_not_load_torch() -> None:
    code = "import sys, shutterlock.cloak; assert 'torch' not in sys.modules, 'torch imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_standard_beats_noise_of_the_same_quality() -> None:
    from shutterlock.cloak.evaluate import (
        encoders,
        evaluate_many,
        gaussian_noise,
        matched,
        saved,
        ssimulacra2,
        to_float,
    )

    encs = encoders(MODELS, offline=True)
    for i, name in enumerate(PHOTOS):
        im = photo(name)
        x = to_float(im)
        xs = saved(x)
        ours = saved(to_float(cloak(im, seed=i)))
        _, noise = matched(lambda s, x=x, i=i: gaussian_noise(x, s, seed=i), xs, ssimulacra2(xs, ours), 0.0, 0.1)
        scores, noisy = evaluate_many(xs, [ours, noise], encs)
        msg = f"{name}: ours {scores}, Gaussian noise of the same SSIMULACRA 2 {noisy}"
        assert scores.mean >= OVER_NOISE[0] * noisy.mean, msg
        assert scores.min >= OVER_NOISE[1] * noisy.min, msg


def test_deterministic_per_seed() -> None:
    im = photo(PHOTOS[0], 96)
    a, b, c = cloak(im, seed=3), cloak(im, seed=3), cloak(im, seed=4)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert a.tobytes() != im.tobytes()


def test_off_and_unknown_strength() -> None:
    im = photo(PHOTOS[0], 64)
    res = cloak_image(im, "off")
    assert res.image.tobytes() == im.tobytes() and res.steps == 0
    assert STRENGTHS == ("off", "light", "standard", "strong")
    with pytest.raises(CloakError, match="unknown cloak strength"):
        cloak_image(im, "max")


def test_progress_and_time_budget() -> None:
    im = photo(PHOTOS[1], 96)
    seen: list[float] = []
    res = cloak_image(im, "light", models_dir=MODELS, offline=True, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > res.steps >= 1
    quick = cloak_image(im, "strong", models_dir=MODELS, offline=True, time_budget=0.0)
    assert quick.steps == 0 and quick.image.size == im.size
    assert res.surrogates == ("taef2", "taesana")


@pytest.mark.parametrize(
    ("mode", "size", "out_mode"),
    [
        ("L", (64, 48), "L"),
        ("RGBA", (40, 30), "RGBA"),
        ("LA", (33, 20), "LA"),
        ("I;16", (48, 40), "L"),
        ("P", (30, 30), "RGB"),
        ("RGB", (17, 9), "RGB"),
        ("RGB", (1, 40), "RGB"),
        ("CMYK", (24, 24), "CMYK"),
    ],
)
def test_modes_and_sizes(mode: str, size: tuple[int, int], out_mode: str) -> None:
    base = photo(PHOTOS[2], 64).resize(size)
    if mode == "I;16":
        grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        im = Image.frombytes("I;16", size, grey.astype("<u2").tobytes())
    elif mode in ("RGBA", "LA"):
        im = base.convert(mode)
        alpha = Image.linear_gradient("L").resize(size)
        im.putalpha(alpha)
    else:
        im = base.convert(mode)
    out = cloak(im)
    assert out.size == im.size and out.mode == out_mode
    if mode in ("RGBA", "LA"):
        assert out.getchannel("A").tobytes() == im.getchannel("A").tobytes()
    if mode == "I;16":
        diff = np.abs(np.asarray(out, dtype=np.float64) - np.asarray(im, dtype=np.float64) / 257)
        assert diff.max() <= 17, "16-bit input must be scaled, not clipped"


# --- weights ----------------------------------------------------------------------------------


def test_wrong_hash_refused(tmp_path: Path) -> None:
    entry = models.REGISTRY["taef2"]
    (tmp_path / entry.file).write_bytes(b"not the weights")
    with pytest.raises(WeightsError) as err:
        models.resolve_weights("taef2", tmp_path, offline=True)
    text = str(err.value)
    assert entry.file in text and entry.sha256 in text and "mismatch" in text
    with pytest.raises(WeightsError, match="mismatch"):
        cloak_image(photo(PHOTOS[0], 32), models_dir=tmp_path, offline=True)


def test_missing_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(WeightsError, match=r"not found in .*offline"):
        cloak_image(photo(PHOTOS[0], 32), models_dir=tmp_path / "empty", offline=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving a directory the test fills in."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_http_verifies(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = server
    cache = tmp_path / "cache"
    monkeypatch.setattr(models, "cache_dir", lambda: cache)
    for entry in models.REGISTRY.values():
        shutil.copyfile(MODELS / entry.file, root / entry.file)
    path = models.resolve_weights("taesana", tmp_path / "none", download_base=base)
    assert path == cache / "taesana_encoder.pth"
    assert models.sha256_file(path) == models.REGISTRY["taesana"].sha256
    res = cloak_image(photo(PHOTOS[0], 96), "light", models_dir=tmp_path / "none", download_base=base)
    assert res.steps >= 1 and sorted(p.name for p in cache.iterdir()) == sorted(
        e.file for e in models.REGISTRY.values() if e.name in res.surrogates
    )


def test_download_corrupted_refused(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = server
    cache = tmp_path / "cache"
    monkeypatch.setattr(models, "cache_dir", lambda: cache)
    good = (MODELS / "taef2_encoder.pth").read_bytes()
    (root / "taef2_encoder.pth").write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match=r"refusing downloaded taef2_encoder\.pth.*mismatch"):
        models.resolve_weights("taef2", download_base=base)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_download_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(models, "cache_dir", lambda: cache)
    path = models.resolve_weights("taef2_decoder", download_base=MODELS.as_uri() + "/")
    assert path.parent == cache and models.sha256_file(path) == models.REGISTRY["taef2_decoder"].sha256
    with pytest.raises(WeightsError, match="could not download"):
        models.resolve_weights("taef2", download_base=(tmp_path / "nowhere").as_uri())
