"""The photographer's bucket as a share host: opaque objects in, signed links and lifecycle rules out.

Only what a share needs, on the S3 calls every common provider implements: PUT, GET, LIST,
DeleteObjects, presigned GET and POST, and (where offered) bucket lifecycle rules. Every error
becomes a :class:`~shutterlock.vault.store.StoreError` with a message naming the bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shutterlock.config import Credential, Paths, S3Config, ShareConfig
from shutterlock.vault.s3 import classify, client_for, error_code, is_boto_error
from shutterlock.vault.store import StoreError

PRESIGN_MAX = 7 * 24 * 3600  # SigV4: a presigned request is valid for at most seven days
RULE_PREFIX = "shutterlock-share-"
NO_LIFECYCLE = ("NotImplemented", "501", "MethodNotAllowed", "405", "InvalidRequest", "UnsupportedOperation")
UPLOAD_THREADS = 8


@dataclass(frozen=True)
class Upload:
    key: str  # relative to the share prefix
    data: bytes
    content_type: str = "application/octet-stream"
    cache_control: str = "private, max-age=31536000, immutable"


class ShareHost:
    def __init__(self, config: ShareConfig, client: Any, paths: Paths):
        self.config = config
        self.paths = paths
        self.bucket = config.bucket
        self.prefix = config.prefix
        self._client = client

    @classmethod
    def from_config(cls, config: ShareConfig, paths: Paths) -> ShareHost:
        bucket = S3Config(url=config.url, endpoint=config.endpoint, region=config.region,
                          addressing_style=config.addressing_style)
        return cls(config, client_for(bucket, paths), paths)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(Bucket=self.bucket, **kwargs)
        except Exception as error:
            if not is_boto_error(error):
                raise
            raise classify(error, self.bucket, self.config.endpoint) from error

    # ------------------------------------------------------------------ objects

    def check(self) -> None:
        self._call("head_bucket")

    def put(self, upload: Upload) -> None:
        self._call("put_object", Key=self.key(upload.key), Body=upload.data, ContentType=upload.content_type,
                   CacheControl=upload.cache_control)

    def put_many(self, uploads: Iterable[Upload]) -> None:
        """Upload in parallel while the caller still produces uploads; at most a few are held in memory.

        The first failure stops the producer and is raised once the uploads in flight have ended.
        """
        limit = 2 * UPLOAD_THREADS
        with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="share-upload") as pool:
            pending: set[Future[None]] = set()
            for upload in uploads:
                pending.add(pool.submit(self.put, upload))
                if len(pending) >= limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
            for future in pending:
                future.result()

    def get(self, key: str) -> bytes:
        return self._call("get_object", Key=self.key(key))["Body"].read()

    def list(self, under: str) -> Iterator[tuple[str, int]]:
        """(key relative to the share prefix, size) of every object under ``under``."""
        paginator = self._client.get_paginator("list_objects_v2")
        strip = len(self.key(""))
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(under)):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:], item["Size"]
        except Exception as error:
            if is_boto_error(error):
                raise classify(error, self.bucket, self.config.endpoint) from error
            raise

    def delete(self, keys: Iterable[str]) -> int:
        """Delete many objects, a thousand per request; refuses to report success for any that stayed."""
        batch = [self.key(k) for k in keys]
        deleted = 0
        for start in range(0, len(batch), 1000):
            chunk = batch[start:start + 1000]
            response = self._call("delete_objects", Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(f"could not delete {len(errors)} object(s) from bucket {self.bucket!r}: "
                                 f"{first.get('Code')} on {first.get('Key')}", transient=True)
            deleted += len(chunk)
        return deleted

    def delete_under(self, under: str, keep: frozenset[str] = frozenset()) -> int:
        return self.delete([key for key, _ in self.list(under) if key not in keep])

    # ------------------------------------------------------------------ links

    def presign_get(self, key: str, seconds: int) -> str:
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(key)},
            ExpiresIn=max(1, min(PRESIGN_MAX, seconds)))
        return url

    def presign_post(self, under: str, max_bytes: int, seconds: int) -> dict[str, Any]:
        """A form that lets a browser create objects under one prefix, each at most ``max_bytes``, for a while.

        The client chooses the rest of the key (a random name), so no client can predict, and
        therefore overwrite, another's object; listing and reading stay forbidden.
        """
        prefix = self.key(under)
        post: dict[str, Any] = self._client.generate_presigned_post(
            self.bucket, prefix + "${filename}", Fields=None,
            Conditions=[["starts-with", "$key", prefix], ["content-length-range", 1, max_bytes]],
            ExpiresIn=max(1, min(PRESIGN_MAX, seconds)))
        post["fields"].pop("key", None)
        return post

    def public_link(self, key: str) -> str:
        return f"{self.config.public_url.rstrip('/')}/{key}"

    def temporary_credentials(self) -> bool:
        """True for session credentials (SSO, an assumed role): presigned links die with the session."""
        import boto3

        if self.paths.credential(Credential.S3_ACCESS_KEY) is not None:
            return False  # a key pair from $CREDENTIALS_DIRECTORY never has a session token
        credentials = boto3.session.Session().get_credentials()
        return credentials is not None and bool(credentials.token)

    def cors_rules(self) -> list[dict[str, Any]]:
        try:
            rules: list[dict[str, Any]] = self._client.get_bucket_cors(Bucket=self.bucket).get("CORSRules", [])
        except Exception as error:
            if not is_boto_error(error):
                raise
            if error_code(error) in ("NoSuchCORSConfiguration", *NO_LIFECYCLE):
                return []
            raise classify(error, self.bucket, self.config.endpoint) from error
        return rules

    def versioned(self) -> bool:
        """With versioning on, a delete leaves the old version stored (hidden, still billed, still there)."""
        try:
            status = self._client.get_bucket_versioning(Bucket=self.bucket).get("Status", "")
        except Exception as error:
            if not is_boto_error(error):
                raise
            if error_code(error) in NO_LIFECYCLE:
                return False
            raise classify(error, self.bucket, self.config.endpoint) from error
        return status in ("Enabled", "Suspended")

    # ------------------------------------------------------------------ lifecycle

    def set_expiry_rule(self, rule: str, under: str, when: float) -> bool:
        """Have the provider delete everything under ``under`` at ``when`` (rounded up to a UTC midnight,
        which is what S3's ``Expiration.Date`` accepts), even if this machine is off. False if unsupported."""
        day = datetime.fromtimestamp(when, UTC)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if midnight.timestamp() < when:
            midnight += timedelta(days=1)
        new = {"ID": RULE_PREFIX + rule, "Filter": {"Prefix": self.key(under)}, "Status": "Enabled",
               "Expiration": {"Date": midnight}}
        return self._update_rules(rule, new)

    def drop_expiry_rule(self, rule: str) -> bool:
        return self._update_rules(rule, None)

    def expiry_rules(self) -> list[dict[str, Any]] | None:
        """The bucket's lifecycle rules; None when the provider has no lifecycle API."""
        try:
            response = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except Exception as error:
            if not is_boto_error(error):
                raise
            code = error_code(error)
            if code == "NoSuchLifecycleConfiguration":
                return []
            if code in NO_LIFECYCLE:
                return None
            raise classify(error, self.bucket, self.config.endpoint) from error
        rules: list[dict[str, Any]] = response.get("Rules", [])
        return rules

    def _update_rules(self, rule: str, new: dict[str, Any] | None) -> bool:
        """Read, change our one rule, write back: every other rule of the bucket is kept as it was."""
        rules = self.expiry_rules()
        if rules is None:
            return False
        kept = [r for r in rules if r.get("ID") != RULE_PREFIX + rule]
        if new is None and len(kept) == len(rules):
            return True
        wanted = kept + ([new] if new is not None else [])
        try:
            if wanted:
                self._client.put_bucket_lifecycle_configuration(
                    Bucket=self.bucket, LifecycleConfiguration={"Rules": wanted})
            else:
                self._client.delete_bucket_lifecycle(Bucket=self.bucket)
        except Exception as error:
            if not is_boto_error(error):
                raise
            if error_code(error) in NO_LIFECYCLE:
                return False
            raise classify(error, self.bucket, self.config.endpoint) from error
        return True
