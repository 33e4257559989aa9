"""What people see, in torch: SSIMULACRA 2, NVIDIA FLIP (LDR) and a just-noticeable-difference map.

The cloak is held to SSIMULACRA 2 and FLIP targets measured on every image at run time. The
reference implementations (PyPI ``ssimulacra2`` and ``flip-evaluator``) take 9 s and 3.5 s for one
2048-px pair on two cores, more than the whole time budget of a derivative, and neither is
differentiable. These are re-implementations of the same formulas, border handling included, that
run in a fraction of that and give gradients; ``tests/test_cloak.py`` checks them against the reference
packages. Inputs are N x 3 x H x W sRGB tensors in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import torch
import torch.nn.functional as F

# --- SSIMULACRA 2 (as the `ssimulacra2` package computes it) -----------------------------------------

OPSIN = ((0.30, 0.622, 0.078), (0.23, 0.692, 0.078), (0.24342268924547819, 0.20476744424496821,
                                                       0.5518098665095575))
OPSIN_BIAS = 0.0037930732552754493
_SCALES = 6
C2 = 0.0009
# 108 weights: for each XYB channel, scale and norm (mean, 4-norm): ssim, artifact, detail lost.
_WEIGHTS = (
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0, 0.0004371155730107379, 0.0,
    1.1041726426657346, 0.00066284834129271, 0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0,
    1.8422455520539298, 11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833, 0.0,
    0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053, 0.0004550992113792063, 0.0, 0.0,
    0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0, 7.466890328078848, 0.0, 17.445833984131262,
    0.0006235601634041466, 0.0, 0.0, 6.683678146179332, 0.00037724407979611296, 1.027889937768264,
    225.20515300849274, 0.0, 0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757, 0.0004485436923833408, 0.0, 0.0,
    0.0, 34.77906344483772, 44.835625328877896, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0008680556573291698, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0005313191874358747, 0.0, 0.00016533814161379112,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437,
    0.0, 0.0, 8.826982764996862, 23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682,
    0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379, 0.0, 0.0, 0.0,
    0.0005130064588990679, 0.0, 0.00010854057858411537,
)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def xyb(linear: torch.Tensor) -> torch.Tensor:
    """Linear RGB -> the positive XYB planes SSIMULACRA 2 compares."""
    m = torch.tensor(OPSIN, dtype=linear.dtype, device=linear.device)
    mixed = torch.einsum("ij,njhw->nihw", m, linear) + OPSIN_BIAS
    cbrt_bias = OPSIN_BIAS ** (1 / 3)
    mixed = mixed.clamp_min(1e-12) ** (1 / 3) - cbrt_bias
    x = 0.5 * (mixed[:, 0] - mixed[:, 1])
    y = 0.5 * (mixed[:, 0] + mixed[:, 1])
    b = mixed[:, 2]
    return torch.stack([x * 14.0 + 0.42, y + 0.01, b - y + 0.55], dim=1)


@lru_cache(maxsize=8)
@lru_cache(maxsize=8)
def _gauss(sigma: float, radius: int) -> tuple[float, ...]:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * t * t / (sigma * sigma))
    return tuple(float(v) for v in g / g.sum())


def _pad(x: torch.Tensor, r: int, mode: str, dim: int) -> torch.Tensor:
    """Pad axis `dim` by r on both sides: "zeros", "replicate" (a a a | a b), or "symmetric" (the edge
    sample repeated: c b a | a b c, as scipy's "reflect")."""
    n = x.shape[dim]
    if mode == "zeros":
        zeros = x.new_zeros((*x.shape[:dim % x.dim()], r, *x.shape[dim % x.dim() + 1 :]))
        return torch.cat([zeros, x, zeros], dim=dim)
    if mode == "replicate":
        first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
        sizes = [-1] * x.dim()
        sizes[dim] = r
        return torch.cat([first.expand(*sizes), x, last.expand(*sizes)], dim=dim)
    index = torch.arange(-r, n + r, device=x.device) % (2 * n)
    index = torch.where(index >= n, 2 * n - 1 - index, index)
    return x.index_select(dim, index)


def _filter(x: torch.Tensor, taps: tuple[float, ...], mode: str, dim: int) -> torch.Tensor:
    """Correlate along axis `dim` with `taps` (odd length) as a sum of shifted copies: on CPU that is
    several times faster than torch's convolutions for these few-tap, single-channel filters."""
    r = len(taps) // 2
    n = x.shape[dim]
    padded = _pad(x, r, mode, dim)
    out = padded.narrow(dim, 0, n) * taps[0]
    for i in range(1, len(taps)):
        out = out.add_(padded.narrow(dim, i, n), alpha=taps[i]) if taps[i] else out
    return out


def _filter_w(x: torch.Tensor, taps: tuple[float, ...], mode: str) -> torch.Tensor:
    return _filter(x, taps, mode, -1)


def _filter_h(x: torch.Tensor, taps: tuple[float, ...], mode: str) -> torch.Tensor:
    return _filter(x, taps, mode, -2)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Gaussian sigma 1.5, radius 5; zero border along the width, mirrored border along the height.

    That is what the reference package does: it pads one axis of its (transposed) planes with zeros.
    """
    g = _gauss(1.5, 5)
    return _filter_h(_filter_w(x, g, "zeros"), g, "symmetric")


def downsample(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 box mean; a partial block at the border averages the pixels it has."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, w % 2, 0, h % 2))
    sums = F.avg_pool2d(x, 2, divisor_override=1)
    ones = F.pad(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device), (0, w % 2, 0, h % 2))
    return sums / F.avg_pool2d(ones, 2, divisor_override=1)


def _norms(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 4-norm over the plane (per image)."""
    mean = d.mean(dim=(-2, -1))
    quartic = (d * d).square().mean(dim=(-2, -1))
    return mean, (quartic + 1e-30) ** 0.25


class _Side:
    """One image's share of SSIMULACRA 2 at one scale and XYB channel: the plane, its blur, its blurred square."""

    def __init__(self, plane: torch.Tensor) -> None:
        self.plane, self.mu = plane, _blur(plane)
        self.sq = _blur(plane * plane)


def _scale_terms(a: _Side, b: _Side) -> torch.Tensor:
    """(ssim mean, ssim 4-norm, artifact mean, artifact 4-norm, detail-lost mean, 4-norm) per image."""
    s12 = _blur(a.plane * b.plane)
    num_m = 1.0 - (a.mu - b.mu).square()
    num_s = 2.0 * (s12 - a.mu * b.mu) + C2
    den_s = (a.sq - a.mu * a.mu) + (b.sq - b.mu * b.mu) + C2
    d = (1.0 - num_m * num_s / den_s).clamp_min(0)
    ratio = (1.0 + (b.plane - b.mu).abs()) / (1.0 + (a.plane - a.mu).abs()) - 1.0
    return torch.stack((*_norms(d), *_norms(ratio.clamp_min(0)), *_norms((-ratio).clamp_min(0))), dim=-1)


def _pyramid(srgb: torch.Tensor) -> Iterator[torch.Tensor]:
    """XYB planes (N x 3 x h x w) at each scale SSIMULACRA 2 looks at (downsampled in linear light),
    one scale at a time: a caller that uses each in turn never holds the whole pyramid."""
    linear = srgb_to_linear(srgb.clamp(0, 1))
    for scale in range(_SCALES):
        if min(linear.shape[-2:]) < 8:
            return
        level = xyb(linear)
        if scale < _SCALES - 1:
            linear = downsample(linear)
        yield level


def _score(terms: list[torch.Tensor]) -> torch.Tensor:
    """The reference package's weighting and final mapping; terms: per scale, N x 3 x 6."""
    total = torch.zeros(terms[0].shape[0], dtype=terms[0].dtype, device=terms[0].device)
    i = 0
    for c in range(3):
        for t in terms:
            for n in range(2):
                for k in (n, 2 + n, 4 + n):  # ssim, artifact, detail lost, in the weights' order
                    total = total + _WEIGHTS[i] * t[:, c, k].abs()
                    i += 1
    s = total * 0.9562382616834844
    s = 2.326765642916932 * s - 0.020884521182843837 * s * s + 6.248496625763138e-05 * s * s * s
    return torch.where(s > 0, 100.0 - 10.0 * s.clamp_min(1e-12) ** 0.6276336467831387, torch.full_like(s, 100.0))


def ssimulacra2(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """SSIMULACRA 2 per image (N), differentiable: 100 identical, 90 visually lossless, ~70 a JPEG q75."""
    terms = []
    for a, b in zip(_pyramid(reference), _pyramid(distorted), strict=True):
        terms.append(torch.stack([_scale_terms(_Side(a[:, c]), _Side(b[:, c])) for c in range(3)], dim=1))
    return _score(terms)


# --- FLIP, LDR (as `flip-evaluator` computes it, 67 pixels per degree) -------------------------------

PPD = 3840 * math.pi / 180  # a 0.7 m wide 4K monitor seen from 0.7 m: FLIP's default
# Yardstick.flip works on stripes of _FLIP_STRIPE rows plus _FLIP_HALO rows each side; the deepest
# vertical reach of FLIP's filters at PPD is 10 rows (the CSF), so the halo makes stripes exact.
_FLIP_STRIPE = 256
_FLIP_HALO = 16
_WHITE = (0.950428545, 1.0, 1.088900371)
_RGB2XYZ = ((10135552 / 24577794, 8788810 / 24577794, 4435075 / 24577794),
            (2613072 / 12288897, 8788810 / 12288897, 887015 / 12288897),
            (1425312 / 73733382, 8788810 / 73733382, 70074185 / 73733382))


def _matrix(x: torch.Tensor, m: tuple[tuple[float, ...], ...] | torch.Tensor) -> torch.Tensor:
    mt = m if isinstance(m, torch.Tensor) else torch.tensor(m, dtype=torch.float64)
    return torch.einsum("ij,njhw->nihw", mt.to(dtype=x.dtype, device=x.device), x)


def _white(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_WHITE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def _ycxcz(srgb: torch.Tensor) -> torch.Tensor:
    xyz = _matrix(srgb_to_linear(srgb), _RGB2XYZ) / _white(srgb)
    return torch.cat([116 * xyz[:, 1:2] - 16, 500 * (xyz[:, 0:1] - xyz[:, 1:2]),
                      200 * (xyz[:, 1:2] - xyz[:, 2:3])], dim=1)


def _ycxcz_to_linear(y: torch.Tensor) -> torch.Tensor:
    yy = (y[:, 0:1] + 16) / 116
    xyz = torch.cat([yy + y[:, 1:2] / 500, yy, yy - y[:, 2:3] / 200], dim=1) * _white(y)
    return _matrix(xyz, torch.linalg.inv(torch.tensor(_RGB2XYZ, dtype=torch.float64)))


def _hunt_lab(linear: torch.Tensor) -> torch.Tensor:
    """Linear RGB -> CIELAB (D65) with FLIP's Hunt adjustment: a and b scaled by L / 100."""
    xyz = _matrix(linear, _RGB2XYZ) / _white(linear)
    d = 6 / 29
    f = torch.where(xyz > d**3, xyz.clamp_min(d**3) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    lum = 116 * f[:, 1:2] - 16
    a = 500 * (f[:, 0:1] - f[:, 1:2])
    b = 200 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([lum, 0.01 * lum * a, 0.01 * lum * b], dim=1)


@lru_cache(maxsize=4)
def _csf(ppd: float) -> tuple[tuple[tuple[float, tuple[float, ...]], ...], ...]:
    """FLIP's three contrast-sensitivity filters as sums of separable Gaussians: per opponent channel,
    (weight, 1-D taps) terms whose outer products add up to the normalised 2-D filter."""
    params = ((1.0, 0.0047, 0.0, 1e-5), (1.0, 0.0053, 0.0, 1e-5), (34.1, 0.04, 13.5, 0.025))
    r = math.ceil(3 * math.sqrt(0.04 / (2 * math.pi**2)) * ppd)
    t = torch.arange(-r, r + 1, dtype=torch.float64) / ppd
    out = []
    for a1, b1, a2, b2 in params:
        terms = [(amp * math.sqrt(math.pi / width), torch.exp(-math.pi**2 * t * t / width))
                 for amp, width in ((a1, b1), (a2, b2)) if amp]
        total = sum(w * float(g.sum()) ** 2 for w, g in terms)
        out.append(tuple((w / total, tuple(float(v) for v in g)) for w, g in terms))
    return tuple(out)


@lru_cache(maxsize=4)
def _detectors(ppd: float) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """1-D factors of FLIP's edge and point detectors: d(x) g(y), each sign of d normalised to sum 1."""
    sd = 0.5 * 0.082 * ppd
    r = math.ceil(3 * sd)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t * t / (2 * sd * sd))

    def balanced(k: torch.Tensor) -> tuple[float, ...]:
        pos, neg = float(k.clamp_min(0).sum()), float(-k.clamp_max(0).sum())
        return tuple(float(v) for v in torch.where(k < 0, k / neg, k / pos) / g.sum())

    return balanced(-t * g), balanced((t * t / (sd * sd) - 1) * g), tuple(float(v) for v in g)


def _flip_side(srgb: torch.Tensor, ppd: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's share of FLIP: CSF-filtered Hunt-Lab colour, edge and point magnitudes."""
    opp = _ycxcz(srgb.clamp(0, 1))
    chans = []
    for c, terms in enumerate(_csf(ppd)):
        plane = opp[:, c : c + 1]
        filtered = [w * _filter_h(_filter_w(plane, g, "replicate"), g, "replicate") for w, g in terms]
        chans.append(filtered[0] if len(filtered) == 1 else filtered[0] + filtered[1])
    colour = _hunt_lab(_ycxcz_to_linear(torch.cat(chans, dim=1)).clamp(0, 1))
    y = (opp[:, 0:1] + 16) / 116
    edge, point, g = _detectors(ppd)
    smooth_w = _filter_w(y, g, "replicate")  # shared by both detectors' vertical derivative

    def magnitude(d: tuple[float, ...]) -> torch.Tensor:
        gx = _filter_h(_filter_w(y, d, "replicate"), g, "replicate")
        gy = _filter_h(smooth_w, d, "replicate")
        return (gx * gx + gy * gy + 1e-20).sqrt()

    return colour, magnitude(edge), magnitude(point)


@lru_cache(maxsize=1)
def _cmax() -> float:
    green = _hunt_lab(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1))
    blue = _hunt_lab(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).view(1, 3, 1, 1))
    gb = (green - blue).flatten()
    return (float(gb[0].abs()) + float(gb[1:].norm())) ** 0.7


def _flip_error(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> torch.Tensor:
    delta = a[0] - b[0]
    hyab = (delta[:, 0:1].square() + 1e-15).sqrt() + (delta[:, 1:3].square().sum(1, keepdim=True) + 1e-20).sqrt()
    power, cmax = hyab**0.7, _cmax()
    pccmax = 0.4 * cmax
    colour = torch.where(power < pccmax, 0.95 / pccmax * power, 0.95 + (power - pccmax) / (cmax - pccmax) * 0.05)
    feature = torch.maximum((a[1] - b[1]).abs(), (a[2] - b[2]).abs()).clamp_min(1e-15)
    return colour ** (1 - (feature / math.sqrt(2)) ** 0.5)


class Yardstick:
    """Both metrics against one fixed reference whose share is computed once: many candidates, one image."""

    def __init__(self, reference: torch.Tensor) -> None:
        with torch.no_grad():
            self._pyramid = [[_Side(level[:, c]) for c in range(3)] for level in _pyramid(reference)]
        self._reference = reference

    @torch.no_grad()
    def ssimulacra2(self, distorted: torch.Tensor) -> float:
        terms = [torch.stack([_scale_terms(a[c], _Side(b[:, c])) for c in range(3)], dim=1)
                 for a, b in zip(self._pyramid, _pyramid(distorted), strict=True)]
        return float(_score(terms)[0])

    def variance(self, scale: int, channel: int) -> torch.Tensor:
        """The reference's local variance (N x 1 x h x w) of one XYB channel at one scale."""
        side = self._pyramid[min(scale, len(self._pyramid) - 1)][channel]
        return (side.sq - side.mu * side.mu).clamp_min(0).unsqueeze(1)

    @torch.no_grad()
    def flip(self, distorted: torch.Tensor) -> float:
        """Mean LDR FLIP: 0 identical; a JPEG q75 re-encode costs ~0.04-0.07.

        Computed in stripes of rows, each with a halo deeper than FLIP's filters reach, so the result
        is exact while the dozen full-size intermediate planes of both sides never exist at once.
        """
        h, w = int(distorted.shape[-2]), int(distorted.shape[-1])
        total = 0.0
        for top in range(0, h, _FLIP_STRIPE):
            bottom = min(h, top + _FLIP_STRIPE)
            lo, hi = max(0, top - _FLIP_HALO), min(h, bottom + _FLIP_HALO)
            error = _flip_error(_flip_side(self._reference[..., lo:hi, :], PPD),
                                _flip_side(distorted[..., lo:hi, :], PPD))
            total += float(error[..., top - lo : bottom - lo, :].sum(dtype=torch.float64))
        return total / (h * w * distorted.shape[0])


# --- where a change goes unnoticed ------------------------------------------------------------------

def luma(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of sRGB values (what JPEG keeps at full resolution)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def jnd_map(x: torch.Tensor) -> torch.Tensor:
    """Visibility threshold of a luma change per pixel (N x 1 x H x W, in [0, 1] units).

    The classic pixel-domain model (Chou & Li 1995; Yang et al. 2005): luminance adaptation (dark
    and bright backgrounds hide more than mid-grey) combined with contrast masking by the local
    gradient, the two overlapping rather than adding. Edges are then discounted: a change next to a
    strong, isolated edge reads as ringing, a change in busy texture does not.
    """
    y = luma(x) * 255.0
    bg = F.avg_pool2d(F.pad(y, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    dark = 17.0 * (1.0 - (bg / 127.0).clamp_min(0).sqrt()) + 3.0
    bright = 3.0 / 128.0 * (bg - 127.0) + 3.0
    adaptation = torch.where(bg <= 127.0, dark, bright)
    yp = F.pad(y, (1, 1, 1, 1), mode="replicate")
    gx = (yp[..., 1:-1, 2:] - yp[..., 1:-1, :-2]) / 2
    gy = (yp[..., 2:, 1:-1] - yp[..., :-2, 1:-1]) / 2
    grad = (gx * gx + gy * gy).sqrt()
    # Texture = gradient energy spread over the neighbourhood; an isolated edge has a high peak but
    # a low 7 x 7 average, busy texture has both.
    spread = F.avg_pool2d(F.pad(grad, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
    peak = F.max_pool2d(F.pad(grad, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
    texture = spread * (spread / peak.clamp_min(1e-3)).clamp(0, 1).sqrt()
    masking = 0.117 * texture
    threshold = adaptation + masking - 0.3 * torch.minimum(adaptation, masking)
    return threshold / 255.0
