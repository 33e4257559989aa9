"""Make a decoded original look right: 8-bit sRGB, no alpha, upright, at the target size.

Order matters for speed: alpha is flattened first (onto white, which is white in every RGB
profile, and before resizing so transparent pixels cannot bleed into edges), then the resize, then
the colour conversion and the orientation on the small image. Converting after the resize costs a
quarter of converting before it on a 12 MP photo; neither order resizes in linear light, so
nothing is lost. A transpose is lossless and commutes with all of it.
"""

from __future__ import annotations

import functools
import io
import math
from types import ModuleType

import numpy as np
from PIL import Image, ImageCms, ImageFilter

from shutterlock.config import OutputSize

from .decode import Decoded

# Lanczos for every downscale. After the JPEG draft the ratio left is below 2, where Hamming's short
# window visibly softens: a 4608-px phone photo decoded at 2304 px and brought to 2048 scores SSIMULACRA2
# 69 with Hamming and 83 with Lanczos (a full-quality reference through the same q90 encode: 86) for 6 ms
# more (bench/decode_paths.py). reducing_gap box-reduces first when the ratio is large (non-JPEG sources).
RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 2.0

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@functools.cache
def srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# ICC header dateTimeNumber (bytes 24-35): lcms stamps "now"; a fixed date keeps outputs reproducible.
_ICC_DATE = (2024, 1, 1, 0, 0, 0)


@functools.cache
def srgb_icc_bytes() -> bytes:
    """The one profile every derivative is tagged with (lcms' built-in sRGB, ~600 bytes)."""
    data = bytearray(srgb_profile().tobytes())
    data[24:36] = b"".join(value.to_bytes(2, "big") for value in _ICC_DATE)
    return bytes(data)


def prepare(decoded: Decoded, sharpening: str = "off") -> Image.Image:
    """The derivative's pixels: RGB, sRGB, flattened on white, at ``decoded.target_edge``, upright.

    ``sharpening``: the output sharpening (:func:`sharpen`), for when this is already the final size. It is
    applied right after the resize, where it commutes with the orientation that follows and, to within a
    level, with the colour conversion; after OpenCV's top-up it then saves a copy out of and back into Pillow.
    """
    image = _flatten(_to_working_mode(decoded.image))
    image = resize_long_edge(image, decoded.target_edge or max(image.size), sharpening)
    image = _to_srgb(image, decoded.icc_profile)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return orient(image, decoded.orientation)


def decode_edge(size: OutputSize) -> int:
    """The long edge to decode at: the preset's, or for a fixed width room to crop down to 1:4 portraits."""
    return size.long_edge or 4 * size.width


def fit(image: Image.Image, size: OutputSize) -> Image.Image:
    """Crop an upright image to the preset's aspect range (centred), then scale it to its width or long edge.

    Never scales up beyond what was decoded: a small original stays small.
    """
    width, height = image.size
    aspect = width / height
    if aspect > size.max_aspect:
        keep = round(height * size.max_aspect)
        left = (width - keep) // 2
        image = image.crop((left, 0, left + keep, height))
    elif aspect < size.min_aspect:
        keep = round(width / size.min_aspect)
        top = (height - keep) // 2
        image = image.crop((0, top, width, top + keep))
    if size.width and image.width > size.width:
        return resize_long_edge(image, round(max(image.size) * size.width / image.width))
    if size.long_edge and max(image.size) > size.long_edge:
        return resize_long_edge(image, size.long_edge)
    return image


# Unsharp mask per level (percent): what "sharpen for screen" does after a downscale, before the cloak
# (sharpening after it would amplify the perturbation). The radius follows the output size.
SHARPEN_PERCENT = {"off": 0, "low": 35, "standard": 60, "high": 90}
SHARPEN_THRESHOLD = 2  # levels of difference below which a pixel is left alone (noise, flat sky)


def sharpen(image: Image.Image, level: str) -> Image.Image:
    """Pillow's unsharp mask (Gaussian of ``radius``, ``percent`` of the difference added where it exceeds
    ``SHARPEN_THRESHOLD``), computed with OpenCV: Pillow's takes ~115 ms on a 2048-px derivative, more than
    the rest of the derivative together; this ~35 ms (bench/derive.py)."""
    percent = SHARPEN_PERCENT[level]
    if not percent:
        return image
    if image.mode not in ("RGB", "L"):
        return image.filter(ImageFilter.UnsharpMask(radius=_radius(image.size), percent=percent,
                                                    threshold=SHARPEN_THRESHOLD))
    return Image.fromarray(_unsharp(np.array(image), level), image.mode)


def _radius(size: tuple[int, int]) -> float:
    return max(0.5, 0.8 * max(size) / 2048)


def _unsharp(pixels: np.ndarray, level: str) -> np.ndarray:
    """:func:`sharpen` on an OpenCV array, in place."""
    percent = SHARPEN_PERCENT[level]
    if not percent:
        return pixels
    cv2 = resampler()
    radius = _radius((pixels.shape[1], pixels.shape[0]))
    side = 2 * math.ceil(2.5 * radius) + 1  # OpenCV's default, 3 sigma, adds taps that round to nothing in 8 bits
    blurred = cv2.GaussianBlur(pixels, (side, side), sigmaX=radius)
    gain = percent / 100
    sharpened = cv2.addWeighted(pixels, 1 + gain, blurred, -gain, 0)  # pixels + gain * (pixels - blurred)
    _, edges = cv2.threshold(cv2.absdiff(pixels, blurred), SHARPEN_THRESHOLD, 255, cv2.THRESH_BINARY)
    cv2.copyTo(sharpened, edges, pixels)  # per channel, where the difference is above the threshold
    return pixels


def orient(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


def resize_long_edge(image: Image.Image, long_edge: int, sharpening: str = "off") -> Image.Image:
    """Scale to ``long_edge`` exactly, then :func:`sharpen`. Callers never ask for more than the original's
    resolution; an upscale only happens for the last few percent after a tolerated JPEG draft (:func:`_top_up`)."""
    width, height = image.size
    longest = max(width, height)
    if longest == long_edge:
        return sharpen(image, sharpening)
    scale = long_edge / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale > 1:
        return _top_up(image, size, sharpening)
    return sharpen(image.resize(size, RESAMPLE, reducing_gap=REDUCING_GAP), sharpening)


def _top_up(image: Image.Image, size: tuple[int, int], sharpening: str) -> Image.Image:
    """Bicubic, through OpenCV: a 12 MP photo's half-scale decode (2016 px) topped up to 2048 px costs
    ~7 ms there and ~50 ms in Pillow's resampler, which has no SIMD: the largest single cost of a
    derivative (bench/decode_paths.py). Same kernel family and pixel-centre convention as Pillow's."""
    if image.mode not in ("RGB", "L"):
        return sharpen(image.resize(size, Image.Resampling.BICUBIC), sharpening)
    cv2 = resampler()
    pixels = cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_CUBIC)
    return Image.fromarray(_unsharp(pixels, sharpening), image.mode)


def resampler() -> ModuleType:
    """OpenCV, imported here rather than at the top: the daemon imports this package for its types only, and
    OpenCV would cost it tens of MB. The worker calls this before its first job, whose time limit the import
    (over a second on a busy machine) would otherwise eat into."""
    import cv2

    cv2.setNumThreads(1)  # one worker, one core: the lane runs one worker per core
    return cv2


def _to_working_mode(image: Image.Image) -> Image.Image:
    """Reduce Pillow's zoo of modes to L, LA, RGB, RGBA or CMYK (the ones colour management handles)."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _deep_grey(image)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode == "La":
        return image.convert("LA")
    if mode == "RGBa":
        return image.convert("RGBA")
    if mode == "RGBX":
        return image.convert("RGB")
    return image.convert("RGB")


def _deep_grey(image: Image.Image) -> Image.Image:
    """16/32-bit and float grey to 8 bits by scaling (Pillow's own convert clips at 255)."""
    array = np.asarray(image)
    if image.mode == "F":
        peak = 1.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 65535.0
    elif image.mode.startswith("I;16"):
        peak = 65535.0
    else:
        peak = 65535.0 if int(array.max(initial=0)) > 255 else 255.0
    scaled = np.clip(np.nan_to_num(array.astype(np.float64)) * (255.0 / peak) + 0.5, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), "L")


@functools.lru_cache(maxsize=32)
def _profile_from_bytes(icc: bytes) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


@functools.lru_cache(maxsize=32)
def _is_srgb(icc: bytes) -> bool:
    """Camera and phone profiles named sRGB are sRGB; skipping the no-op transform saves ~50 ms."""
    profile = _profile_from_bytes(icc)
    if profile is None:
        return True
    try:
        description = ImageCms.getProfileDescription(profile)
    except ImageCms.PyCMSError:
        return False
    return "srgb" in description.lower().replace(" ", "") and "scrgb" not in description.lower()


@functools.lru_cache(maxsize=32)
def _transform(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform | None:
    profile = _profile_from_bytes(icc)
    if profile is None:
        return None
    try:
        return ImageCms.buildTransform(profile, srgb_profile(), in_mode, out_mode,
                                       renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (ImageCms.PyCMSError, ValueError, OSError):
        return None


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert from the embedded profile; an absent or unusable profile means the data is sRGB already."""
    if icc is None or (image.mode != "CMYK" and _is_srgb(icc)):
        return image
    transform = _transform(icc, image.mode, "RGB")
    if transform is None:
        return image
    try:
        return ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, ValueError, OSError):
        return image


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite onto white, which is what a transparent PNG looks like on a page."""
    if image.mode not in ("RGBA", "LA"):
        return image
    base_mode = "RGB" if image.mode == "RGBA" else "L"
    background = Image.new(base_mode, image.size, 255 if base_mode == "L" else (255, 255, 255))
    background.paste(image.convert(base_mode), mask=image.getchannel("A"))
    return background
