"""Publish a built site to an S3 prefix or a folder, sending only what changed.

The target keeps the list of what it holds (``.shutterlock-site.json``: path → SHA-256, public files
only) so a publish compares against it instead of downloading anything. Images are content-addressed
and immutable: one already there is never sent again. Order matters for visitors during a publish:
images first, then pages, then deletions, then the list; a page never links to an image not yet there.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shutterlock.config import Paths, S3Config
from shutterlock.fsutil import atomic_write_bytes, fsync_dir

from .build import INDEX_FILE, SiteError

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".jpg": "image/jpeg", ".txt": "text/plain; charset=utf-8", ".json": "application/json"}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=300"


@dataclass
class PublishReport:
    target: str
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0


def plan(built: dict[str, str], published: dict[str, str]) -> tuple[list[str], list[str]]:
    """(files to send, images first; files to delete) to turn ``published`` into ``built``."""
    send = [path for path, digest in built.items()
            if path not in published or (published[path] != digest and not path.startswith("img/"))]
    send.sort(key=lambda path: (not path.startswith("img/"), path))
    return send, sorted(set(published) - set(built))


def publish(site_dir: Path, url: str, *, paths: Paths, endpoint: str = "") -> PublishReport:
    """Bring ``url`` (``s3://BUCKET/PREFIX`` or a folder) up to date with the site built in ``site_dir``."""
    try:
        built = json.loads((site_dir / INDEX_FILE).read_text())
    except (OSError, ValueError):
        raise SiteError(f"{site_dir}: no built site to publish (its {INDEX_FILE} is missing)") from None
    if url.startswith("s3://"):
        return _S3Target(S3Config(url=url, endpoint=endpoint, addressing_style="path" if endpoint else "auto"),
                         paths).sync(site_dir, built)
    return _publish_folder(site_dir, built, Path(url).expanduser())


def _publish_folder(site_dir: Path, built: dict[str, str], target: Path) -> PublishReport:
    report = PublishReport(target=str(target))
    index = target / INDEX_FILE
    published: dict[str, str] = {}
    if index.exists():
        published = _index(index.read_bytes(), str(index))
    elif target.exists() and any(target.iterdir()):
        raise SiteError(f"{target}: not empty and not a published Shutterlock site; choose an empty folder")
    send, delete = plan(built, published)
    for path in send:
        atomic_write_bytes(target / path, (site_dir / path).read_bytes(), mode=0o644)
        os.chmod((target / path).parent, 0o755)
        report.uploaded.append(path)
    for path in delete:
        with contextlib.suppress(FileNotFoundError):
            (target / path).unlink()
            fsync_dir((target / path).parent)
        report.deleted.append(path)
    atomic_write_bytes(index, json.dumps(built, indent=1, sort_keys=True).encode(), mode=0o644)
    os.chmod(target, 0o755)
    report.unchanged = len(built) - len(send)
    return report


def _index(data: bytes, origin: str) -> dict[str, str]:
    try:
        raw = json.loads(data)
    except ValueError:
        raise SiteError(f"{origin}: the published file list is damaged; delete it to publish everything again") \
            from None
    if not isinstance(raw, dict):
        raise SiteError(f"{origin}: the published file list is damaged; delete it to publish everything again")
    return {str(k): str(v) for k, v in raw.items()}


class _S3Target:
    def __init__(self, config: S3Config, paths: Paths):
        from shutterlock.vault.s3 import client_for

        self.config, self.bucket, self.prefix = config, config.bucket, config.prefix
        self.client = client_for(config, paths)

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        from shutterlock.vault.s3 import classify

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as error:
            raise SiteError(f"{self.config.url}: {classify(error, self.bucket, self.config.endpoint)}") from None

    def _published(self) -> dict[str, str]:
        from botocore.exceptions import ClientError

        try:
            body = self._call("get_object", Key=self.key(INDEX_FILE))["Body"].read()
        except SiteError as error:
            cause = error.__context__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return {}  # nothing published here yet
            raise
        return _index(body, f"{self.config.url}/{INDEX_FILE}")

    def sync(self, site_dir: Path, built: dict[str, str]) -> PublishReport:
        report = PublishReport(target=self.config.url)
        send, delete = plan(built, self._published())
        for path in send:
            self._call("put_object", Key=self.key(path), Body=(site_dir / path).read_bytes(),
                       ContentType=CONTENT_TYPES.get(Path(path).suffix, "application/octet-stream"),
                       CacheControl=IMMUTABLE if path.startswith("img/") else REVALIDATE)
            report.uploaded.append(path)
        for path in delete:
            self._call("delete_object", Key=self.key(path))
            report.deleted.append(path)
        self._call("put_object", Key=self.key(INDEX_FILE), Body=json.dumps(built, sort_keys=True).encode(),
                   ContentType="application/json", CacheControl="no-cache")
        report.unchanged = len(built) - len(send)
        return report
