"""Cloak: a small adversarial perturbation against latent-diffusion image encoders.

Importing this package is cheap: torch is only imported when an image is actually cloaked.

Modes: RGB, L, RGBA and LA come back in the same mode (alpha untouched, grey cloaked as grey).
Palette images come back as RGB/RGBA, 16-bit and 32-bit grey (I;16*, I, F) and bilevel ("1") come
back as 8-bit "L", other colour modes (CMYK, YCbCr, ...) are cloaked in RGB and converted back
(left as RGB when Pillow cannot convert back).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shutterlock.config import STRENGTHS
from shutterlock.errors import ShutterlockError

if TYPE_CHECKING:
    from PIL import Image

SURROGATES = ("taef2", "taesana")

__all__ = ["STRENGTHS", "CloakError", "CloakResult", "WeightsError", "cloak_image"]


class CloakError(ShutterlockError):
    """The cloak could not be applied (exit 1 when it reaches the CLI)."""


class WeightsError(CloakError):
    """Surrogate weights are missing, unreachable or fail their pinned SHA-256."""


@dataclass(frozen=True)
class CloakResult:
    """The cloaked image and what it cost: `ssimulacra2` and `flip` compare the cloaked image with
    the uncloaked one, both saved as JPEG at the quality the cloak was fitted for (None when off)."""

    image: Image.Image
    strength: str
    seconds: float
    steps: int
    surrogates: tuple[str, ...]
    ssimulacra2: float | None = None
    flip: float | None = None


def _to_array(image: Image.Image) -> tuple[Any, Any, bool, str]:
    """Float RGB array in [0, 1], the alpha band (or None), whether it is grey, and the output mode."""
    import numpy as np

    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(image.convert("F") if mode == "F" else image.convert("I"), dtype=np.float64)
        full = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        if mode == "F" and a.max() <= 1.0:
            full = 1.0
        g = np.clip(a / full, 0, 1).astype(np.float32)
        return np.repeat(g[:, :, None], 3, axis=2), None, True, "L"
    if mode in ("1", "L", "LA"):
        alpha = image.getchannel("A") if mode == "LA" else None
        g = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return np.repeat(g[:, :, None], 3, axis=2), alpha, True, "LA" if mode == "LA" else "L"
    has_alpha = mode in ("RGBA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        out_mode = "RGBA" if mode in ("RGBA", "P", "PA", "RGBa") else "LA"
        rgb = np.asarray(rgba.convert("RGB"), dtype=np.float32) / 255.0
        return rgb, rgba.getchannel("A"), False, out_mode
    out_mode = "RGB" if mode == "P" else mode
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, None, False, out_mode


def _from_array(a: Any, alpha: Image.Image | None, grey: bool, mode: str) -> Image.Image:
    import numpy as np
    from PIL import Image

    u8 = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    if grey:
        out = Image.fromarray(np.ascontiguousarray(u8[:, :, 0]), "L")
    else:
        out = Image.fromarray(np.ascontiguousarray(u8), "RGB")
    if alpha is not None:
        out = out.convert("LA" if grey else "RGBA")
        out.putalpha(alpha)
    if out.mode == mode:
        return out
    try:
        return out.convert(mode)
    except ValueError:
        return out


def _give_back_freed_memory() -> None:
    """Fix glibc's mmap threshold at 1 MB: by default it rises as large blocks are freed, after which the
    cloak's freed full-size tensors stay in the heap and the worker's resident size ratchets up by
    hundreds of MB (measured: 1.43 GB peak for a 2048-px image, 1.12 GB with this). No-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def cloak_image(
    image: Image.Image,
    strength: str = "standard",
    *,
    seed: int = 0,
    threads: int | None = None,
    time_budget: float | None = None,
    progress: Callable[[float], None] | None = None,
    models_dir: str | Path | None = None,
    offline: bool = False,
    download_base: str | None = None,
    jpeg_quality: int = 90,
) -> CloakResult:
    """Cloak `image` at `strength`; deterministic for a given seed (and thread count).

    The preset's picture-quality targets hold for the image saved as JPEG at `jpeg_quality` (the
    derivative's output quality). `time_budget` (seconds) stops the optimisation early; the quality
    fit still runs, so the result meets the targets, with less protection. `progress` gets the
    fraction of work done.
    """
    start = time.monotonic()
    if strength not in STRENGTHS:
        raise CloakError(f"unknown cloak strength {strength!r}; expected one of {', '.join(STRENGTHS)}")
    if strength == "off":
        if progress is not None:
            progress(1.0)
        return CloakResult(image.copy(), strength, 0.0, 0, ())
    if image.width < 1 or image.height < 1:
        raise CloakError("cannot cloak an empty image")

    import torch

    from . import attack, models

    _give_back_freed_memory()

    encoders = {
        name: models.load(name, models_dir, offline=offline, download_base=download_base)
        for name in SURROGATES
    }
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads or os.cpu_count() or 1))
    # Denormal activations make the small-image convolutions up to 10x slower on x86.
    torch.set_flush_denormal(True)
    try:
        try:
            array, alpha, grey, mode = _to_array(image)
        except (ValueError, OSError) as exc:
            raise CloakError(f"cannot cloak a {image.mode} image: {exc}") from exc
        dev = models.device()
        x = torch.from_numpy(array).permute(2, 0, 1)[None].contiguous().to(dev)
        del array
        try:
            out, steps, (score, flip) = attack.run(
                x, attack.PRESETS[strength], encoders, seed=seed, grey=grey, jpeg_quality=jpeg_quality,
                time_budget=time_budget, progress=progress, start=start,
            )
        except RuntimeError as exc:
            raise CloakError(f"cloak failed: {exc}") from exc
        result = _from_array(out[0].permute(1, 2, 0).cpu().numpy(), alpha, grey, mode)
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_flush_denormal(False)
    if progress is not None:
        progress(1.0)
    return CloakResult(result, strength, time.monotonic() - start, steps, SURROGATES, score, flip)
