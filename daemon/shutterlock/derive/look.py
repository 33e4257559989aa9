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

import numpy as np
from PIL import Image, ImageCms, ImageFilter

from shutterlock.config import OutputSize

from .decode import Decoded

# Hamming-windowed sinc: on 12 MP -> 2048 px it lands 46 dB PSNR from Lanczos (far below the q90 JPEG
# error that follows, i.e. invisible) at about half the cost, which is what the lane's throughput
# target needs (bench/derive.py). reducing_gap box-reduces first when the ratio is large (24+ MP).
RESAMPLE = Image.Resampling.HAMMING
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


def prepare(decoded: Decoded) -> Image.Image:
    """The derivative's pixels: RGB, sRGB, flattened on white, at ``decoded.target_edge``, upright."""
    image = _flatten(_to_working_mode(decoded.image))
    image = resize_long_edge(image, decoded.target_edge or max(image.size))
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


def sharpen(image: Image.Image, level: str) -> Image.Image:
    percent = SHARPEN_PERCENT[level]
    if not percent:
        return image
    radius = max(0.5, 0.8 * max(image.size) / 2048)
    return image.filter(ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=2))


def orient(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


def resize_long_edge(image: Image.Image, long_edge: int) -> Image.Image:
    """Scale to ``long_edge`` exactly. Callers never ask for more than the original's resolution; an
    upscale only happens for the last few percent after a tolerated JPEG draft. It uses bicubic: on a
    12 MP photo topped up from 2000 to 2048 px that lands 43 dB from a full-decode Lanczos reference
    (Lanczos: 45 dB) at 70% of Lanczos' cost, and the q90 JPEG that follows loses more than either."""
    width, height = image.size
    longest = max(width, height)
    if longest == long_edge:
        return image
    scale = long_edge / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale > 1:
        return image.resize(size, Image.Resampling.BICUBIC)
    return image.resize(size, RESAMPLE, reducing_gap=REDUCING_GAP)


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
