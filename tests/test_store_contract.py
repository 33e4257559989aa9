"""Issue 17 item 9: one contract for the Store interface, run against every backend we ship.

The local vault, moto's S3 server and SeaweedFS (a real S3 implementation) must behave the same for
what the program relies on: put, get, exists, list, delete, conditional writes, multipart resume and the
refusal of damaged objects, as restic runs one suite against every backend.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import S3_ENV, Backend, S3Server
from shutterlock.config import S3Config, resolve_paths
from shutterlock.vault.format import FormatError, Keys, ObjectMeta, authenticate, seal_stream
from shutterlock.vault.local import LocalStore
from shutterlock.vault.s3 import S3Store
from shutterlock.vault.store import ObjectMissing

KEYS = Keys.from_master(b"\x07" * 32)


def sealed(folder: Path, size: int, chunk: int = 1 << 20) -> tuple[str, Path]:
    data = os.urandom(size)
    meta = ObjectMeta(source="s", path=f"f{size}.raw", size=size, mtime_ns=0, sealed_at=time.time())
    path = folder / f"sealed-{size}-{os.urandom(4).hex()}"
    with open(path, "wb") as out:
        result = seal_stream(KEYS, meta, io.BytesIO(data), out, chunk)
    return result.content_id, path


def s3_store(backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Store:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    config = S3Config(url=f"s3://{backend.bucket}/contract", endpoint=backend.endpoint, addressing_style="path")
    return S3Store.from_config(config, resolve_paths(tmp_path / "config.toml"))


@pytest.fixture(params=["local", "moto", "seaweedfs"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if request.param == "local":
        vault = LocalStore(tmp_path / "vault")
        vault.create()
        yield vault
        return
    yield s3_store(backend(request.param, request, tmp_path), monkeypatch, tmp_path)


def backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh bucket: on a moto server of this test's own, or on the session's SeaweedFS."""
    if kind == "moto":
        server = S3Server(tmp_path)
        server.start()
        request.addfinalizer(server.stop)
    else:
        server = request.getfixturevalue("weed_server")
    bucket = f"contract-{os.urandom(6).hex()}"
    server.create_bucket(bucket)
    return Backend(kind, server, bucket)


def raw_bytes(store: Any, object_id: str) -> bytes:
    with store.open(object_id) as handle:
        return handle.read()


def overwrite_raw(store: Any, object_id: str, data: bytes) -> None:
    """Damage an object behind the store's back (a disk error, a provider's bug, an attacker)."""
    if isinstance(store, LocalStore):
        store.path_of(object_id).write_bytes(data)
    else:
        store._client.put_object(Bucket=store.bucket, Key=store.object_key(object_id), Body=data)


def test_put_get_exists_list_delete(store, tmp_path):
    ids = {}
    for size in (0, 1000, (1 << 20) * 3):  # empty, small, several chunks
        object_id, path = sealed(tmp_path, size)
        assert not store.exists(object_id)
        assert store.put_file(object_id, path) is True
        assert store.exists(object_id)
        assert raw_bytes(store, object_id) == path.read_bytes()
        ids[object_id] = path
    assert sorted(store.list()) == sorted(ids)
    first = next(iter(ids))
    store.delete(first)
    assert not store.exists(first) and first not in set(store.list())
    store.delete(first)  # deleting what is gone is not an error
    with pytest.raises(ObjectMissing):
        store.open(first)


def test_writes_are_conditional(store, tmp_path):
    object_id, path = sealed(tmp_path, 5000)
    assert store.put_file(object_id, path) is True
    impostor = tmp_path / "impostor"
    impostor.write_bytes(os.urandom(len(path.read_bytes())))
    assert store.put_file(object_id, impostor) is False
    assert raw_bytes(store, object_id) == path.read_bytes(), "an existing object is never overwritten"
    if isinstance(store, S3Store):  # the conditional PUT itself, with no HEAD before it
        store._put_small(store.object_key(object_id), impostor, impostor.stat().st_size)
        assert raw_bytes(store, object_id) == path.read_bytes()
    assert store.put_file(object_id, path, replace=True) is True  # a repair replaces on purpose


def test_damage_is_detected(store, tmp_path):
    object_id, path = sealed(tmp_path, (1 << 20) + 77)
    store.put_file(object_id, path)
    good = path.read_bytes()
    truncated, flipped, extended = good[:-1], good[:500] + bytes([good[500] ^ 1]) + good[501:], good + b"\0"
    for damaged in (truncated, flipped, extended):
        overwrite_raw(store, object_id, damaged)
        with pytest.raises(FormatError), store.open(object_id) as handle:
            authenticate(KEYS, handle, object_id)
    _, other = sealed(tmp_path, 999)
    overwrite_raw(store, object_id, other.read_bytes())  # a swapped object: authentic, but not this one
    with pytest.raises(FormatError), store.open(object_id) as handle:
        authenticate(KEYS, handle, object_id)


class CountingClient:
    """The real boto3 client, counting the parts it is asked to upload (test-side instrumentation)."""

    def __init__(self, client: Any):
        self._client, self.parts = client, []

    def upload_part(self, **kwargs: Any) -> Any:
        self.parts.append(kwargs["PartNumber"])
        return self._client.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Journal:
    def __init__(self) -> None:
        self.uploads: dict[tuple[str, str], tuple[str, int, float]] = {}

    def upload_for(self, content_id: str, store: str) -> tuple[str, int, float] | None:
        return self.uploads.get((content_id, store))

    def remember_upload(self, content_id: str, store: str, upload_id: str, part_size: int) -> None:
        self.uploads[(content_id, store)] = (upload_id, part_size, time.time())

    def forget_upload(self, content_id: str, store: str) -> None:
        self.uploads.pop((content_id, store), None)


@pytest.mark.parametrize("kind", ["moto", "seaweedfs"])
def test_multipart_upload_resumes_where_it_stopped(kind, request, tmp_path, monkeypatch):
    store = s3_store(backend(kind, request, tmp_path), monkeypatch, tmp_path)
    object_id, path = sealed(tmp_path, 40 << 20)
    layout = store.part_layout(path)
    assert len(layout) == 3 and all(length >= 5 << 20 for _, length in layout[:-1])
    # A crash after the first part: the upload exists on the server and in the journal.
    journal = Journal()
    key = store.object_key(object_id)
    upload_id = store._client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    journal.remember_upload(object_id, store.name, upload_id, layout[0][1])
    with open(path, "rb") as handle:
        store._client.upload_part(Bucket=store.bucket, Key=key, UploadId=upload_id, PartNumber=1,
                                  Body=handle.read(layout[0][1]))
    counting = CountingClient(store._client)
    store._client = counting
    store.upload_multipart(object_id, path, journal)
    assert counting.parts == [2, 3], "only the parts the server lacks are sent again"
    assert journal.upload_for(object_id, store.name) is None
    assert raw_bytes(store, object_id) == path.read_bytes()
    with store.open(object_id) as handle:
        authenticate(KEYS, handle, object_id)
