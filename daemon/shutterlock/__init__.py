"""Shutterlock: seal every original; share only cloaked, stripped, watermarked derivatives."""

__version__ = "0.1.0"
