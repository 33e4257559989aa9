"""The cloak attack: push the surrogate latents as far as a perceptual budget allows.

Picture quality is the constraint, protection the objective. The perturbation is optimised in XYB,
the colour space SSIMULACRA 2 measures in, and every gradient step is preconditioned by the metric
itself (a natural-gradient step): SSIMULACRA 2 charges a change in each band of a Laplacian pyramid
roughly its energy over the reference's local variance there, times a per-band weight that is low
for pixel-level luma grain and more than thirty times higher at 1/4 and 1/8 scale. Dividing the
encoders' gradient by that cost puts the perturbation where it is cheapest: fine grain at output
resolution, masked by texture, with almost nothing in flat skies and skin and nothing at all
coarser than 1/8 scale (no blobs or mazes). Chroma is charged `1 / chroma**2` times more than luma,
because the metric itself is lenient with chroma and people are not.

A step costs one forward+backward of the taef2 encoder at a small working size (jittered scale and
crop) and of the cheap taesana encoder at that size (`strong` also at up to twice it), each seen
through a random differentiable JPEG; two to five steps fit the derivative's time budget. The result
is capped per pixel at a multiple of a just-noticeable-difference map, then one global factor is
fitted so that the image *as saved* (8-bit JPEG at the output quality) meets the preset's
SSIMULACRA 2 and FLIP targets, measured with exact re-implementations of both metrics (see
perceptual.py) on a window first and then on the whole image.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import perceptual as P

_JPEG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
_JPEG_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
)
# SSIMULACRA 2's weight on a luma change per pyramid band (pixel level, 1/2, 1/4): the sum of its
# mean and 4-norm weights for the SSIM term at that scale, plus the detail-lost term at full scale.
BAND_COST = [25.0, 8.0, 244.0]


@dataclass(frozen=True)
class Preset:
    """Knobs of one strength level."""

    ssimulacra2: float  # minimum SSIMULACRA 2 of the saved result against the saved uncloaked image
    flip: float  # maximum mean FLIP (1.0: no limit)
    steps: int
    working: int  # long edge of the taef2 working resolution
    views: int  # distinct geometric views (each costs one clean forward pass)
    chroma: float  # chroma amplitude relative to luma at equal perceptual cost
    jnd_cap: float  # per-pixel cap, in just-noticeable differences
    large: bool = False  # every other step also sees taesana at up to twice the working size (slow)


PRESETS: dict[str, Preset] = {
    "light": Preset(ssimulacra2=85.0, flip=0.04, steps=2, working=384, views=1, chroma=0.2, jnd_cap=1.5),
    "standard": Preset(ssimulacra2=75.0, flip=0.06, steps=3, working=384, views=2, chroma=0.2, jnd_cap=2.0),
    "strong": Preset(ssimulacra2=65.0, flip=1.0, steps=5, working=448, views=2, chroma=0.25, jnd_cap=3.5,
                     large=True),
}
# The torch metrics match the reference packages to ~0.02 SSIMULACRA 2 and ~1e-5 FLIP; aim a little
# inside the targets so the reference packages agree on every image.
_SSIMULACRA2_MARGIN = 0.3
_OVERSHOOT = 4.0
_FLIP_MARGIN = 0.0005
# On images larger than _WHOLE pixels the quality fit searches on a _PROBE-pixel mosaic first (a few
# hundredths of the cost of the whole metric on a 2048-px image), then checks and corrects on the whole.
_PROBE = 512
_WHOLE = 1024 * 800


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if (h, w) == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


def _pad32(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = max(0, 32 - h), max(0, 32 - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def _dct_basis(device: Any) -> torch.Tensor:
    """The 64 orthonormal 8x8 DCT-II basis images as conv kernels (64x1x8x8)."""
    n = torch.arange(8, dtype=torch.float32, device=device)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return (d[:, None, :, None] * d[None, :, None, :]).reshape(64, 1, 8, 8)


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    """Rounds forward; the cubic residual keeps a gradient that vanishes for coefficients JPEG would zero."""
    r = torch.round(x)
    return r + (x - r) ** 3


def jpeg_approx(x: torch.Tensor, quality: float) -> torch.Tensor:
    """Differentiable JPEG: YCbCr, 4:2:0 chroma, 8x8 DCT (as a stride-8 conv), IJG tables at `quality`.

    Height and width must be multiples of 16.
    """
    h, w = x.shape[-2:]
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    basis = _dct_basis(x.device)
    r, g, b = (x[:, i : i + 1] * 255.0 for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b - 128.0
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b

    def quant(p: torch.Tensor, table: tuple[int, ...]) -> torch.Tensor:
        q = torch.tensor(table, dtype=p.dtype, device=p.device).view(1, 64, 1, 1)
        q = ((q * scale + 50) / 100).floor().clamp(1, 255)
        coef = F.conv2d(p, basis, stride=8)
        return F.conv_transpose2d(_soft_round(coef / q) * q, basis, stride=8)

    y = quant(y, _JPEG_LUMA) + 128.0
    cb = F.interpolate(quant(F.avg_pool2d(cb, 2), _JPEG_CHROMA), size=(h, w), mode="nearest")
    cr = F.interpolate(quant(F.avg_pool2d(cr, 2), _JPEG_CHROMA), size=(h, w), mode="nearest")
    out = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    return out / 255.0


# --- the perceptual preconditioner ------------------------------------------------------------------

# sRGB <-> opponent (BT.601 luma and the two colour differences, as JPEG stores them).
_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def to_rgb(opp: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.tensor(_TO_RGB, dtype=opp.dtype, device=opp.device), opp)


def luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def to_opponent_gradient(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of `to_rgb`: a gradient with respect to sRGB as one with respect to (Y, Cb, Cr)."""
    return torch.einsum("ji,njhw->nihw", torch.tensor(_TO_RGB, dtype=g.dtype, device=g.device), g)


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _bands(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Laplacian pyramid with SSIMULACRA 2's downsampling: n - 1 detail bands and the residual."""
    out, cur = [], x
    for _ in range(n - 1):
        down = P.downsample(cur)
        out.append(cur - _up(down, tuple(cur.shape[-2:])))
        cur = down
    out.append(cur)
    return out


def _collapse(bands: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Sum of the detail bands only: nothing coarser than the last band reaches the image."""
    cur = bands[-1]
    for band in reversed(bands[:-1]):
        cur = band + _up(cur, tuple(band.shape[-2:]))
    return cur if tuple(cur.shape[-2:]) == size else _up(cur, size)


def allowance(stick: P.Yardstick, x: torch.Tensor, chroma: float) -> list[torch.Tensor]:
    """Per pyramid band: the energy SSIMULACRA 2 tolerates per pixel, for (Y, Cb, Cr) in sRGB units.

    In the metric's own luma (XYB Y) that is (2 var + C2) / cost: `var` is the reference's local
    variance at that scale, its masking. Dividing by the squared slope of XYB Y against sRGB at each
    pixel (steeper in the shadows) brings it to sRGB. Chroma gets `chroma**2` of the luma allowance.
    """
    with torch.no_grad():
        def xyb_y(shift: float) -> tuple[torch.Tensor, torch.Tensor]:  # one side at a time: memory
            moved = (x + shift).clamp(0, 1)
            return P.xyb(P.srgb_to_linear(moved))[:, 1:2].clone(), luma(moved)

        (y_hi, luma_hi), (y_lo, luma_lo) = xyb_y(1 / 255), xyb_y(-1 / 255)
        slope2 = ((y_hi - y_lo) / (luma_hi - luma_lo).clamp_min(1e-6)).square().clamp_min(1e-4)
        del y_hi, y_lo, luma_hi, luma_lo
    out = []
    for k, cost in enumerate(BAND_COST):
        allowed = (2 * stick.variance(k, 1) + P.C2) / cost / slope2
        out.append(torch.cat([allowed, allowed * chroma**2, allowed * chroma**2], dim=1))
        slope2 = P.downsample(slope2)
    return out


def band_cost(bands: list[torch.Tensor], allow: list[torch.Tensor]) -> float:
    """The quadratic cost the preconditioner inverts: band energy over allowance, summed."""
    return float(sum((b * b / a).mean() for b, a in zip(bands, allow, strict=True)))


# --- views and the objective ------------------------------------------------------------------------

@dataclass
class _View:
    """A fixed geometric transform of the share image: resize to (h, w), then crop to a multiple of 32."""

    h: int
    w: int
    top: int
    left: int
    ch: int
    cw: int
    refs: dict[str, torch.Tensor]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        y = _pad32(_resize(x, self.h, self.w))
        return y[..., self.top : self.top + self.ch, self.left : self.left + self.cw]


def _make_view(long_edge: int, size: tuple[int, int], gen: torch.Generator, jitter: bool) -> _View:
    h, w = size
    s = long_edge / max(h, w)
    if jitter:
        s *= 0.8 + 0.3 * float(torch.rand((), generator=gen))
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    ph, pw = max(nh, 32), max(nw, 32)
    ch, cw = ph // 32 * 32, pw // 32 * 32
    if jitter and ch > 64 and ph - ch < 8:
        ch -= 32
    if jitter and cw > 64 and pw - cw < 8:
        cw -= 32
    top = int(torch.randint(0, ph - ch + 1, (), generator=gen))
    left = int(torch.randint(0, pw - cw + 1, (), generator=gen))
    return _View(nh, nw, top, left, ch, cw, {})


def _photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random JPEG-like quantisation half of the time: what every platform does to a share."""
    if float(torch.rand((), generator=gen)) < 0.5:
        x = jpeg_approx(x, 70.0 + 25.0 * float(torch.rand((), generator=gen)))
    return x


def run(
    x: torch.Tensor,
    preset: Preset,
    encoders: dict[str, Any],
    *,
    seed: int,
    grey: bool,
    jpeg_quality: int,
    time_budget: float | None,
    progress: Callable[[float], None] | None,
    start: float,
) -> tuple[torch.Tensor, int, tuple[float, float]]:
    """The cloaked image (1x3xHxW in [0, 1], 8-bit values), the steps taken, and the saved result's
    (SSIMULACRA 2, FLIP) against the saved uncloaked image."""
    gen = torch.Generator().manual_seed(seed)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if min(size) < 64:  # too small for the three-band pyramid at SSIMULACRA 2's scales: left as it is
        return _quantise(x), 0, (100.0, 0.0)
    stick = P.Yardstick(saved(x, jpeg_quality))
    allow = allowance(stick, x, 0.0 if grey else preset.chroma)
    levels = len(allow)

    # The iterate lives in the pyramid (Y, Cb, Cr detail bands). It is kept on a ball of the band
    # cost whose radius is calibrated against the real metric on a random start, then taken
    # _OVERSHOOT times wider: searching further out and scaling back gave more protection at equal
    # quality than searching at the final amplitude.
    e = [a.sqrt() * torch.randn(a.shape, generator=gen).to(a.device, a.dtype) for a in allow]
    probe = _Probe.of(x, stick, jpeg_quality)
    # A large image's yardstick (five full-size planes and its coarser scales) is rebuilt for the
    # fit rather than held through the steps, where it would top the cloak's peak memory.
    del stick
    scale = _calibrate(x, e, probe, preset.ssimulacra2, jpeg_quality)
    e = [b * scale for b in e]
    budget = band_cost(e, allow) * _OVERSHOOT**2
    e = [0.05 * b for b in e]
    momentum = [torch.zeros_like(b) for b in e]

    # Encoders meet shared images at ~512 px whatever their size, so small images are optimised upscaled.
    working = preset.working if max(size) >= 128 else max(size)
    views = [_make_view(working, size, gen, jitter=i > 0) for i in range(preset.views)]
    large = None
    if preset.large and max(size) > working:
        large = _make_view(min(max(size), 2 * working), size, gen, jitter=True)

    def displacement(view: _View, name: str, xa: torch.Tensor) -> torch.Tensor:
        if name not in view.refs:
            with torch.no_grad():
                view.refs[name] = encoders[name](view.apply(x))
        z0 = view.refs[name]
        z = encoders[name](_photometric(view.apply(xa), gen))
        return (z - z0).norm() / z0.norm().clamp_min(1e-6)

    steps = 0
    for k in range(preset.steps):
        if time_budget is not None and time.monotonic() - start > time_budget:
            break
        view = views[k % len(views)]
        with torch.no_grad():
            xa = (x + to_rgb(_collapse(e, size))).clamp(0, 1)
        xa.requires_grad_(True)
        terms = [(1.0, view, "taef2"), (0.5, view, "taesana")]
        if large is not None and k % 2 == 1:
            terms.append((1.0, large, "taesana"))
        # One backward pass per term: only one encoder's activations are held at a time (together
        # they were most of the cloak's peak memory).
        grad = torch.zeros_like(xa)
        for weight, seen, name in terms:
            (part,) = torch.autograd.grad(weight * displacement(seen, name, xa), xa)
            grad += part
            del part
        del xa
        with torch.no_grad():
            # Natural gradient: each band of the gradient times what the metric allows there.
            # In place from here: each full-size copy would add to the cloak's peak memory.
            step = _bands(to_opponent_gradient(grad), levels + 1)[:levels]
            del grad
            for g, a in zip(step, allow, strict=True):
                g.mul_(a)
            norm = math.sqrt(budget / max(band_cost(step, allow), 1e-30))
            rate = 1.5 * (1.2 - k / preset.steps)
            for i in range(levels):
                momentum[i].mul_(0.5).add_(step[i], alpha=norm)
                e[i].add_(momentum[i], alpha=rate)
            del step
            shrink = min(1.0, math.sqrt(budget / max(band_cost(e, allow), 1e-30)))
            for b in e:
                b.mul_(shrink)
        steps += 1
        if progress is not None:
            progress(0.9 * steps / preset.steps)

    with torch.no_grad():
        delta = to_rgb(_collapse(e, size))
        if grey:
            delta = delta[:, :1].expand_as(delta)
        del e, momentum, allow
        cap = preset.jnd_cap * P.jnd_map(x)
        stick = probe.stick if probe.whole else P.Yardstick(saved(x, jpeg_quality))
        out, measured = _fit(x, delta, cap, stick, probe, preset, jpeg_quality, 1.6 / _OVERSHOOT)
    return out, steps, measured


def _calibrate(x: torch.Tensor, e: list[torch.Tensor], probe: _Probe, target: float, jpeg_quality: int) -> float:
    """The factor on `e` that brings the saved result near `target`, on the probe window (two
    measurements, secant: at small amplitudes JPEG's own rounding bends the curve, so one point and
    the usual exponent miss). Only the search radius depends on it; the final fit is exact."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    with torch.no_grad():
        delta = probe.crop(to_rgb(_collapse(e, size)))
        tried: list[tuple[float, float]] = []
        scale = 1.0
        for _ in range(2):
            tried.append((scale, probe.stick.ssimulacra2(saved(probe.x + scale * delta, jpeg_quality))))
            scale = _next_scale(tried, target)
    return scale


@dataclass
class _Probe:
    """Four windows of the image, one in each quadrant, aligned to JPEG's 16-pixel blocks and tiled
    into one picture with its own yardstick: where the quality fit searches before it measures the
    whole image (a centre window alone misjudged the whole by 2-5 points). The whole image when it
    is small."""

    corners: tuple[tuple[int, int], ...]
    side: int
    x: torch.Tensor
    stick: P.Yardstick
    whole: bool

    @classmethod
    def of(cls, x: torch.Tensor, stick: P.Yardstick, jpeg_quality: int) -> _Probe:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h * w <= _WHOLE:
            return cls((), 0, x, stick, True)
        side = _PROBE // 2
        corners = tuple(
            (min(max(0, round(fy * h) - side // 2), h - side) // 16 * 16,
             min(max(0, round(fx * w) - side // 2), w - side) // 16 * 16)
            for fy in (0.25, 0.75) for fx in (0.25, 0.75)
        )
        probe = cls(corners, side, x, stick, False)
        window = probe.crop(x)
        probe.x, probe.stick = window, P.Yardstick(saved(window, jpeg_quality))
        return probe

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        if self.whole:
            return t
        s = self.side
        tiles = [t[..., top : top + s, left : left + s] for top, left in self.corners]
        return torch.cat([torch.cat(tiles[:2], dim=-1), torch.cat(tiles[2:], dim=-1)], dim=-2)


def saved(x: torch.Tensor, quality: int) -> torch.Tensor:
    """x (1x3xHxW) as the derivative stores it: 8-bit, JPEG at `quality` with Pillow's defaults."""
    u8 = (x[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(u8), "RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    back = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(back.copy()).permute(2, 0, 1)[None].to(x.device, x.dtype) / 255.0


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round() / 255.0


def _fit(x: torch.Tensor, delta: torch.Tensor, cap: torch.Tensor, stick: P.Yardstick, probe: _Probe,
         preset: Preset, jpeg_quality: int, scale: float) -> tuple[torch.Tensor, tuple[float, float]]:
    """One global factor on delta (then the per-pixel JND cap) so that the saved result just meets
    the preset's targets.

    100 - SSIMULACRA 2 grows like a power (~1.3) of the amplitude, so a secant step in log-log space
    lands within a fraction of a point in two or three tries. On a large image the tries run on the
    probe window first; its answer starts the same secant on the whole image, which then lands just
    above the target in one to three measurements (the probe's score is a few points off the whole
    image's, the curve's shape is not). FLIP, a cheaper constraint for all
    but the lightest preset, is checked on the final candidate and scaled down (linear in amplitude
    at this size) if needed.
    """

    def candidate(s: float, region: _Probe | None = None) -> torch.Tensor:
        if region is None:
            return _quantise(x + torch.maximum(torch.minimum(s * delta, cap), -cap))
        d, c = region.crop(delta), region.crop(cap)
        return _quantise(region.x + torch.maximum(torch.minimum(s * d, c), -c))

    target = preset.ssimulacra2 + _SSIMULACRA2_MARGIN
    aim = target + 0.3  # the middle of the accepted window [target, target + 0.6]
    if not probe.whole:
        _, scale = _secant(lambda s: probe.stick.ssimulacra2(saved(candidate(s, probe), jpeg_quality)),
                           scale, target, aim)
    tried, _ = _secant(lambda s: stick.ssimulacra2(saved(candidate(s), jpeg_quality)), scale, target, aim)
    best = max((t for t in tried if t[1] >= target), key=lambda t: t[0], default=None)
    if best is None:  # the secant overshot every time: halve until it passes
        for _ in range(8):
            scale = min(t[0] for t in tried) / 2
            score = stick.ssimulacra2(saved(candidate(scale), jpeg_quality))
            tried.append((scale, score))
            if score >= target:
                best = (scale, score)
                break
        else:
            best = (0.0, 100.0)
    scale, score = best
    cand = candidate(scale)
    if preset.flip >= 1.0:
        return cand, (score, stick.flip(saved(cand, jpeg_quality)))
    flip = stick.flip(saved(cand, jpeg_quality))
    limit = preset.flip - _FLIP_MARGIN
    for _ in range(4):
        if flip <= limit or scale == 0.0:
            break
        scale *= 0.97 * limit / flip
        cand = candidate(scale)
        shown = saved(cand, jpeg_quality)
        flip, score = stick.flip(shown), stick.ssimulacra2(shown)
    return cand, (score, flip)


def _secant(measure: Callable[[float], float], scale: float, target: float,
            aim: float) -> tuple[list[tuple[float, float]], float]:
    """Up to five secant steps on `measure(scale) -> score`, aimed at `aim`, until a score lands in
    [target, target + 0.6] (or passes at the 64x cap). Returns the (scale, score) pairs tried and the
    scale it stopped at (the landing one, or the next it would have tried)."""
    tried: list[tuple[float, float]] = []
    for _ in range(5):
        score = measure(scale)
        tried.append((scale, score))
        if target <= score <= target + 0.6 or (score >= target and scale >= 64.0):
            break
        scale = min(64.0, _next_scale(tried, aim))
    return tried, scale


def _next_scale(tried: list[tuple[float, float]], target: float) -> float:
    """Secant in log(scale) vs log(100 - score), with the usual exponent until two points exist."""
    (s1, q1) = tried[-1]
    loss1, want = max(100.0 - q1, 1e-3), 100.0 - target
    slope = 1.3
    if len(tried) >= 2:
        s0, q0 = tried[-2]
        loss0 = max(100.0 - q0, 1e-3)
        if s0 != s1 and loss0 != loss1:
            slope = min(3.0, max(0.5, math.log(loss1 / loss0) / math.log(s1 / s0)))
    return s1 * (want / loss1) ** (1.0 / slope)
