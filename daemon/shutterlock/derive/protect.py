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
from shutterlock.derive.signing import sign_rendered
from shutterlock.errors import ShutterlockError
from shutterlock.fsutil import atomic_writer
from shutterlock.provenance import SigningIdentity

from .outbox import Placed, place
from .pairs import skip_reason
from .render import DeriveJob, Outcome, Rendered
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
            rights: RightsConfig, cloak: CloakConfig, signer: SigningIdentity, strength: str | None = None,
            preview: bool = False, on_result: Callable[[Placed], None] | None = None) -> list[Placed]:
    """Derive every input into ``out_dir``, each signed by ``signer`` in this process before it is written;
    one result per input file, in input order.

    ``strength`` overrides ``cloak.strength``; ``on_result`` is called as each result arrives.
    Missing inputs come back as failed results.
    """
    files = expand_inputs(inputs)
    out_dir = out_dir.expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    if strength is not None:
        cloak = dataclasses.replace(cloak, strength=strength)
    candidates = set(files)
    results: list[Placed] = []
    with DeriveRunner(derive.time_limit) as runner:
        for path in files:
            if not path.is_file():
                result = Placed(Rendered(path, Outcome.FAILED, reason="no such file", cloak_strength=cloak.strength))
            elif reason := skip_reason(path, derive.pair_preference, candidates):
                result = Placed(Rendered(path, Outcome.SKIPPED, reason=reason, cloak_strength=cloak.strength))
            else:
                rendered = runner.run(DeriveJob(source=path, derive=derive, watermark=watermark, rights=rights,
                                                cloak=cloak, preview=preview))
                output = None
                if rendered.outcome is Outcome.WRITTEN:
                    try:
                        signed = sign_rendered(rendered, signer, rights)
                    except ShutterlockError as error:  # never written unsigned
                        rendered = dataclasses.replace(rendered, outcome=Outcome.FAILED,
                                                       reason=f"cannot sign: {error}")
                    else:
                        output = place(signed, out_dir, path.stem)
                        if rendered.preview:
                            with atomic_writer(preview_path(output), 0o644) as handle:
                                handle.write(rendered.preview)
                result = Placed(dataclasses.replace(rendered, jpeg=None, preview=b""), output)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def preview_path(output: Path) -> Path:
    """Where the cloak preview of the derivative at ``output`` goes."""
    return output.with_name(output.stem + ".preview.png")
