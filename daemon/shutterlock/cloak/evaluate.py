"""The evaluation protocol of design/PROTECTION.md, shared by the tests and the benchmark.

Images are float RGB numpy arrays (H x W x 3) in [0, 1] at share resolution. Both the uncloaked and the
cloaked image are judged *as saved*: 8-bit, JPEG at the output quality (:func:`saved`).

- Picture quality with the reference implementations, not the cloak's own torch copies:
  SSIMULACRA 2 (PyPI ``ssimulacra2``), NVIDIA FLIP (``flip-evaluator``), mean CIEDE2000 (scikit-image),
  plus PSNR and SSIM for continuity.
- Protection: the relative latent displacement per surrogate encoder and transform. The public
  transforms of PROTECTION.md plus our own unlisted ones (other sizes and resamplers, a stronger JPEG,
  a crop, a blur) so that nothing is tuned to the published list; resizing is bilinear with
  antialiasing unless named otherwise, JPEG is Pillow's; after each transform both images are
  cropped (top-left) to a multiple of 32 px.
- What a model starts from: the taef2 decoder's reconstruction of each image at 512 px, and how far
  the cloaked one lands from the uncloaked one.
- The baselines: the PhotoGuard-style PGD of PROTECTION.md at any epsilon, Gaussian noise, sign noise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from . import SURROGATES

PUBLIC_TRANSFORMS = ("resize512", "resize512_jpeg85", "resize1024")
OWN_TRANSFORMS = ("resize768_lanczos", "resize384", "crop90_resize512", "blur1_resize512", "resize512_jpeg70")
TRANSFORMS = PUBLIC_TRANSFORMS + OWN_TRANSFORMS


@dataclass(frozen=True)
class Scores:
    """Protection of one cloaked image: displacement per (encoder, transform), their mean and minimum."""

    displacement: dict[tuple[str, str], float]
    mean: float
    min: float
    public_mean: float
    public_min: float


@dataclass(frozen=True)
class Quality:
    """How a cloaked image differs from the uncloaked one, both as saved."""

    ssimulacra2: float
    flip: float
    delta_e: float
    psnr: float
    ssim: float


def to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)


def quantise(a: np.ndarray) -> np.ndarray:
    """What saving as 8 bits does."""
    return to_u8(a).astype(np.float32) / 255.0


def saved(a: np.ndarray, quality: int = 90) -> np.ndarray:
    """The image as the derivative stores it: 8-bit, JPEG at `quality` (Pillow's defaults, 4:2:0)."""
    buf = io.BytesIO()
    Image.fromarray(to_u8(a), "RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return to_float(Image.open(buf))


def _png(a: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    Image.fromarray(to_u8(a), "RGB").save(buf, "PNG", compress_level=1)
    buf.seek(0)
    return buf


def ssimulacra2(reference: np.ndarray, test: np.ndarray) -> float:
    """The reference SSIMULACRA 2 implementation (PyPI ``ssimulacra2``) on two 8-bit images."""
    from ssimulacra2 import compute_ssimulacra2

    return float(compute_ssimulacra2(_png(reference), _png(test)))


def flip(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean LDR FLIP from ``flip-evaluator`` at its default 67 pixels per degree."""
    import flip_evaluator

    ref = np.ascontiguousarray(quantise(reference))
    tst = np.ascontiguousarray(quantise(test))
    return float(flip_evaluator.evaluate(ref, tst, "LDR", applyMagma=False)[1])


def quality(reference: np.ndarray, test: np.ndarray) -> Quality:
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = quantise(reference), quantise(test)
    return Quality(
        ssimulacra2=ssimulacra2(a, b),
        flip=flip(a, b),
        delta_e=float(deltaE_ciede2000(rgb2lab(a), rgb2lab(b)).mean()),
        psnr=float(peak_signal_noise_ratio(a, b, data_range=1.0)) if not np.array_equal(a, b) else float("inf"),
        ssim=float(structural_similarity(a, b, channel_axis=2, data_range=1.0)),
    )


def _tensor(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]


def _array(x: Any) -> np.ndarray:
    return x[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def resize_long(x: Any, long_edge: int) -> Any:
    """Bilinear, antialiased resize of a 1x3xHxW tensor to the given long edge."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    s = long_edge / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _pil(x: Any, op: Any) -> Any:
    return _tensor(to_float(op(Image.fromarray(to_u8(_array(x)), "RGB"))))


def _jpeg(x: Any, quality: int) -> Any:
    def op(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    return _pil(x, op)


def _lanczos(x: Any, long_edge: int) -> Any:
    def op(im: Image.Image) -> Image.Image:
        s = long_edge / max(im.size)
        return im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)

    return _pil(x, op)


def _crop(x: Any, keep: float) -> Any:
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def transform(name: str, x: Any) -> Any:
    if name == "resize512":
        y = resize_long(x, 512)
    elif name == "resize512_jpeg85":
        y = _jpeg(resize_long(x, 512), 85)
    elif name == "resize1024":
        y = resize_long(x, 1024)
    elif name == "resize768_lanczos":
        y = _lanczos(x, 768)
    elif name == "resize384":
        y = resize_long(x, 384)
    elif name == "crop90_resize512":
        y = resize_long(_crop(x, 0.9), 512)
    elif name == "blur1_resize512":
        y = resize_long(_pil(x, lambda im: im.filter(ImageFilter.GaussianBlur(1.0))), 512)
    elif name == "resize512_jpeg70":
        y = _jpeg(resize_long(x, 512), 70)
    else:
        raise ValueError(name)
    h, w = y.shape[-2:]
    return y[..., : max(32, h // 32 * 32), : max(32, w // 32 * 32)]


def encoders(models_dir: str | Path | None = None, offline: bool = False) -> dict[str, Any]:
    from . import models

    return {name: models.load(name, models_dir, offline=offline) for name in SURROGATES}


def evaluate(x: np.ndarray, x_cloaked: np.ndarray, encs: dict[str, Any]) -> Scores:
    """Displacement per surrogate x transform of `x_cloaked` (as given: pass saved images) from `x`."""
    return evaluate_many(x, [x_cloaked], encs)[0]


def evaluate_many(x: np.ndarray, candidates: list[np.ndarray], encs: dict[str, Any],
                  transforms: tuple[str, ...] = TRANSFORMS) -> list[Scores]:
    """`evaluate` for several candidates of one image, encoding the uncloaked transforms only once."""
    import torch

    tx = _tensor(quantise(x))
    clean: dict[tuple[str, str], Any] = {}
    results = []
    with torch.no_grad():
        for cand in candidates:
            tc = _tensor(quantise(cand))
            disp: dict[tuple[str, str], float] = {}
            for t in transforms:
                b = transform(t, tc)
                for name, enc in encs.items():
                    dev = next(enc.parameters()).device
                    if (name, t) not in clean:
                        clean[(name, t)] = enc(transform(t, tx).to(dev))
                    za = clean[(name, t)]
                    disp[(name, t)] = float((enc(b.to(dev)) - za).norm() / za.norm())
            public = [v for (_, t), v in disp.items() if t in PUBLIC_TRANSFORMS]
            values = list(disp.values())
            results.append(Scores(disp, float(np.mean(values)), float(np.min(values)),
                                  float(np.mean(public)), float(np.min(public))))
    return results


def reconstruct(x: np.ndarray, decoder: Any, encoder: Any) -> np.ndarray:
    """What img2img or a fine-tune starts from: taef2 decoder(encoder(x at 512 px)), as an image."""
    import torch

    with torch.no_grad():
        y = transform("resize512", _tensor(quantise(x)))
        return _array(decoder(encoder(y)).clamp(0, 1))


def reconstruction_distortion(x: np.ndarray, x_cloaked: np.ndarray, decoder: Any,
                              encoder: Any) -> tuple[float, float]:
    """(PSNR dB, SSIMULACRA 2) of D(E(x')) against D(E(x)): lower means the model sees more damage."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = quantise(reconstruct(x, decoder, encoder)), quantise(reconstruct(x_cloaked, decoder, encoder))
    return float(peak_signal_noise_ratio(a, b, data_range=1.0)), ssimulacra2(a, b)


def sign_noise(x: np.ndarray, eps: float = 8 / 255, seed: int = 0) -> np.ndarray:
    """Random +-eps sign noise everywhere."""
    rng = np.random.default_rng(seed)
    return np.clip(x + eps * rng.choice([-1.0, 1.0], size=x.shape), 0, 1).astype(np.float32)


def gaussian_noise(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(x + sigma * rng.standard_normal(x.shape), 0, 1).astype(np.float32)


def matched(make: Any, reference: np.ndarray, target: float, lo: float, hi: float, jpeg_quality: int = 90,
            steps: int = 12) -> tuple[float, np.ndarray]:
    """Bisect the strength of a cheap distortion `make(strength) -> image` until the saved result has
    SSIMULACRA 2 `target` against `reference` (already saved). Uses the cloak's torch copy of the
    metric for speed; callers measure the result with the reference package."""
    import torch

    from .perceptual import Yardstick

    stick = Yardstick(_tensor(reference))
    best = (lo, make(lo))
    for _ in range(steps):
        mid = (lo + hi) / 2
        cand = saved(make(mid), jpeg_quality)
        with torch.no_grad():
            score = stick.ssimulacra2(_tensor(cand))
        if score >= target:
            lo, best = mid, (mid, cand)
        else:
            hi = mid
        if abs(score - target) < 0.1:
            return mid, cand
    return best


def pgd_baseline(
    x: np.ndarray,
    encs: dict[str, Any],
    eps: float = 8 / 255,
    step: float = 1 / 255,
    iterations: int = 100,
) -> np.ndarray:
    """PhotoGuard-style L-inf PGD: pull taef2(resize512(x + d)) toward taef2(resize512(grey 0.5))."""
    import torch

    enc = encs["taef2"]
    dev = next(enc.parameters()).device
    tx = _tensor(x).to(dev)

    def encode(img: Any) -> Any:
        y = resize_long(img, 512)
        h, w = y.shape[-2:]
        return enc(y[..., : max(32, h // 32 * 32), : max(32, w // 32 * 32)])

    with torch.no_grad():
        target = encode(torch.full_like(tx, 0.5))
    delta = torch.zeros_like(tx)
    for _ in range(iterations):
        delta.requires_grad_(True)
        loss = (encode((tx + delta).clamp(0, 1)) - target).square().mean()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() - step * grad.sign()).clamp(-eps, eps)
        delta = (tx + delta).clamp(0, 1) - tx
    return _array(tx + delta)
