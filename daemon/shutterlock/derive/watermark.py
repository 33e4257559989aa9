"""Visible watermark: a text line and/or a logo, placed at one of nine anchors.

The font is the first that has a glyph for every letter of the text: ``[watermark] font`` if set, then
common system fonts (DejaVu Sans, which the set-up installs, Noto, Liberation), then the one bundled inside
Pillow — whose Latin coverage stops short of letters like "ö", which would otherwise print as boxes in a
photographer's name. Legibility on light and dark areas comes from a dark outline around light glyphs.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from shutterlock.config import WatermarkConfig

from .decode import DeriveError, open_checked

LOGO_HEIGHT_FACTOR = 2.0  # logo height relative to the text height ("size")
_LOGO_MAX_PIXELS = 50_000_000


def render_text(template: str, creator: str, year: int) -> str:
    """Fill ``{creator}`` and ``{year}``; a template that needs a creator yields nothing without one.

    Plain replacement, not ``str.format``: braces in a user's text must not raise or leak attributes.
    """
    creator = creator.strip()
    if "{creator}" in template and not creator:
        return ""
    text = template.replace("{creator}", creator).replace("{year}", str(year))
    return " ".join(text.split())


SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
_PROBE_SIZE = 32


def _load(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    loaded = ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)
    if not isinstance(loaded, ImageFont.FreeTypeFont):
        raise DeriveError("watermark font unavailable: Pillow was built without FreeType")
    return loaded


def _missing(face: ImageFont.FreeTypeFont, text: str) -> str:
    """The letters of ``text`` the font has no glyph for: they render like the "no glyph" box of U+10FFFF."""
    def ink(char: str) -> bytes:
        mask = face.getmask(char)
        return bytes(mask) + bytes(str(mask.size), "ascii")

    notdef = ink("\U0010ffff")
    return "".join(dict.fromkeys(c for c in text if not c.isspace() and ink(c) == notdef))


@functools.lru_cache(maxsize=64)
def choose_font(text: str, configured: str | None) -> tuple[str | None, str]:
    """(font path or None for Pillow's own, letters still missing): the first candidate covering ``text``."""
    candidates = [configured] if configured else []
    candidates += [path for path in SYSTEM_FONTS if Path(path).is_file()] + [None]
    best: tuple[str | None, str] | None = None
    for path in candidates:
        try:
            missing = _missing(_load(path, _PROBE_SIZE), text)
        except OSError:
            continue
        if not missing:
            return path, ""
        if best is None or len(missing) < len(best[1]):
            best = (path, missing)
    assert best is not None  # Pillow's own font always loads
    return best


@functools.lru_cache(maxsize=16)
def font(size: int, path: str | None = None) -> ImageFont.FreeTypeFont:
    return _load(path, size)


def apply(image: Image.Image, config: WatermarkConfig, *, creator: str, year: int) -> tuple[Image.Image, str]:
    """Draw onto ``image`` (in place when it is RGB) and describe what was applied, for the catalog.

    Only the watermark's own box is composited, so the cost does not grow with the image.
    """
    if not config.enabled:
        return image, "off"
    text = render_text(config.text, creator, year)
    short = min(image.size)
    text_height = max(8, round(config.size * short))
    logo = _load_logo(config.logo, round(text_height * LOGO_HEIGHT_FACTOR)) if config.logo else None
    if not text and logo is None:
        return image, "none (no creator set)" if config.text else "none"
    gap = round(text_height * 0.4)
    stroke = max(1, round(text_height / 14))
    font_path, missing = choose_font(text, str(config.font) if config.font else None) if text else (None, "")
    face = font(text_height, font_path)
    text_box = face.getbbox(text, stroke_width=stroke) if text else (0, 0, 0, 0)
    text_w, text_h = text_box[2] - text_box[0], text_box[3] - text_box[1]
    logo_w, logo_h = logo.size if logo else (0, 0)
    group_w = logo_w + (gap if logo and text else 0) + text_w
    group_h = max(logo_h, text_h)
    inset = round(config.inset * short)
    x, y = _anchor_position(config.anchor, image.size, (group_w, group_h), inset)

    overlay = Image.new("RGBA", (group_w, group_h), (0, 0, 0, 0))
    if logo is not None:
        overlay.alpha_composite(logo, (0, (group_h - logo_h) // 2))
    if text:
        draw = ImageDraw.Draw(overlay)
        text_x = logo_w + (gap if logo else 0) - text_box[0]
        text_y = (group_h - text_h) // 2 - text_box[1]
        draw.text((text_x, text_y), text, font=face, fill=(255, 255, 255, 255),
                  stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
    if config.opacity < 1.0:
        overlay.putalpha(overlay.getchannel("A").point(lambda value: round(value * config.opacity)))
    out = image if image.mode == "RGB" else image.convert("RGB")
    region = out.crop((x, y, x + group_w, y + group_h)).convert("RGBA")
    region.alpha_composite(overlay)
    out.paste(region.convert("RGB"), (x, y))
    parts = [f"text {text!r}" + (f" (no glyph for {missing!r} in any font here)" if missing else "")] \
        if text else []
    if logo is not None:
        parts.append(f"logo {config.logo.name}")  # type: ignore[union-attr]
    return out, f"{' + '.join(parts)} at {config.anchor}, opacity {config.opacity:g}"


def _anchor_position(anchor: str, size: tuple[int, int], box: tuple[int, int], inset: int) -> tuple[int, int]:
    width, height = size
    box_w, box_h = box
    vertical, _, horizontal = anchor.partition("-") if "-" in anchor else (anchor, "", anchor)
    if anchor in ("left", "right"):
        vertical = "middle"
    if anchor in ("top", "bottom"):
        horizontal = "middle"
    x = {"left": inset, "right": width - inset - box_w}.get(horizontal, (width - box_w) // 2)
    y = {"top": inset, "bottom": height - inset - box_h}.get(vertical, (height - box_h) // 2)
    return max(0, x), max(0, y)


def _load_logo(path: Path, height: int) -> Image.Image:
    """The logo must load: releasing an image without the mark the user configured is worse than failing."""
    try:
        with open_checked(path, _LOGO_MAX_PIXELS) as source:
            source.load()
            logo = source.convert("RGBA")
    except DeriveError as error:
        raise DeriveError(f"watermark logo {path.name}: {error}") from None
    except OSError as error:
        raise DeriveError(f"watermark logo {path.name}: {error}") from None
    height = max(1, height)
    width = max(1, round(logo.width * height / logo.height))
    return logo.resize((width, height), Image.Resampling.LANCZOS)
