"""Shares: create, change, end and look after end-to-end encrypted client galleries.

The order of every operation is chosen so that a crash or a network failure never publishes
something unprotected or leaves something readable behind:

- create: the share is recorded (state ``publishing``) before the first upload; blobs go up,
  then the manifest, then the page; only then is the share ``active``. A failure deletes what went
  up and forgets the share; a crash leaves a ``publishing`` row that :meth:`Shares.maintain` cleans.
- end (revoke, expiry): feedback is collected first, then the page is replaced by the constant
  "ended" page and everything else is deleted; the page itself goes when the link can no longer
  reach it (a lifecycle rule, or :meth:`Shares.maintain` where the provider has none).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets as random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shutterlock.catalog import Catalog, Version
from shutterlock.config import Config, ShareConfig
from shutterlock.errors import ConfigError, OperationFailed, UsageError
from shutterlock.restore import matches
from shutterlock.share import crypto, feedback, images, qr, viewer
from shutterlock.share.host import PRESIGN_MAX, RULE_PREFIX, ShareHost, Upload
from shutterlock.share.select import Picture, Progress, SelectionError, select
from shutterlock.share.state import (
    ACTIVE,
    ENDED,
    EXPIRED,
    PUBLISHING,
    REVOKED,
    Item,
    Options,
    Secrets,
    ShareRow,
    ShareState,
    open_secrets,
    seal_secrets,
)
from shutterlock.vault.format import Keys
from shutterlock.vault.store import StoreError

log = logging.getLogger(__name__)

PAGE, MANIFEST = "index.html", "m"
ENDED_PAGE_DAYS = 30  # how long a public link keeps saying "ended" before nothing is left at all
FORM_REFRESH = 2 * 24 * 3600  # renew a long share's feedback form when it has less than this left
STALE_PUBLISHING = 3600.0
MIN_LIFETIME = 10.0  # seconds; an expiry closer than this is a mistake (a date in the past, a typo)
NAME_MAX = 100
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


class ShareError(OperationFailed):
    """A share operation could not be carried out; the message says what and why (exit 1)."""


class UnknownShare(UsageError):
    """No share has that name (exit 2)."""


def token(length: int) -> str:
    """A random lowercase base32 name: opaque, and safe in S3 keys and URLs."""
    return "".join(random.choice(_BASE32) for _ in range(length))


@dataclass(frozen=True)
class ShareInfo:
    """What the CLI, the daemon and the tray show about a share."""

    name: str
    state: str
    link: str  # with the key fragment; empty once the share has ended
    qr_png: str
    qr_svg: str
    created_at: float
    expires_at: float
    link_expires_at: float | None
    images: int
    uncloaked: int
    password: bool
    download: bool
    feedback: bool
    lifecycle: bool
    visitors: int
    favourites: int
    comments: int
    new_feedback: int
    rejected_feedback: int
    notes: list[str] = field(default_factory=list)  # what the photographer should know (clamped expiry, …)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Shares:
    """Every share operation; the façade holds one per command, the daemon one for its schedules."""

    def __init__(self, config: Config, catalog: Catalog, keys: Keys):
        self.config, self.catalog, self.keys = config, catalog, keys
        self.state = ShareState(catalog)
        self._hosts: dict[tuple[str, str], ShareHost] = {}

    @property
    def share_config(self) -> ShareConfig:
        """``[share]``, needed to publish; shares already published keep working without it."""
        if self.config.share is None:
            raise ConfigError(f"{self.config.paths.config_file.name}: [share]: not configured; add a [share] table "
                              'with url = "s3://BUCKET/PREFIX" (docs/SHARING.md)')
        return self.config.share

    def _settings(self, row: ShareRow) -> ShareConfig:
        """Where a share lives is its own (it was published there); tuning comes from today's config."""
        base = self.config.share or ShareConfig(url=row.host_url)
        return replace(base, url=row.host_url, endpoint=row.endpoint, public_url=row.public_url)

    # ------------------------------------------------------------------ helpers

    def _host(self, row: ShareRow | None = None) -> ShareHost:
        """The bucket a share lives in: where it was published, whatever the config says today."""
        settings = self.share_config if row is None else self._settings(row)
        where = (settings.url, settings.endpoint)
        if where not in self._hosts:
            self._hosts[where] = ShareHost.from_config(settings, self.config.paths)
        return self._hosts[where]

    def _row(self, name: str) -> ShareRow:
        row = self.state.get(name)
        if row is None:
            known = ", ".join(r.name for r in self.state.all()) or "none yet"
            raise UnknownShare(f"no share named {name!r} (shares: {known})")
        return row

    def _secrets(self, row: ShareRow) -> Secrets:
        return open_secrets(self.keys, row.sid, row.sealed)

    def _qr_paths(self, row: ShareRow) -> tuple[Path, Path]:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", row.name).strip("-.")[:40] or "share"
        folder = self.config.paths.state_dir / "shares"
        return folder / f"{stem}-{row.sid[:6]}.qr.png", folder / f"{stem}-{row.sid[:6]}.qr.svg"

    # ------------------------------------------------------------------ create

    def create(self, name: str, patterns: list[str], *, password: str | None = None,
               expires_at: float | None = None, download: bool = False, feedback_on: bool = True,
               allow_uncloaked: bool = False, title: str = "", message: str = "",
               progress: Progress | None = None) -> ShareInfo:
        """Publish a new gallery of the selected originals' protected derivatives."""
        name = name.strip()
        if not name or len(name) > NAME_MAX or any(ord(c) < 32 for c in name):
            raise ShareError(f"a share name must be 1 to {NAME_MAX} printable characters; got {name!r}")
        if password is not None and not password:
            raise ShareError("the password is empty")
        now = time.time()
        notes: list[str] = []
        earlier = self.state.get(name)
        if earlier is not None and earlier.state not in ENDED:
            raise ShareError(f"a share named {name!r} already exists (shutterlock share show {name})")
        asked = expires_at is not None
        expires_at = expires_at if expires_at is not None else now + self.share_config.expires_days * 86400
        if expires_at <= now + MIN_LIFETIME:
            raise ShareError(f"the expiry is in the past (or less than {MIN_LIFETIME:g} seconds away)")
        link_expires_at = None
        if not self.share_config.public_url:
            link_expires_at = now + PRESIGN_MAX
            if expires_at > link_expires_at:
                expires_at = link_expires_at
                if asked:
                    notes.append(f"presigned links last at most 7 days, so this share ends on {_day(expires_at)}; "
                                 "set [share] public_url for longer shares (docs/SHARING.md)")
        host = self._host()
        try:
            host.check()
        except StoreError as error:
            raise ShareError(f"cannot publish to {self.share_config.url}: {error}") from None
        options = Options(title=title.strip() or name, message=message.strip(), download=download,
                          feedback=feedback_on, uncloaked=allow_uncloaked)
        pictures, left_out = self._select(patterns, allow_uncloaked, progress)
        notes += left_out
        if earlier is not None:  # an ended share keeps its history (and its clients' feedback) under a new name
            notes.append(f"the earlier {name!r} ({earlier.state}) is now listed as {self._retire(earlier)!r}")
        sid = token(26)
        share_keys = crypto.ShareKeys.new(sid, password)
        feedback_key = crypto.new_feedback_key()
        sealed = seal_secrets(self.keys, Secrets(share_keys, crypto.private_bytes(feedback_key)))
        row = self.state.insert(name=name, sid=sid, host_url=self.share_config.url,
                                endpoint=self.share_config.endpoint, public_url=self.share_config.public_url,
                                sealed=sealed, options=options, expires_at=expires_at,
                                link_expires_at=link_expires_at)
        try:
            items = self._upload_pictures(row, share_keys, pictures, [], progress)
            self.state.replace_items(row, items)
            lifecycle = host.set_expiry_rule(sid, f"{sid}/", self._rule_until(row))
            if not lifecycle:
                notes.append("this bucket has no lifecycle rules: the share is deleted at expiry only if "
                             "Shutterlock is running then (or at its next start)")
            self._publish(row, items, lifecycle=lifecycle, page=True)
        except BaseException as error:
            self._discard(row)
            if isinstance(error, StoreError):
                raise ShareError(f"publishing {name!r} failed, nothing was left in the bucket: {error}") from None
            raise
        return self._info(self._row(name), notes)

    def _retire(self, row: ShareRow) -> str:
        when = datetime.fromtimestamp(row.ended_at or row.updated_at).strftime("%Y-%m-%d")
        base = f"{row.name} ({row.state} {when})"
        name, number = base, 1
        while self.state.get(name) is not None:
            number += 1
            name = f"{base} #{number}"
        self.state.rename(row, name)
        return name

    def _select(self, patterns: list[str], allow_uncloaked: bool,
                progress: Progress | None) -> tuple[list[Picture], list[str]]:
        try:
            return select(self.config, self.catalog, self.keys, patterns, allow_uncloaked=allow_uncloaked,
                          progress=progress)
        except SelectionError as error:
            raise ShareError(str(error)) from None

    def _upload_pictures(self, row: ShareRow, keys: crypto.ShareKeys, pictures: list[Picture], taken: list[Item],
                         progress: Progress | None) -> list[Item]:
        """Encrypt and upload both sizes of every picture; uploads overlap the next picture's preparation."""
        items: list[Item] = []
        total = len(pictures)

        def uploads() -> Iterator[Upload]:
            for index, picture in enumerate(pictures):
                if progress is not None:
                    progress(index, total, "encrypting and uploading")
                try:
                    prepared = images.prepare(picture.derivative, self._settings(row).thumb_edge)
                except images.ImageProblem as error:
                    raise ShareError(f"{picture.label}: {error}") from None
                thumb_key, full_key = f"o/{token(26)}", f"o/{token(26)}"
                items.append(Item(item=token(10), file_id=picture.file_id, position=len(taken) + index,
                                  name=picture.name, date=picture.date, cloaked=picture.cloaked,
                                  width=prepared.width, height=prepared.height, thumb_width=prepared.thumb_width,
                                  thumb_height=prepared.thumb_height, thumb_key=thumb_key, full_key=full_key,
                                  digest=hashlib.sha256(prepared.full).hexdigest()))
                yield Upload(f"{row.sid}/{thumb_key}", crypto.seal_blob(keys, thumb_key, prepared.thumb))
                yield Upload(f"{row.sid}/{full_key}", crypto.seal_blob(keys, full_key, prepared.full))

        self._host(row).put_many(uploads())
        if progress is not None:
            progress(total, total, "encrypting and uploading")
        return taken + items

    def _publish(self, row: ShareRow, items: list[Item], *, lifecycle: bool, page: bool) -> None:
        """Write the manifest (and, for a new share, the page), then mark the share active."""
        host = self._host(row)
        secrets = self._secrets(row)
        now = time.time()
        post_until = min(row.expires_at, now + PRESIGN_MAX)
        presigned = not row.public_url

        def locate(key: str) -> dict[str, str]:
            ref = {"n": key}
            if presigned:
                ref["u"] = host.presign_get(f"{row.sid}/{key}", int(row.expires_at - now))
            return ref

        post: dict[str, Any] | None = None
        if row.options.feedback:
            post = host.presign_post(f"{row.sid}/f/", self._settings(row).feedback_bytes, int(post_until - now))
        manifest = self._manifest(row, secrets, items, locate, post, post_until)
        host.put(Upload(f"{row.sid}/{MANIFEST}", crypto.seal_manifest(secrets.keys, manifest),
                        cache_control="no-cache"))
        link = row.link
        if page:
            if presigned:
                manifest_url = host.presign_get(f"{row.sid}/{MANIFEST}", int(row.expires_at - now))
                link = host.presign_get(f"{row.sid}/{PAGE}", int((row.link_expires_at or row.expires_at) - now))
            else:
                manifest_url = MANIFEST
                link = host.public_link(f"{row.sid}/{PAGE}")
            host.put(Upload(f"{row.sid}/{PAGE}", viewer.page(row.sid, manifest_url, post["url"] if post else ""),
                            content_type="text/html; charset=utf-8", cache_control="no-cache"))
        self.state.published(row, link=link, version=row.version + 1, lifecycle=lifecycle,
                             post_expires_at=post_until if post else None)

    def _manifest(self, row: ShareRow, secrets: Secrets, items: list[Item], locate: Callable[[str], dict[str, str]],
                  post: dict[str, Any] | None, post_until: float) -> dict[str, Any]:
        rights = self.config.rights
        creator = rights.creator.strip()
        year = datetime.fromtimestamp(row.created_at).year
        copyright_text = rights.copyright.strip() or (f"© {year} {creator}. All rights reserved." if creator else "")
        manifest: dict[str, Any] = {
            "v": 1, "sid": row.sid, "version": row.version + 1, "title": row.options.title,
            "message": row.options.message, "photographer": creator, "rights": copyright_text,
            "constraints": rights.other_constraints.strip(), "data_mining": rights.data_mining,
            "created": _iso(row.created_at), "updated": _iso(time.time()), "expires": _iso(row.expires_at),
            "download": row.options.download,
            "images": [{"id": i.item, "name": i.name, "date": i.date, "w": i.width, "h": i.height,
                        "tw": i.thumb_width, "th": i.thumb_height, "cloaked": i.cloaked,
                        "t": locate(i.thumb_key), "f": locate(i.full_key)} for i in items],
            "feedback": None,
        }
        if post is not None:
            point = crypto.public_point(crypto.load_private(secrets.feedback_private))
            manifest["feedback"] = {"key": crypto.b64url(point), "post": post,
                                    "prefix": self._host(row).key(f"{row.sid}/f/"),
                                    "max": self._settings(row).feedback_bytes, "until": _iso(post_until)}
        return manifest

    def _discard(self, row: ShareRow) -> None:
        """Undo a publication that did not finish: its objects, its rule, its row."""
        host = self._host(row)
        try:
            host.delete_under(f"{row.sid}/")
            host.drop_expiry_rule(row.sid)
        except StoreError:
            return  # the row stays 'publishing'; maintain() tries again later
        self.state.forget(row)

    # ------------------------------------------------------------------ change

    def add(self, name: str, patterns: list[str], progress: Progress | None = None) -> ShareInfo:
        row = self._active(name)
        current = self.state.items(row)
        pictures, notes = self._select(patterns, row.options.uncloaked, progress)
        present = {i.file_id for i in current}
        new = [p for p in pictures if p.file_id not in present]
        if not new:
            raise ShareError(f"every picture matching {' '.join(patterns)} is already in {name!r}")
        try:
            items = self._upload_pictures(row, self._secrets(row).keys, new, current, progress)
            self._publish(row, items, lifecycle=row.lifecycle, page=False)
        except BaseException:
            # The link still shows the previous manifest; the new pictures' blobs must not linger unreferenced.
            known = {f"{row.sid}/{key}" for item in current for key in (item.thumb_key, item.full_key)}
            host = self._host(row)
            with contextlib.suppress(StoreError):
                host.delete([key for key, _ in host.list(f"{row.sid}/o/") if key not in known])
            raise
        self.state.replace_items(row, items)
        return self._info(self._row(name), notes)

    def remove(self, name: str, patterns: list[str]) -> ShareInfo:
        row = self._active(name)
        current = self.state.items(row)
        paths = self._paths(current)
        gone = [i for i in current if i.file_id in paths and matches(
            Version(*paths[i.file_id], content_id="", size=0, mtime_ns=0, sealed_at=0, capture_time=None), patterns)]
        if not gone:
            raise ShareError(f"nothing in {name!r} matches {' '.join(patterns)}")
        kept = [replace(i, position=n) for n, i in enumerate(x for x in current if x not in gone)]
        if not kept:
            raise ShareError(f"that would leave {name!r} empty; revoke it instead (shutterlock share revoke {name})")
        self.state.replace_items(row, kept)
        self._publish(row, kept, lifecycle=row.lifecycle, page=False)
        self._host(row).delete(f"{row.sid}/{key}" for i in gone for key in (i.thumb_key, i.full_key))
        return self._info(self._row(name), [f"removed {len(gone)} picture(s)"])

    def _active(self, name: str) -> ShareRow:
        row = self._row(name)
        if row.state != ACTIVE:
            raise ShareError(f"share {name!r} is {row.state}; it cannot be changed")
        return row

    def _paths(self, items: list[Item]) -> dict[int, tuple[str, str]]:
        with self.catalog.transaction() as db:
            rows = [db.execute("SELECT id, source, relpath FROM files WHERE id = ?", (i.file_id,)).fetchone()
                    for i in items]
        return {r["id"]: (r["source"], r["relpath"]) for r in rows if r is not None}

    # ------------------------------------------------------------------ end

    def revoke(self, name: str) -> ShareInfo:
        """Delete every object of the share now; the link then shows the "ended" page."""
        row = self._row(name)
        if row.state in ENDED:
            raise ShareError(f"share {name!r} already {row.state}")
        self._end(row, REVOKED)
        return self._info(self._row(name))

    def _end(self, row: ShareRow, state: str) -> None:
        host = self._host(row)
        if row.state == ACTIVE and row.options.feedback:
            # Ending must not wait for the clients' messages; the deletion below is what matters.
            with contextlib.suppress(StoreError):
                feedback.collect(host, self.state, row, self._secrets(row), self._item_ids(row))
        host.put(Upload(f"{row.sid}/{PAGE}", viewer.ended_page(), content_type="text/html; charset=utf-8",
                        cache_control="no-cache"))
        host.delete_under(f"{row.sid}/", keep=frozenset({f"{row.sid}/{PAGE}"}))
        lifecycle = host.set_expiry_rule(row.sid, f"{row.sid}/", self._ended_page_until(row, time.time()))
        self.state.ended(row, state, lifecycle)
        for path in self._qr_paths(row):
            path.unlink(missing_ok=True)

    def _rule_until(self, row: ShareRow) -> float:
        """When the provider deletes what is left: an active share's end (a presigned one's link end: its content
        URLs stop working at expiry anyway), or an ended share's ended page's end."""
        if row.state in ENDED:
            return self._ended_page_until(row, row.ended_at or time.time())
        return row.link_expires_at if row.link_expires_at is not None else row.expires_at

    def _ended_page_until(self, row: ShareRow, ended_at: float) -> float:
        """A presigned link dies on its own; a public one says "ended" for a while, then nothing is left."""
        return row.link_expires_at if row.link_expires_at is not None else ended_at + ENDED_PAGE_DAYS * 86400

    def _item_ids(self, row: ShareRow) -> dict[str, Item]:
        return {i.item: i for i in self.state.items(row)}

    def maintain(self, now: float | None = None) -> list[str]:
        """The daemon's schedule: end expired shares, renew long shares' feedback forms, clear ended pages,
        finish discarding interrupted publications. Returns what it did (or could not do yet), one line each;
        a bucket that fails for one share does not stop the others, and every step is retried next time."""
        now = time.time() if now is None else now
        done: list[str] = []

        def attempt(row: ShareRow, what: str, step: Callable[[], object]) -> None:
            try:
                step()
            except StoreError as error:
                done.append(f"{row.name}: could not {what} yet ({error}); will retry")
                return
            done.append(f"{row.name}: {what}")

        for row in self.state.in_state(ACTIVE):
            if row.expires_at <= now:
                attempt(row, "expire (its objects were deleted)", lambda row=row: self._end(row, EXPIRED))
            elif (row.options.feedback and row.post_expires_at is not None
                  and row.post_expires_at - now < FORM_REFRESH and row.post_expires_at < row.expires_at):
                attempt(row, "renew the feedback form", lambda row=row: self._publish(
                    row, self.state.items(row), lifecycle=row.lifecycle, page=False))
        for row in self.state.in_state(*ENDED):
            if row.cleared_at is None and self._ended_page_until(row, row.ended_at or now) <= now:
                attempt(row, "clear the ended page (nothing of it is left in the bucket)",
                        lambda row=row: self._clear(row))
        for row in self.state.in_state(PUBLISHING):
            if row.created_at < now - STALE_PUBLISHING:
                attempt(row, "clean up an interrupted publication", lambda row=row: self._discard(row))
        self._restore_rules(attempt)
        return done

    def _restore_rules(self, attempt: Callable[[ShareRow, str, Callable[[], object]], None]) -> None:
        """A bucket's rules are one document that others edit too (another machine, a console, the CLI while
        the daemon runs); put back any share rule lost on the way, so expiry never depends on this machine."""
        rows = [r for r in self.state.in_state(ACTIVE, *ENDED) if r.lifecycle and r.cleared_at is None]
        for where in {(r.host_url, r.endpoint) for r in rows}:
            group = [r for r in rows if (r.host_url, r.endpoint) == where]
            host = self._host(group[0])
            try:
                rules = host.expiry_rules()
            except StoreError:
                continue  # unreachable now: the next pass looks again
            present = {str(rule.get("ID", "")) for rule in rules or []}
            for row in group:
                if rules is not None and RULE_PREFIX + row.sid not in present:
                    attempt(row, "restore its lifecycle rule", lambda row=row, host=host: host.set_expiry_rule(
                        row.sid, f"{row.sid}/", self._rule_until(row)))

    def _clear(self, row: ShareRow) -> None:
        host = self._host(row)
        host.delete_under(f"{row.sid}/")
        host.drop_expiry_rule(row.sid)
        self.state.cleared(row)

    # ------------------------------------------------------------------ feedback

    def collect_feedback(self, name: str | None = None) -> int:
        """Fetch, decrypt and store new client messages (deleting them from the bucket); returns how many.

        For one share, a bucket error is raised; for all of them (the daemon's schedule) it is logged and
        the other shares are still collected.
        """
        rows = [self._row(name)] if name else self.state.in_state(ACTIVE)
        total = 0
        for row in rows:
            if row.state == ACTIVE and row.options.feedback:
                try:
                    total += feedback.collect(self._host(row), self.state, row, self._secrets(row),
                                              self._item_ids(row))
                except StoreError as error:
                    if name:
                        raise ShareError(f"collecting feedback for {row.name!r}: {error}") from None
                    log.warning("collecting feedback for share %r: %s; will retry", row.name, error)
        return total

    def feedback(self, name: str, *, mark_seen: bool = True) -> list[dict[str, Any]]:
        """Every visitor's latest favourites and comments, with the pictures named as the photographer knows them."""
        row = self._row(name)
        if row.state == ACTIVE:
            self.collect_feedback(name)
        items = self._item_ids(row)
        paths = self._paths(list(items.values()))

        def picture(item_id: str) -> dict[str, str]:
            item = items.get(item_id)
            if item is None:
                return {"item": item_id, "name": "(removed from the share)", "path": ""}
            source, relpath = paths.get(item.file_id, ("", item.name))
            return {"item": item_id, "name": item.name, "path": f"{source}/{relpath}" if source else relpath}

        out = []
        for entry in self.state.feedback(row):
            out.append({**entry, "favourites": [picture(i) for i in entry["favourites"]],
                        "comments": [{**picture(i), "text": text} for i, text in entry["comments"].items()]})
        if mark_seen:
            self.state.mark_seen(row)
        return out

    # ------------------------------------------------------------------ looking

    def list(self) -> list[ShareInfo]:
        return [self._info(row) for row in self.state.all()]

    def show(self, name: str) -> ShareInfo:
        return self._info(self._row(name))

    def _info(self, row: ShareRow, notes: list[str] | None = None) -> ShareInfo:
        items = self.state.items(row)
        link, png, svg = "", "", ""
        if row.state == ACTIVE:
            link = f"{row.link}#{self._secrets(row).keys.fragment}"
            png_path, svg_path = self._qr_paths(row)
            if not (png_path.exists() and svg_path.exists()):
                qr.write(link, png_path.parent, png_path.name.removesuffix(".qr.png"))
            png, svg = str(png_path), str(svg_path)
        entries = self.state.feedback(row)
        return ShareInfo(
            name=row.name, state=row.state, link=link, qr_png=png, qr_svg=svg, created_at=row.created_at,
            expires_at=row.expires_at, link_expires_at=row.link_expires_at, images=len(items),
            uncloaked=sum(1 for i in items if not i.cloaked), password=self._secrets(row).keys.lock.password,
            download=row.options.download, feedback=row.options.feedback, lifecycle=row.lifecycle,
            visitors=len(entries), favourites=sum(len(e["favourites"]) for e in entries),
            comments=sum(len(e["comments"]) + bool(e["note"]) for e in entries),
            new_feedback=sum(1 for e in entries if e["new"]), rejected_feedback=row.rejected, notes=notes or [])


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _day(when: float) -> str:
    return datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M")
