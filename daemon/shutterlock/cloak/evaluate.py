"""The evaluation protocol of design/PROTECTION.md, shared by the tests and the benchmark.

Images are float RGB numpy arrays (H x W x 3) in [0, 1] at share resolution. Resizing is bilinear
with antialiasing (torch), JPEG is Pillow's at quality 85; after each transform both images are
cropped (top-left) to a multiple of 32 px, as the encoders need.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from . import SURROGATES

TRANSFORMS = ("resize512", "resize512_jpeg85", "resize1024")


@dataclass(frozen=True)
class Scores:
    displacement: dict[tuple[str, str], float]
    mean: float
    min: float
    psnr: float
    ssim: float


def to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def quantise(a: np.ndarray) -> np.ndarray:
    """What saving as 8 bits does."""
    return (np.clip(np.round(a * 255.0), 0, 255) / 255.0).astype(np.float32)


def _tensor(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


def resize_long(x: Any, long_edge: int) -> Any:
    """Bilinear, antialiased resize of a 1x3xHxW tensor to the given long edge."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    s = long_edge / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _jpeg(x: Any, quality: int = 85) -> Any:
    u8 = (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().byte().numpy()
    buf = io.BytesIO()
    Image.fromarray(u8, "RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return _tensor(to_float(Image.open(buf)))


def transform(name: str, x: Any) -> Any:
    if name == "resize512":
        y = resize_long(x, 512)
    elif name == "resize512_jpeg85":
        y = _jpeg(resize_long(x, 512))
    elif name == "resize1024":
        y = resize_long(x, 1024)
    else:
        raise ValueError(name)
    h, w = y.shape[-2:]
    return y[..., : max(32, h // 32 * 32), : max(32, w // 32 * 32)]


def encoders(models_dir: str | Path | None = None, offline: bool = False) -> dict[str, Any]:
    from . import models

    return {name: models.load(name, models_dir, offline=offline) for name in SURROGATES}


def evaluate(x: np.ndarray, x_cloaked: np.ndarray, encs: dict[str, Any]) -> Scores:
    """Displacement per surrogate x transform on the 8-bit cloaked image, plus PSNR and SSIM."""
    return evaluate_many(x, [x_cloaked], encs)[0]


def evaluate_many(x: np.ndarray, candidates: list[np.ndarray], encs: dict[str, Any]) -> list[Scores]:
    """`evaluate` for several cloaks of one image, encoding the clean transforms only once."""
    import torch

    xq = quantise(x)
    tx = _tensor(xq)
    clean: dict[tuple[str, str], Any] = {}
    results = []
    with torch.no_grad():
        for cand in candidates:
            cq = quantise(cand)
            tc = _tensor(cq)
            disp: dict[tuple[str, str], float] = {}
            for t in TRANSFORMS:
                b = transform(t, tc)
                for name, enc in encs.items():
                    dev = next(enc.parameters()).device
                    if (name, t) not in clean:
                        clean[(name, t)] = enc(transform(t, tx).to(dev))
                    za = clean[(name, t)]
                    disp[(name, t)] = float((enc(b.to(dev)) - za).norm() / za.norm())
            values = list(disp.values())
            results.append(
                Scores(
                    displacement=disp,
                    mean=float(np.mean(values)),
                    min=float(np.min(values)),
                    psnr=float(peak_signal_noise_ratio(xq, cq, data_range=1.0)),
                    ssim=float(structural_similarity(xq, cq, channel_axis=2, data_range=1.0)),
                )
            )
    return results


def sign_noise(x: np.ndarray, eps: float = 8 / 255, seed: int = 0) -> np.ndarray:
    """Random +-eps sign noise, the floor any cloak must beat."""
    rng = np.random.default_rng(seed)
    return np.clip(x + eps * rng.choice([-1.0, 1.0], size=x.shape), 0, 1).astype(np.float32)


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
    return (tx + delta)[0].permute(1, 2, 0).cpu().numpy()
