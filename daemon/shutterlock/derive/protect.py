"""One-shot ``shutterlock protect IN... --out DIR``: the daemon's pipeline, without the daemon.

Output is flat: ``DIR/NAME.jpg``, with ``NAME-2.jpg``, … when a name is taken (by an earlier run,
another input with the same stem, or any other file): nothing in ``DIR`` is ever overwritten.
Directories among the inputs are expanded recursively (sorted). RAW+JPEG pairs are matched among
the inputs only, so naming a RAW file explicitly derives it even if a JPEG sits next to it on disk.
Each file runs in the same time-limited worker process as in the daemon. With ``preview``, the
worker also renders the cloak preview (cloak/preview.py), written as ``NAME.preview.png`` beside
the derivative ``NAME.jpg``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig
from shutterlock.fsutil import atomic_writer

from .pipeline import SKIPPED, DeriveJob, DeriveResult, pair_partner, should_derive
from .runner import DeriveRunner


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given, directories walked recursively (hidden entries skipped), duplicates dropped."""
    seen: dict[Path, None] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if child.is_file() and not any(part.startswith(".") for part in relative.parts):
                    seen.setdefault(child, None)
        else:
            seen.setdefault(path, None)
    return list(seen)


def protect(inputs: list[Path], out_dir: Path, *, derive: DeriveConfig, watermark: WatermarkConfig,
            rights: RightsConfig, cloak: CloakConfig, strength: str | None = None, preview: bool = False,
            on_result: Callable[[DeriveResult], None] | None = None) -> list[DeriveResult]:
    """Derive every input into ``out_dir``; one result per input file, in input order.

    ``strength`` overrides ``cloak.strength``; ``on_result`` is called as each result arrives.
    Missing inputs come back as failed results.
    """
    files = expand_inputs(inputs)
    out_dir = out_dir.expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    derive = dataclasses.replace(derive, outbox=out_dir)
    if strength is not None:
        cloak = dataclasses.replace(cloak, strength=strength)
    candidates = set(files)
    results: list[DeriveResult] = []
    with DeriveRunner(derive.time_limit) as runner:
        for path in files:
            if not path.is_file():
                result = DeriveResult(path, "failed", reason="no such file", cloak_strength=cloak.strength)
            elif not should_derive(path, derive.pair_preference, candidates):
                partner = pair_partner(path, candidates)
                reason = f"RAW+JPEG pair: {partner.name} is derived instead" if partner else "not an image"
                result = DeriveResult(path, SKIPPED, reason=reason, cloak_strength=cloak.strength)
            else:
                job = DeriveJob(source=path, derive=derive, watermark=watermark, rights=rights, cloak=cloak,
                                layout="flat", check_pair=False, preview=preview)
                result = runner.run(job)
                if result.preview and result.output is not None:
                    write_preview(result.output, result.preview)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def preview_path(output: Path) -> Path:
    """Where the preview of the derivative at ``output`` goes."""
    return output.with_name(output.stem + ".preview.png")


def write_preview(output: Path, png: bytes) -> None:
    with atomic_writer(preview_path(output), 0o644) as handle:
        handle.write(png)
