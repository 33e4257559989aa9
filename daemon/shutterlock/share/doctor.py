"""``share doctor``: try, with real requests, everything a share needs from the bucket, and say what to change.

Nothing is inferred from documentation: each capability is exercised on a probe object under the
share prefix (deleted afterwards). The checks that matter most for privacy are the ones providers
differ on: whether a presigned POST really is confined to its prefix and size (some servers accept
anything that is signed), whether the bucket is private, and whether a public_url serves only what
it should.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3

from shutterlock.config import Paths, ShareConfig
from shutterlock.share.host import PRESIGN_MAX, ShareHost, Upload
from shutterlock.vault.store import StoreError

OK, WARN, FAIL = "ok", "warn", "fail"
PROBE_BYTES = b"shutterlock share doctor probe\n"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    message: str
    fix: str = ""  # what to set, exactly, when it is not ok

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def doctor(config: ShareConfig, paths: Paths) -> list[Check]:
    checks: list[Check] = []
    if not config.url.startswith("s3://") or not config.bucket:
        return [Check("configuration", FAIL, f"[share] url must look like s3://BUCKET/PREFIX; got {config.url!r}")]
    if config.public_url and not _secure(config.public_url):
        checks.append(Check("public_url", FAIL, f"{config.public_url} is not https: browsers only decrypt on "
                            "secure pages", "use the https:// address of your website endpoint or CDN"))
    host = ShareHost.from_config(config, paths)
    try:
        host.check()
    except StoreError as error:
        return [*checks, Check("bucket", FAIL, str(error))]
    checks.append(Check("bucket", OK, f"{config.bucket} is reachable with these credentials"))
    checks += _credentials(host)
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=20), retries=False)
    from shutterlock.share.shares import token

    probe = f".doctor-{token(12)}"
    try:
        host.put(Upload(f"{probe}/index.html", PROBE_BYTES, content_type="text/html; charset=utf-8",
                        cache_control="no-cache"))
        checks.append(Check("write", OK, "objects can be written under the prefix"))
        checks += _reading(host, http, probe)
        checks += _posting(host, http, probe, config.feedback_bytes)
        if config.public_url:
            checks += _public(host, http, probe, config)
    except StoreError as error:
        checks.append(Check("write", FAIL, f"cannot write under {config.url}: {error}"))
    finally:
        try:
            host.delete_under(f"{probe}/")
        except StoreError as error:
            checks.append(Check("clean-up", WARN, f"could not delete the probe {host.key(probe)}/: {error}"))
    checks.append(_lifecycle(host, probe))
    checks.append(_versions(host))
    return checks


@dataclass(frozen=True)
class _Reply:
    status: int  # 0: no answer at all
    data: bytes = b""
    kind: str = ""


def _request(http: urllib3.PoolManager, method: str, url: str, **kwargs: Any) -> _Reply:
    try:
        response = http.request(method, url, **kwargs)
    except urllib3.exceptions.HTTPError:
        return _Reply(0)
    return _Reply(response.status, response.data, response.headers.get("Content-Type", ""))


def _secure(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"))


def _credentials(host: ShareHost) -> list[Check]:
    if host.temporary_credentials():
        return [Check("credentials", WARN, "these are temporary credentials (a session token): presigned links "
                      "stop working when the session ends, often within hours",
                      "use a long-lived access key of a user limited to this bucket for [share]")]
    return []


def _reading(host: ShareHost, http: urllib3.PoolManager, probe: str) -> list[Check]:
    checks = []
    signed = host.presign_get(f"{probe}/index.html", 300)
    response = _request(http, "GET", signed)
    if response.status == 200 and response.data == PROBE_BYTES:
        kind = response.kind
        status = OK if kind.startswith("text/html") else FAIL
        checks.append(Check("presigned GET", status, f"presigned links work (served as {kind or 'no type'})",
                            "" if status == OK else "this server does not keep the Content-Type set on upload; "
                            "the viewer page would not open in a browser"))
    else:
        checks.append(Check("presigned GET", FAIL, f"a presigned link was refused (HTTP {response.status}); "
                            "check that [share] region matches the bucket's region"))
    anonymous = _request(http, "GET", signed.split("?", 1)[0])
    if anonymous.status == 200:
        checks.append(Check("private bucket", WARN, "objects can be read without a signature: anyone who learns "
                            "an object name can fetch its bytes (they stay encrypted)",
                            "without public_url, keep the bucket private (S3 Block Public Access on)"))
    else:
        checks.append(Check("private bucket", OK, "objects cannot be read without a signature"))
    listing = _request(http, "GET", _bucket_url(signed, host.bucket) + "?list-type=2&prefix=" + host.key(""))
    if listing.status == 200 and b"ListBucketResult" in listing.data:
        checks.append(Check("listing", FAIL, "anyone can list the bucket: the number, sizes and dates of shares "
                            "are visible to the world", "remove s3:ListBucket for Principal * from the policy"))
    else:
        checks.append(Check("listing", OK, "the bucket cannot be listed anonymously"))
    return checks


def _bucket_url(signed: str, bucket: str) -> str:
    """The bucket's own URL (virtual-hosted or path-style), from any presigned object URL."""
    parts = urlsplit(signed)
    base = f"{parts.scheme}://{parts.netloc}"
    return base + "/" if parts.netloc.startswith(bucket + ".") else f"{base}/{bucket}"


def _posting(host: ShareHost, http: urllib3.PoolManager, probe: str, limit: int) -> list[Check]:
    """A client's form must work inside its prefix and fail outside it and over the size limit."""
    post = host.presign_post(f"{probe}/f/", limit, 300)

    def send(key: str, size: int) -> int:
        fields: dict[str, Any] = {**post["fields"], "key": key, "file": ("x", b"x" * size)}
        return _request(http, "POST", post["url"], fields=fields).status

    inside = send(host.key(f"{probe}/f/inside"), 16)
    outside = send(host.key(f"{probe}/outside"), 16)
    too_big = send(host.key(f"{probe}/f/too-big"), limit + 1)
    if not 200 <= inside < 300:
        return [Check("feedback form", FAIL, f"a presigned POST inside its prefix was refused (HTTP {inside})",
                      "use --no-feedback with this provider, or check its POST support")]
    accepted = [w for w, status in (("outside its prefix", outside), ("over its size limit", too_big))
                if 200 <= status < 300]
    if accepted:
        what = " and ".join(accepted)
        return [Check("feedback form", FAIL, f"this server accepted a presigned POST {what}: it does not enforce "
                      "POST policies, so a client could write anywhere in the bucket",
                      "turn feedback off (--no-feedback) for shares on this provider")]
    return [Check("feedback form", OK, "presigned POST works and is confined to its prefix and size limit")]


def _public(host: ShareHost, http: urllib3.PoolManager, probe: str, config: ShareConfig) -> list[Check]:
    checks = []
    public = _request(http, "GET", host.public_link(f"{probe}/index.html"))
    resource = f"arn:aws:s3:::{config.bucket}/{host.key('')}*"
    policy = {"Version": "2012-10-17", "Statement": [{"Sid": "ShutterlockSharesPublicRead", "Effect": "Allow",
                                                      "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": resource}]}
    if public.status == 200 and public.data == PROBE_BYTES:
        checks.append(Check("public_url", OK, f"{config.public_url} serves the share prefix"))
    else:
        answer = f"HTTP {public.status}" if public.status else "no answer"
        checks.append(Check("public_url", FAIL, f"{config.public_url} did not serve a new object under the prefix "
                            f"({answer})",
                            "allow public reads of the prefix only (AWS: also turn off BlockPublicPolicy and "
                            "RestrictPublicBuckets for this bucket):\n" + json.dumps(policy, indent=2)))
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(config.public_url))
    post_origin = "{0.scheme}://{0.netloc}".format(urlsplit(host.presign_post(f"{probe}/f/", 16, 60)["url"]))
    if origin != post_origin:
        rules = host.cors_rules()
        allowed = any("POST" in r.get("AllowedMethods", []) and
                      ({"*", origin} & set(r.get("AllowedOrigins", []))) for r in rules)
        cors = [{"AllowedOrigins": [origin], "AllowedMethods": ["POST"], "AllowedHeaders": ["*"],
                 "MaxAgeSeconds": 3600}]
        checks.append(Check("CORS", OK, f"the bucket accepts feedback posted from {origin}") if allowed else
                      Check("CORS", FAIL, f"pages served from {origin} cannot post feedback to {post_origin}",
                            "set this CORS configuration on the bucket:\n" + json.dumps(cors, indent=2)))
    return checks


def _lifecycle(host: ShareHost, probe: str) -> Check:
    try:
        works = host.set_expiry_rule(probe, f"{probe}/", time.time() + 86400) and host.drop_expiry_rule(probe)
        rules = host.expiry_rules() if works else None
    except StoreError as error:
        return Check("lifecycle", WARN, f"cannot read lifecycle rules: {error}",
                     "allow s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration for these credentials")
    if rules is None:
        return Check("lifecycle", WARN, "this provider has no lifecycle rules: an expired share is deleted only "
                     "when Shutterlock runs", "keep the daemon running, or use a provider with S3 lifecycle rules")
    ours = sum(1 for r in rules if str(r.get("ID", "")).startswith("shutterlock-share-"))
    return Check("lifecycle", OK, f"lifecycle rules work ({ours} share rule(s) in place); expired shares are "
                 f"deleted by the provider even when this machine is off (links last at most {PRESIGN_MAX // 86400} "
                 "days without public_url)")


def _versions(host: ShareHost) -> Check:
    try:
        versioned = host.versioned()
    except StoreError as error:
        return Check("versioning", WARN, f"cannot read the bucket's versioning: {error}")
    if not versioned:
        return Check("versioning", OK, "deleted share objects are gone, not kept as old versions")
    rule = {"ID": "delete-old-versions", "Filter": {"Prefix": host.key("")}, "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}
    return Check("versioning", WARN, "versioning is on: revoking or expiring a share hides its objects but the "
                 "provider keeps the old (encrypted) versions until a lifecycle rule removes them",
                 "add this lifecycle rule (B2: keep only the last version):\n" + json.dumps(rule, indent=2))
