"""The S3 replica: the same content-addressed store, in a bucket the photographer owns.

Written for S3-compatible services first (MinIO, Garage, B2, Wasabi, Ceph): checksums only when
required, conditional writes used where they work and replaced by a HEAD where they do not, and
path-style addressing available. Large objects go up as multipart uploads whose parts are aligned
to the object's encryption chunks and whose progress is journaled, so they resume after a crash.
Credentials come from boto3's usual chain or from ``$CREDENTIALS_DIRECTORY``; they are never
logged or passed on a command line.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from shutterlock.config import Credential, Paths, S3Config
from shutterlock.vault.format import HEAD_SIZE, parse_head
from shutterlock.vault.store import OBJECT_ID, NamedBlobs, ObjectMissing, StoreError, check_id

log = logging.getLogger(__name__)

# Below this a sealed object goes up in one streamed PUT (fewer requests, nothing to resume worth the
# bookkeeping); above it, in resumable parts of about TARGET_PART bytes.
MULTIPART_THRESHOLD = 64 << 20
TARGET_PART = 16 << 20
ENVELOPE_KEY = "key-envelope.json"
CATALOG_KEY = "catalog/latest"

READ_ATTEMPTS = 8  # consecutive broken reads (no byte received in between) before a download fails
READ_BACKOFF = (0.25, 8.0)  # first and longest wait before a download is resumed
READ_PIECE = 1 << 16

OFFLINE_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                  "ProxyConnectionError", "SSLError")


class UploadJournal(Protocol):
    """Where multipart progress is remembered between runs (the catalog)."""

    def upload_for(self, content_id: str, store: str) -> tuple[str, int, float] | None: ...
    def remember_upload(self, content_id: str, store: str, upload_id: str, part_size: int) -> None: ...
    def forget_upload(self, content_id: str, store: str) -> None: ...


class _Throttle:
    """A shared byte budget per second, so uploads respect ``bandwidth_limit``."""

    def __init__(self, rate: int):
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def spend(self, size: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + size / self.rate
            wait = start - now
        if wait > 0:
            time.sleep(wait)


def classify(error: Exception, bucket: str, endpoint: str) -> StoreError:
    """A specific, user-facing message for what went wrong with the bucket."""
    import botocore.exceptions as bex

    name = type(error).__name__
    where = endpoint or "AWS S3"
    if isinstance(error, bex.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                    "ExpiredToken", "403") or status == 403:
            return StoreError(f"S3 credentials rejected by {where} ({code or status})", transient=False)
        if code == "NoSuchBucket":
            return StoreError(f"bucket {bucket!r} does not exist at {where}", transient=False)
        if code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout") or status >= 500:
            return StoreError(f"{where} is struggling ({code or status}); will retry", transient=True)
        return StoreError(f"S3 error from {where}: {code or status}", transient=True)
    if isinstance(error, bex.NoCredentialsError):
        return StoreError("no S3 credentials: set them in the environment, an AWS profile, or "
                          f"$CREDENTIALS_DIRECTORY/{Credential.S3_ACCESS_KEY}", transient=False)
    if name in OFFLINE_ERRORS or isinstance(error, (bex.EndpointConnectionError, bex.ConnectionError)):
        return OfflineError(f"cannot reach {where}: {name}")
    return StoreError(f"S3 request to {where} failed: {name}", transient=True)


class OfflineError(StoreError):
    """The endpoint cannot be reached at all: the bucket is offline, not broken."""

    def __init__(self, message: str):
        super().__init__(message, transient=True)


class S3Store(NamedBlobs):
    name = "s3"

    def __init__(self, config: S3Config, client: Any):
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix
        self._client = client
        self._throttle = _Throttle(config.bandwidth_limit)
        self._conditional_puts = True

    @classmethod
    def from_config(cls, config: S3Config, paths: Paths) -> S3Store:
        return cls(config, client_for(config, paths))

    # ------------------------------------------------------------------ keys

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def object_key(self, object_id: str) -> str:
        check_id(object_id)
        return self.key(f"objects/{object_id[:2]}/{object_id}")

    def _call(self, method: str, *, missing: str = "", **kwargs: Any) -> Any:
        """Call the client; ``missing`` names the thing to report when a key does not exist."""
        try:
            return getattr(self._client, method)(Bucket=self.bucket, **kwargs)
        except Exception as error:
            if not is_boto_error(error):
                raise
            if missing and error_code(error) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(missing, f"s3://{self.bucket}/{self.prefix}") from None
            raise classify(error, self.bucket, self.config.endpoint) from error

    # ------------------------------------------------------------------ Store interface

    def check(self) -> None:
        """Fail fast with a specific error if the bucket is unreachable, missing or refuses us."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as error:
            if not is_boto_error(error):
                raise
            if error_code(error) in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(f"bucket {self.bucket!r} does not exist at {self.config.endpoint or 'AWS S3'}",
                                 transient=False) from error
            raise classify(error, self.bucket, self.config.endpoint) from error

    def exists(self, object_id: str) -> bool:
        return self.exists_key(self.object_key(object_id))

    def exists_key(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception as error:
            if not is_boto_error(error):
                raise
            if error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise classify(error, self.bucket, self.config.endpoint) from error

    def put_file(self, object_id: str, sealed: Path, journal: UploadJournal | None = None, *,
                 replace: bool = False) -> bool:
        """Upload unless the object is there (``replace``: a damaged copy is overwritten)."""
        key = self.object_key(object_id)
        if not replace and self.exists_key(key):
            if journal is not None:
                journal.forget_upload(object_id, self.name)
            return False
        size = sealed.stat().st_size
        if size <= MULTIPART_THRESHOLD:
            self._put_small(key, sealed, size, conditional=not replace)
        else:
            self.upload_multipart(object_id, sealed, journal)
        return True

    def put_bytes(self, name: str, data: bytes) -> None:
        self._throttle.spend(len(data))
        self._call("put_object", Key=self.key(name), Body=data, **self._class_args())

    def get_bytes(self, name: str) -> bytes:
        with self.open_key(self.key(name), missing=name) as body:
            return body.read()

    def list_names(self, under: str) -> list[str]:
        """Names (relative to the prefix) of every key below ``under``, e.g. ``catalog/snapshots/``."""
        paginator = self._client.get_paginator("list_objects_v2")
        base = self.key("")
        try:
            return [item["Key"][len(base):] for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(under))
                    for item in page.get("Contents", [])]
        except Exception as error:
            if is_boto_error(error):
                raise classify(error, self.bucket, self.config.endpoint) from error
            raise

    def delete_name(self, name: str) -> None:
        self._call("delete_object", Key=self.key(name))

    def _class_args(self) -> dict[str, str]:
        return {"StorageClass": self.config.storage_class} if self.config.storage_class else {}

    def _put_small(self, key: str, sealed: Path, size: int, *, conditional: bool = True) -> None:
        """One streamed PUT, conditional where the service supports it."""
        self._throttle.spend(size)
        if conditional and self._conditional_puts:
            try:
                with open(sealed, "rb") as body:
                    self._client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                                            **self._class_args())
                return
            except Exception as error:
                if not is_boto_error(error):
                    raise
                code = error_code(error)
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    return  # someone (us, before a crash) already stored it: content-addressed, so identical
                if code in ("NotImplemented", "501", "InvalidArgument", "400"):
                    log.info("the S3 service does not support conditional writes; using HEAD before PUT")
                    self._conditional_puts = False
                else:
                    raise classify(error, self.bucket, self.config.endpoint) from error
        with open(sealed, "rb") as body:
            self._call("put_object", Key=key, Body=body, **self._class_args())

    def open(self, object_id: str) -> BinaryIO:
        return self.open_key(self.object_key(object_id), missing=object_id)

    def open_key(self, key: str, *, missing: str) -> BinaryIO:
        """A download that survives dropped connections (see :class:`ResumingBody`)."""
        body = ResumingBody(self, key, missing)
        body.connect()  # a missing object or a refused request is reported here, not at the first read
        return body  # type: ignore[return-value]

    def list(self) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key("objects/")):
                for item in page.get("Contents", []):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if OBJECT_ID.match(name):
                        yield name
        except Exception as error:
            if is_boto_error(error):
                raise classify(error, self.bucket, self.config.endpoint) from error
            raise

    def delete(self, object_id: str) -> None:
        self._call("delete_object", Key=self.object_key(object_id))

    # ------------------------------------------------------------------ multipart

    def part_layout(self, sealed: Path) -> list[tuple[int, int]]:
        """(offset, length) of each part: whole encryption chunks, the first with the object's header."""
        size = sealed.stat().st_size
        with open(sealed, "rb") as handle:
            head = parse_head(handle.read(HEAD_SIZE))
        body_start, record = head.body_offset, head.record_size
        per_part = max(1, TARGET_PART // record) if record < TARGET_PART else 1
        parts, offset, first = [], 0, True
        while offset < size:
            length = per_part * record + (body_start if first else 0)
            parts.append((offset, min(length, size - offset)))
            offset += length
            first = False
        return parts

    def upload_multipart(self, object_id: str, sealed: Path, journal: UploadJournal | None) -> None:
        key = self.object_key(object_id)
        layout = self.part_layout(sealed)
        done: dict[int, str] = {}
        upload_id = None
        remembered = journal.upload_for(object_id, self.name) if journal is not None else None
        if remembered is not None:
            upload_id = remembered[0]
            try:
                done = self._completed_parts(key, upload_id, layout)
                log.info("resuming upload of %s…: %d of %d parts already stored", object_id[:12], len(done),
                         len(layout))
            except StoreError as error:
                if error_code(error.__cause__) not in ("NoSuchUpload", "404"):
                    raise
                log.info("upload of %s… expired on the server; starting again", object_id[:12])
                upload_id, done = None, {}
        if upload_id is None:
            upload_id = self._call("create_multipart_upload", Key=key, **self._class_args())["UploadId"]
            if journal is not None:
                journal.remember_upload(object_id, self.name, upload_id, layout[0][1])
        with open(sealed, "rb") as handle:
            for number, (offset, length) in enumerate(layout, start=1):
                if number in done:
                    continue
                handle.seek(offset)
                data = handle.read(length)
                self._throttle.spend(len(data))
                response = self._call("upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=data)
                done[number] = response["ETag"]
                log.debug("uploaded part %d/%d of %s…", number, len(layout), object_id[:12])
        self._call("complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": done[n]} for n in sorted(done)]})
        if journal is not None:
            journal.forget_upload(object_id, self.name)

    def _completed_parts(self, key: str, upload_id: str, layout: list[tuple[int, int]]) -> dict[int, str]:
        """Parts the server already has, with the right size (a part cut short by a crash is redone)."""
        done: dict[int, str] = {}
        marker = 0
        while True:
            page = self._call("list_parts", Key=key, UploadId=upload_id, PartNumberMarker=marker)
            for part in page.get("Parts", []):
                number = part["PartNumber"]
                if number <= len(layout) and part["Size"] == layout[number - 1][1]:
                    done[number] = part["ETag"]
            if not page.get("IsTruncated"):
                return done
            marker = page["NextPartNumberMarker"]

    def abort_stale_uploads(self, older_than_hours: float, ours: dict[str, float]) -> list[str]:
        """Abort multipart uploads nobody will finish (their parts cost money); returns their ids.

        ``ours`` maps the uploads this installation journaled to when it started them: for those our
        own clock decides, so a server with a wrong clock cannot make us abort an upload in progress.
        """
        cutoff = time.time() - older_than_hours * 3600
        aborted = []
        page = self._call("list_multipart_uploads", Prefix=self.key("objects/"))
        for upload in page.get("Uploads", []):
            started = ours.get(upload["UploadId"], upload["Initiated"].timestamp())
            if started <= cutoff:
                self._call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])
                aborted.append(upload["UploadId"])
        return aborted


class ResumingBody(io.RawIOBase):
    """The bytes of one object, fetched again from where they broke off when a connection drops.

    Every resumed request asks for the rest (``Range``) of the same version (``If-Match`` its ETag), with
    back-off; attempts are counted only while no byte arrives. The length the server announced is checked
    at the end, so a download cut short is an error, never a short object.
    """

    def __init__(self, store: S3Store, key: str, missing: str):
        self._store, self._key, self._missing = store, key, missing
        self._body: Any = None
        self._offset = 0
        self._length: int | None = None
        self._etag: str | None = None
        self._failures = 0

    def readable(self) -> bool:
        return True

    def connect(self) -> None:
        extra: dict[str, str] = {}
        if self._offset:
            extra["Range"] = f"bytes={self._offset}-"
        if self._etag:
            extra["IfMatch"] = self._etag
        try:
            response = self._store._call("get_object", Key=self._key, missing=self._missing, **extra)
        except StoreError as error:
            if error_code(error.__cause__) in ("PreconditionFailed", "412"):
                raise StoreError(f"{self._missing[:12]}…: the object changed while it was downloaded",
                                 transient=False) from None
            raise
        if self._length is None:
            self._length, self._etag = int(response["ContentLength"]), response.get("ETag")
        elif int(response["ContentLength"]) != self._length - self._offset:
            raise StoreError(f"{self._missing[:12]}…: the object changed while it was downloaded")
        self._body = response["Body"]

    def readinto(self, buffer: Any) -> int:
        assert self._length is not None
        while True:
            if self._offset >= self._length:
                return 0
            try:
                if self._body is None:
                    self.connect()
                # Small reads: what arrived before a connection broke is kept, not read again.
                data = self._body.read(min(len(buffer), READ_PIECE, self._length - self._offset))
                if not data:
                    raise ConnectionError(f"connection closed at byte {self._offset} of {self._length}")
            except ObjectMissing:
                raise
            except (StoreError, ConnectionError, OSError, http.client.HTTPException, *_stream_errors()) as error:
                if isinstance(error, StoreError) and not error.transient:
                    raise
                self._retry(error)
                continue
            buffer[:len(data)] = data
            self._offset += len(data)
            self._failures = 0
            return len(data)

    def _retry(self, error: BaseException) -> None:
        self._close_body()
        self._failures += 1
        if self._failures > READ_ATTEMPTS:
            raise StoreError(f"download of {self._missing[:12]}… broke off at byte {self._offset} of {self._length} "
                             f"{READ_ATTEMPTS} times in a row ({type(error).__name__})", transient=True) from None
        wait = min(READ_BACKOFF[1], READ_BACKOFF[0] * 2 ** (self._failures - 1))
        log.info("download of %s… interrupted at byte %d (%s); resuming in %.1f s", self._missing[:12],
                 self._offset, type(error).__name__, wait)
        time.sleep(wait)

    def _close_body(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._close_body()
        super().close()


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What botocore and urllib3 raise when a response body breaks off (imported late: boto is heavy)."""
    import botocore.exceptions as bex
    import urllib3.exceptions

    return (bex.BotoCoreError, urllib3.exceptions.HTTPError)


def client_for(config: S3Config, paths: Paths) -> Any:
    """A boto3 client for any S3-compatible service; credentials from boto3's chain or systemd's."""
    import boto3
    from botocore.config import Config as BotoConfig

    settings: dict[str, Any] = {}
    access_key, secret_key = paths.credential(Credential.S3_ACCESS_KEY), paths.credential(Credential.S3_SECRET_KEY)
    if access_key is not None and secret_key is not None:
        settings["aws_access_key_id"] = access_key.read_text().strip()
        settings["aws_secret_access_key"] = secret_key.read_text().strip()
    boto_config = BotoConfig(
        signature_version="s3v4",
        s3={"addressing_style": config.addressing_style},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=16,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=config.endpoint or None,
        region_name=config.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1", config=boto_config,
        **settings)


def is_boto_error(error: Exception) -> bool:
    import botocore.exceptions as bex

    return isinstance(error, bex.BotoCoreError | bex.ClientError)


def error_code(error: BaseException | None) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
