"""The tray icon, drawn with Pillow at run time for each state.

Why drawn rather than shipped: the working icon carries a progress ring, and a filled disc in one
colour per state stays legible at 16 px on any panel. Colours are far apart so a state is
recognisable at a glance (and by the desktop test, which samples the tray's pixels).
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw

from shutterlock_tray.menu import DISCONNECTED

SIZE = 64
PROGRESS_STEPS = 20

COLOURS: dict[str, tuple[int, int, int]] = {
    "idle": (46, 160, 67),
    "working": (33, 118, 210),
    "paused": (124, 92, 196),
    "offline": (232, 145, 20),
    "degraded": (232, 145, 20),
    "error": (210, 38, 38),
    DISCONNECTED: (128, 128, 128),
}
WHITE = (255, 255, 255, 255)


def quantise(progress: float | None) -> float | None:
    """Round progress to a few steps so the icon is redrawn a handful of times per batch, not per file."""
    if progress is None:
        return None
    return round(min(max(progress, 0.0), 1.0) * PROGRESS_STEPS) / PROGRESS_STEPS


def draw(state: str, progress: float | None = None, size: int = SIZE) -> Image.Image:
    """An RGBA icon for ``state``; ``progress`` (0..1) adds a ring to the working icon."""
    return _draw(state if state in COLOURS else "error", quantise(progress) if state == "working" else None, size)


@lru_cache(maxsize=64)
def _draw(state: str, progress: float | None, size: int) -> Image.Image:
    scale = 4  # draw large and downsample: smooth edges without antialiasing support in ImageDraw
    big = size * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    colour = (*COLOURS[state], 255)
    margin = big // 32
    box = (margin, margin, big - margin, big - margin)
    if state == DISCONNECTED:
        pen.ellipse(box, outline=colour, width=big // 9)
        _dash(pen, big, colour)
    else:
        pen.ellipse(box, fill=colour)
        _glyph(pen, state, big, progress)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _glyph(pen: ImageDraw.ImageDraw, state: str, big: int, progress: float | None) -> None:
    unit = big / 64
    width = max(1, round(6 * unit))
    if state == "idle":
        pen.line([(19 * unit, 33 * unit), (28 * unit, 42 * unit), (45 * unit, 23 * unit)], fill=WHITE, width=width,
                 joint="curve")
    elif state == "paused":
        for left in (21, 36):
            pen.rectangle((left * unit, 19 * unit, (left + 7) * unit, 45 * unit), fill=WHITE)
    elif state in ("offline", "degraded"):
        pen.rectangle((29 * unit, 14 * unit, 35 * unit, 38 * unit), fill=WHITE)
        pen.ellipse((28.5 * unit, 42 * unit, 35.5 * unit, 49 * unit), fill=WHITE)
    elif state == "error":
        for start, end in (((21, 21), (43, 43)), ((43, 21), (21, 43))):
            pen.line([(start[0] * unit, start[1] * unit), (end[0] * unit, end[1] * unit)], fill=WHITE,
                     width=round(7 * unit))
    elif state == "working":
        ring = (12 * unit, 12 * unit, 52 * unit, 52 * unit)
        track = tuple(round(c + (255 - c) * 0.35) for c in COLOURS[state])
        pen.ellipse(ring, outline=(*track, 255), width=width)
        if progress:
            pen.arc(ring, -90, -90 + 360 * progress, fill=WHITE, width=width)
        _arrow(pen, unit)


def _arrow(pen: ImageDraw.ImageDraw, unit: float) -> None:
    """A small upward arrow in the centre: the vault is being filled."""
    pen.rectangle((29.5 * unit, 27 * unit, 34.5 * unit, 41 * unit), fill=WHITE)
    pen.polygon([(24 * unit, 29 * unit), (32 * unit, 20 * unit), (40 * unit, 29 * unit)], fill=WHITE)


def _dash(pen: ImageDraw.ImageDraw, big: int, colour: tuple[int, ...]) -> None:
    unit = big / 64
    pen.rectangle((20 * unit, 29 * unit, 44 * unit, 35 * unit), fill=colour)

