"""Shares in the catalog: one row per share, its pictures, and the feedback its clients sent.

A share's secrets (the link secret, the share key, the feedback private key) are sealed with a
key derived from the master key before they touch the catalog, so a copy of the catalog file
alone (a backup, a snapshot) opens no gallery and reads no client's comments.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings as sodium

from shutterlock.catalog import Catalog
from shutterlock.share.crypto import Lock, ShareKeys
from shutterlock.vault.format import Keys, derive_key

LABEL_SECRETS = b"shutterlock/v1/share-secrets"
PUBLISHING, ACTIVE, EXPIRED, REVOKED = "publishing", "active", "expired", "revoked"
ENDED = (EXPIRED, REVOKED)


@dataclass(frozen=True)
class Secrets:
    keys: ShareKeys
    feedback_private: bytes  # PKCS#8 DER of the P-256 key clients encrypt their feedback to


@dataclass(frozen=True)
class Options:
    """What the photographer chose for this share."""

    title: str = ""
    message: str = ""
    download: bool = False
    feedback: bool = True
    uncloaked: bool = False  # the photographer allowed images whose cloak did not run

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Options:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ShareRow:
    id: int
    name: str
    sid: str
    state: str
    host_url: str
    endpoint: str
    public_url: str
    link: str  # without the fragment
    options: Options
    version: int
    lifecycle: bool
    rejected: int
    created_at: float
    updated_at: float
    expires_at: float
    link_expires_at: float | None
    post_expires_at: float | None
    ended_at: float | None
    cleared_at: float | None
    sealed: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class Item:
    item: str
    file_id: int
    position: int
    name: str
    date: str
    cloaked: bool
    width: int
    height: int
    thumb_width: int
    thumb_height: int
    thumb_key: str
    full_key: str
    digest: str


def _secrets_key(keys: Keys) -> bytes:
    return derive_key(keys.catalog, LABEL_SECRETS)


def seal_secrets(keys: Keys, secrets: Secrets) -> bytes:
    b64 = base64.b64encode
    share = secrets.keys
    data = json.dumps({"secret": b64(share.secret).decode(), "share_key": b64(share.share_key).decode(),
                       "lock": share.lock.to_json().decode(),
                       "feedback_private": b64(secrets.feedback_private).decode()}).encode()
    nonce = os.urandom(24)
    return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(data, share.sid.encode(), nonce,
                                                                     _secrets_key(keys))


def open_secrets(keys: Keys, sid: str, sealed: bytes) -> Secrets:
    data = json.loads(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[24:], sid.encode(), sealed[:24],
                                                                        _secrets_key(keys)))
    b64d = base64.b64decode
    share = ShareKeys(sid=sid, secret=b64d(data["secret"]), share_key=b64d(data["share_key"]),
                      lock=Lock.from_json(data["lock"].encode()))
    return Secrets(share, b64d(data["feedback_private"]))


def _share(row: Any) -> ShareRow:
    return ShareRow(id=row["id"], name=row["name"], sid=row["sid"], state=row["state"], host_url=row["host_url"],
                    endpoint=row["endpoint"], public_url=row["public_url"], link=row["link"],
                    options=Options.from_json(row["options"]), version=row["version"],
                    lifecycle=bool(row["lifecycle"]), rejected=row["rejected"], created_at=row["created_at"],
                    updated_at=row["updated_at"], expires_at=row["expires_at"],
                    link_expires_at=row["link_expires_at"], post_expires_at=row["post_expires_at"],
                    ended_at=row["ended_at"], cleared_at=row["cleared_at"], sealed=row["secrets"])


class ShareState:
    """The share tables, one short transaction per call (the catalog's own discipline)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self.catalog.transaction() as db:
            return db.execute(sql, args).fetchall()

    def get(self, name: str) -> ShareRow | None:
        rows = self._rows("SELECT * FROM shares WHERE name = ?", (name,))
        return _share(rows[0]) if rows else None

    def all(self) -> list[ShareRow]:
        return [_share(row) for row in self._rows("SELECT * FROM shares ORDER BY created_at, id")]

    def in_state(self, *states: str) -> list[ShareRow]:
        marks = ",".join("?" * len(states))
        return [_share(row) for row in self._rows(f"SELECT * FROM shares WHERE state IN ({marks}) ORDER BY id",
                                                  states)]

    def insert(self, *, name: str, sid: str, host_url: str, endpoint: str, public_url: str, sealed: bytes,
               options: Options, expires_at: float, link_expires_at: float | None) -> ShareRow:
        """Recorded before anything is uploaded, so objects of a half-published share can always be found."""
        now = time.time()
        with self.catalog.transaction() as db:
            db.execute("INSERT INTO shares (name, sid, state, host_url, endpoint, public_url, secrets, options, "
                       "created_at, updated_at, expires_at, link_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                       "?, ?)", (name, sid, PUBLISHING, host_url, endpoint, public_url, sealed, options.to_json(),
                                 now, now, expires_at, link_expires_at))
        row = self.get(name)
        assert row is not None
        return row

    def published(self, share: ShareRow, *, link: str, version: int, lifecycle: bool,
                  post_expires_at: float | None) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE shares SET state = ?, link = ?, version = ?, lifecycle = ?, post_expires_at = ?, "
                       "updated_at = ? WHERE id = ?",
                       (ACTIVE, link, version, int(lifecycle), post_expires_at, time.time(), share.id))

    def forget(self, share: ShareRow) -> None:
        """A share that never became active leaves no trace (its objects are already gone)."""
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM share_items WHERE share_id = ?", (share.id,))
            db.execute("DELETE FROM share_feedback WHERE share_id = ?", (share.id,))
            db.execute("DELETE FROM shares WHERE id = ?", (share.id,))

    def ended(self, share: ShareRow, state: str, lifecycle: bool) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE shares SET state = ?, ended_at = ?, lifecycle = ?, updated_at = ? WHERE id = ?",
                       (state, time.time(), int(lifecycle), time.time(), share.id))

    def rename(self, share: ShareRow, name: str) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE shares SET name = ? WHERE id = ?", (name, share.id))

    def cleared(self, share: ShareRow) -> None:
        """Nothing of the share is left in the bucket, not even the page saying it ended."""
        with self.catalog.transaction() as db:
            db.execute("UPDATE shares SET cleared_at = ?, lifecycle = 0 WHERE id = ?", (time.time(), share.id))

    def add_rejected(self, share: ShareRow, count: int) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE shares SET rejected = rejected + ? WHERE id = ?", (count, share.id))

    # ------------------------------------------------------------------ items

    def items(self, share: ShareRow) -> list[Item]:
        rows = self._rows("SELECT * FROM share_items WHERE share_id = ? ORDER BY position", (share.id,))
        return [Item(item=r["item"], file_id=r["file_id"], position=r["position"], name=r["name"], date=r["date"],
                     cloaked=bool(r["cloaked"]), width=r["width"], height=r["height"],
                     thumb_width=r["thumb_width"], thumb_height=r["thumb_height"], thumb_key=r["thumb_key"],
                     full_key=r["full_key"], digest=r["digest"]) for r in rows]

    def replace_items(self, share: ShareRow, items: list[Item]) -> None:
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM share_items WHERE share_id = ?", (share.id,))
            db.executemany(
                "INSERT INTO share_items (share_id, item, file_id, position, name, date, cloaked, width, height, "
                "thumb_width, thumb_height, thumb_key, full_key, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?)",
                [(share.id, i.item, i.file_id, i.position, i.name, i.date, int(i.cloaked), i.width, i.height,
                  i.thumb_width, i.thumb_height, i.thumb_key, i.full_key, i.digest) for i in items])
            db.execute("UPDATE shares SET updated_at = ? WHERE id = ?", (time.time(), share.id))

    # ------------------------------------------------------------------ feedback

    def record_feedback(self, share: ShareRow, *, visitor: str, seq: int, client_name: str, favourites: list[str],
                        comments: dict[str, str], note: str, sent_at: str) -> bool:
        """Keep each visitor's latest message (the viewer always sends its whole state). True if it was newer."""
        with self.catalog.transaction() as db:
            row = db.execute("SELECT seq FROM share_feedback WHERE share_id = ? AND visitor = ?",
                             (share.id, visitor)).fetchone()
            if row is not None and row["seq"] >= seq:
                return False
            db.execute("INSERT OR REPLACE INTO share_feedback (share_id, visitor, seq, client_name, favourites, "
                       "comments, note, sent_at, received_at, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                       (share.id, visitor, seq, client_name, json.dumps(favourites), json.dumps(comments), note,
                        sent_at, time.time()))
        return True

    def feedback(self, share: ShareRow) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM share_feedback WHERE share_id = ? ORDER BY received_at", (share.id,))
        return [{"visitor": r["visitor"], "seq": r["seq"], "name": r["client_name"],
                 "favourites": json.loads(r["favourites"]), "comments": json.loads(r["comments"]), "note": r["note"],
                 "sent_at": r["sent_at"], "received_at": r["received_at"], "new": not r["seen"]} for r in rows]

    def overview(self) -> list[dict[str, Any]]:
        """The active shares with their picture and feedback counts, in one query (for the status document)."""
        rows = self._rows(
            "SELECT s.name, s.state, s.expires_at, "
            "(SELECT COUNT(*) FROM share_items i WHERE i.share_id = s.id) AS images, "
            "(SELECT COUNT(*) FROM share_feedback f WHERE f.share_id = s.id) AS visitors, "
            "(SELECT COUNT(*) FROM share_feedback f WHERE f.share_id = s.id AND f.seen = 0) AS new_feedback "
            "FROM shares s WHERE s.state = ? ORDER BY s.created_at, s.id", (ACTIVE,))
        return [dict(row) for row in rows]

    def mark_seen(self, share: ShareRow) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE share_feedback SET seen = 1 WHERE share_id = ?", (share.id,))
