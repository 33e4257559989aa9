"""Configuration: one validated schema, its defaults, and where every file lives.

Everything the program reads from the user's config file passes through :func:`load`, which
returns frozen dataclasses; nothing else in the code base parses TOML or guesses paths.
Errors name the file, the table, the key and the problem, e.g.
``config.toml: [vault] path: not a directory: /srv/x``.
"""

from __future__ import annotations

import enum
import hashlib
import os
import tempfile
import tomllib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from shutterlock.errors import ConfigError

APP = "shutterlock"

WATCH_MODES = ("auto", "native", "polling")
ADDRESSING_STYLES = ("auto", "path", "virtual")
MODELS_DIR_ENV = "SHUTTERLOCK_MODELS_DIR"
STRENGTHS = ("off", "light", "standard", "strong")
ANCHORS = (
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
)
# The PLUS "Data Mining" vocabulary (http://ns.useplus.org/ldf/vocab/).
DATA_MINING_VALUES = (
    "DMI-UNSPECIFIED",
    "DMI-ALLOWED",
    "DMI-PROHIBITED-AIMLTRAINING",
    "DMI-PROHIBITED-GENAIMLTRAINING",
    "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING",
    "DMI-PROHIBITED",
    "DMI-PROHIBITED-SEECONSTRAINT",
    "DMI-PROHIBITED-SEEEMBEDDEDRIGHTSEXPR",
    "DMI-PROHIBITED-SEELINKEDRIGHTSEXPR",
)
PAIR_PREFERENCES = ("jpeg", "raw")
SHARPENING = ("off", "low", "standard", "high")


@dataclass(frozen=True)
class OutputSize:
    """How big a derivative is: within ``long_edge``, or exactly ``width`` wide; an aspect ratio (width/height)
    outside [min_aspect, max_aspect] is centre-cropped to the nearest bound first (what the platform allows)."""

    long_edge: int = 0
    width: int = 0
    min_aspect: float = 0.0
    max_aspect: float = float("inf")


# Named like a Lightroom export preset; "custom" uses [derive] long_edge.
OUTPUT_PRESETS = {
    "web-2048": OutputSize(long_edge=2048),
    "web-1200": OutputSize(long_edge=1200),
    "instagram-1080": OutputSize(width=1080, min_aspect=4 / 5, max_aspect=1.91),  # 4:5 portrait to 1.91:1
    "custom": OutputSize(),
}
# Never sealed: files operating systems leave in photo folders (hidden and temporary names are skipped anyway).
DEFAULT_IGNORE = ("Thumbs.db", "ehthumbs.db", "desktop.ini")
THEMES = ("auto", "dark", "light")


class Credential(enum.StrEnum):
    """The names of the secrets systemd hands over in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``)."""

    MASTER_KEY = "shutterlock.key"
    PASSPHRASE = "shutterlock.passphrase"
    S3_ACCESS_KEY = "s3.access_key_id"
    S3_SECRET_KEY = "s3.secret_access_key"


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    """Where the program keeps its files; systemd's directories win over platformdirs."""

    config_file: Path
    state_dir: Path
    cache_dir: Path
    runtime_dir: Path
    credentials_dir: Path | None

    @property
    def catalog(self) -> Path:
        return self.state_dir / "catalog.sqlite3"

    @property
    def key_file(self) -> Path:
        return self.state_dir / "master.key"

    @property
    def envelope_file(self) -> Path:
        return self.state_dir / "key-envelope.json"

    @property
    def retired_keys(self) -> Path:
        """The master keys an unfinished key rotation still needs, sealed under the current one."""
        return self.state_dir / "retired-keys.blob"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / SOCKET_NAME

    @property
    def lock_file(self) -> Path:
        return self.runtime_dir / "daemon.lock"

    def credential(self, name: Credential) -> Path | None:
        """The credential file systemd provides, or None (not under systemd, or not given)."""
        if self.credentials_dir is None:
            return None
        path = self.credentials_dir / name
        return path if path.exists() else None


def _first_env_dir(name: str) -> Path | None:
    """systemd passes colon-separated lists; the first entry is ours."""
    value = os.environ.get(name, "")
    first = value.split(":")[0]
    return Path(first) if first else None


def default_config_file() -> Path:
    override = os.environ.get("SHUTTERLOCK_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


# A Unix socket's path must fit in sockaddr_un (108 bytes on Linux, 104 on macOS, each with the final NUL).
SOCKET_PATH_MAX = 103
SOCKET_NAME = "control.sock"


def runtime_for_socket(runtime: Path) -> Path:
    """``runtime``, or — for a deep home folder whose socket path would not fit — a short folder named after
    it (created 0700 and checked to be ours by the control server), so the CLI, tray and daemon still agree."""
    if len(os.fsencode(runtime / SOCKET_NAME)) <= SOCKET_PATH_MAX:
        return runtime
    tag = hashlib.blake2b(os.fsencode(runtime), digest_size=6).hexdigest()
    return Path(tempfile.gettempdir()) / f"{APP}-{os.getuid() if hasattr(os, 'getuid') else 0}-{tag}"


def resolve_paths(config_file: Path | None = None) -> Paths:
    runtime = _first_env_dir("RUNTIME_DIRECTORY")
    if runtime is None:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        runtime = Path(xdg) / APP if xdg else Path(platformdirs.user_state_dir(APP)) / "run"
    runtime = runtime_for_socket(runtime)
    return Paths(
        config_file=config_file or default_config_file(),
        state_dir=_first_env_dir("STATE_DIRECTORY") or Path(platformdirs.user_data_dir(APP)),
        cache_dir=_first_env_dir("CACHE_DIRECTORY") or Path(platformdirs.user_cache_dir(APP)),
        runtime_dir=runtime,
        credentials_dir=_first_env_dir("CREDENTIALS_DIRECTORY"),
    )


def _pictures() -> Path:
    return Path(platformdirs.user_pictures_dir()) / "Shutterlock"


# --------------------------------------------------------------------------- schema
#
# Each table is a frozen dataclass: a field's default is the key's default, and its metadata (``rule``)
# says what values are valid. One generic reader (:func:`_read_table`) turns a TOML table into it.


class _InABucket:
    """A table whose ``url`` (``s3://bucket/some/prefix``) names a bucket and a prefix in it."""

    url: str

    @property
    def bucket(self) -> str:
        return self.url[len("s3://"):].partition("/")[0]

    @property
    def prefix(self) -> str:
        return self.url[len("s3://"):].partition("/")[2].strip("/")


def rule(*, low: float | None = None, high: float | None = None, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validation for one key: a numeric range, or the allowed words."""
    return {"low": low, "high": high, "choices": choices}


@dataclass(frozen=True)
class SourceConfig:
    path: Path
    watch_mode: str = field(default="auto", metadata=rule(choices=WATCH_MODES))
    name: str = ""
    ignore: tuple[str, ...] = DEFAULT_IGNORE  # file-name patterns never sealed (fnmatch, any case)
    # Which originals get derivatives: those rated at least this many stars (0: all) …
    derive_min_rating: int = field(default=0, metadata=rule(low=0, high=5))
    # … and, when given, only those below one of these subfolders (patterns relative to the source).
    derive_folders: tuple[str, ...] = ()


@dataclass(frozen=True)
class VaultConfig:
    path: Path


@dataclass(frozen=True)
class S3Config(_InABucket):
    url: str
    endpoint: str = ""
    region: str = ""
    addressing_style: str = field(default="auto", metadata=rule(choices=ADDRESSING_STYLES))
    storage_class: str = ""
    bandwidth_limit: int = field(default=0, metadata=rule(low=0))  # bytes per second, 0 = unlimited
    stale_upload_hours: float = field(default=72.0, metadata=rule(low=0.01))
    snapshot_minutes: float = field(default=60.0, metadata=rule(low=0.01))
    scrub_days: float = field(default=7.0, metadata=rule(low=0.0001))
    scrub_percent: float = field(default=5.0, metadata=rule(low=0.0, high=100.0))
    # Transient errors (5xx, throttling) an upload survives before it fails for good; an unreachable
    # endpoint is an outage, not an attempt, and never fails an upload.
    max_attempts: int = field(default=32, metadata=rule(low=1, high=1000))
    # How often the bucket's listing is compared with the catalog (a lost or emptied bucket is refilled),
    # and how many dated catalog snapshots the bucket keeps (a rollback needs all of them deleted).
    reconcile_minutes: float = field(default=60.0, metadata=rule(low=0.01))
    snapshots_kept: int = field(default=30, metadata=rule(low=1, high=100000))


@dataclass(frozen=True)
class DeriveConfig:
    enabled: bool = True
    outbox: Path = field(default_factory=lambda: _pictures() / "Outbox")
    preset: str = field(default="web-2048", metadata=rule(choices=tuple(OUTPUT_PRESETS)))
    long_edge: int = field(default=2048, metadata=rule(low=64, high=65535))  # with preset = "custom"
    # Output sharpening for screens, after the resize and before the cloak (as Lightroom's export does).
    sharpen: str = field(default="low", metadata=rule(choices=SHARPENING))
    # The capture date in the derivative's EXIF: off by default — with a face or a place it says where
    # someone was and when; the outbox folders still sort by it.
    keep_capture_date: bool = False
    jpeg_quality: int = field(default=90, metadata=rule(low=1, high=100))
    max_pixels: int = field(default=200_000_000, metadata=rule(low=1))
    time_limit: float = field(default=300.0, metadata=rule(low=1.0))  # seconds per image, cloak included

    @property
    def size(self) -> OutputSize:
        return OUTPUT_PRESETS[self.preset] if self.preset != "custom" else OutputSize(long_edge=self.long_edge)
    # Which half of a RAW+JPEG pair is derived.
    pair_preference: str = field(default="jpeg", metadata=rule(choices=PAIR_PREFERENCES))
    release_uncloaked: bool = False  # hold back derivatives whose cloak could not run
    # A JPEG may be decoded at a reduced scale that falls this much short of the long edge and be topped
    # up (4000 px → 2000 px → 2048 px): ~3× faster, 43 dB from a full decode, below JPEG q90's own loss.
    draft_tolerance: float = field(default=0.03, metadata=rule(low=0.0, high=0.25))
    # Derive processes (niced, so sealing always goes first). 0: one per core, but no more than fit in the
    # machine's memory at memory_limit each (derive/lane.py:worker_count).
    workers: int = field(default=0, metadata=rule(low=0, high=64))
    # Each derive process's address-space limit (RLIMIT_AS) in MB: a file that makes a decoder allocate
    # without end fails there. The cloak of a 24 MP photo peaks at ~2.3 GB of address space
    # (bench/worker_memory.py); HEIF and RAW files larger than a quarter of it are refused unread.
    # An idle worker maps ~0.5 GB of address space (numpy, Pillow, OpenCV), hence the floor.
    memory_limit: int = field(default=3072, metadata=rule(low=1024, high=1 << 20))


@dataclass(frozen=True)
class WatermarkConfig:
    enabled: bool = True
    text: str = "© {creator} {year}"
    font: Path | None = None  # a TrueType/OpenType file; default: the first common font with every glyph
    logo: Path | None = None
    anchor: str = field(default="bottom-right", metadata=rule(choices=ANCHORS))
    inset: float = field(default=0.03, metadata=rule(low=0.0, high=0.45))  # fraction of the short side
    size: float = field(default=0.035, metadata=rule(low=0.005, high=0.5))  # text height / short side
    opacity: float = field(default=0.6, metadata=rule(low=0.0, high=1.0))


@dataclass(frozen=True)
class RightsConfig:
    creator: str = ""
    copyright: str = ""
    data_mining: str = field(default="DMI-PROHIBITED-AIMLTRAINING", metadata=rule(choices=DATA_MINING_VALUES))
    web_statement: str = ""
    other_constraints: str = "No use for training, fine-tuning or evaluating AI/ML models."


@dataclass(frozen=True)
class CloakConfig:
    strength: str = field(default="standard", metadata=rule(choices=STRENGTHS))
    models_dir: Path | None = None  # $SHUTTERLOCK_MODELS_DIR overrides it
    offline: bool = False
    threads: int = field(default=0, metadata=rule(low=0, high=1024))  # 0 = all cores
    seed: int = field(default=0, metadata=rule(low=0))
    time_budget: float = field(default=60.0, metadata=rule(low=0.1))


@dataclass(frozen=True)
class EngineConfig:
    settle_seconds: float = field(default=2.0, metadata=rule(low=0.0, high=3600.0))
    rescan_minutes: float = field(default=15.0, metadata=rule(low=0.05))
    seal_workers: int = field(default=0, metadata=rule(low=0, high=256))  # 0 = one per core
    max_attempts: int = field(default=8, metadata=rule(low=1, high=1000))
    chunk_size: int = field(default=1 << 20, metadata=rule(low=4096, high=64 << 20))
    # A busy worker silent this long stops the systemd watchdog pings.
    stall_seconds: float = field(default=300.0, metadata=rule(low=1.0))


@dataclass(frozen=True)
class ShareConfig(_InABucket):
    """``[share]``: where private galleries are published (docs/SHARING.md); absent: no sharing."""

    url: str  # s3://BUCKET/PREFIX
    endpoint: str = ""
    public_url: str = ""  # a public-read base serving PREFIX; empty: presigned links (at most 7 days)
    region: str = ""
    addressing_style: str = field(default="auto", metadata=rule(choices=ADDRESSING_STYLES))
    expires_days: float = field(default=30.0, metadata=rule(low=0.01, high=1825.0))  # when --expires is not given
    thumb_edge: int = field(default=640, metadata=rule(low=160, high=2048))  # the grid thumbnail's long edge
    feedback_bytes: int = field(default=65536, metadata=rule(low=4096, high=1 << 20))  # per client message
    check_minutes: float = field(default=10.0, metadata=rule(low=0.05, high=1440.0))  # feedback, expiry (daemon)


@dataclass(frozen=True)
class ProvenanceConfig:
    """The key that signs every derivative's C2PA manifest. Both empty: the self-issued identity ``init``
    creates in the state directory. Both set: a chain from a real CA (PEM, the signing certificate first)
    and its unencrypted private key (owner-only)."""

    certificate: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class SiteConfig:
    """The public portfolio. ``url``: ``s3://BUCKET/PREFIX`` or a folder (for rsync or any static host);
    empty: ``site publish`` refuses. ``base_url``: the address it is served from, which makes the TDMRep
    policy links absolute. ``include``: patterns choosing originals (empty: all with a derivative).
    ``min_rating``: only originals rated at least this many stars (0: all). ``captions``: pattern → caption,
    first match wins. ``widths``: renditions made below the derivative."""

    url: str = ""
    endpoint: str = ""
    base_url: str = ""
    title: str = ""
    tagline: str = ""
    about: str = ""
    email: str = ""
    links: tuple[str, ...] = ()
    theme: str = field(default="auto", metadata=rule(choices=THEMES))
    include: tuple[str, ...] = ()
    min_rating: int = field(default=0, metadata=rule(low=0, high=5))  # only originals with this many stars
    captions: tuple[tuple[str, str], ...] = ()
    widths: tuple[int, ...] = (480, 960, 1600)


@dataclass(frozen=True)
class Config:
    sources: tuple[SourceConfig, ...]
    vault: VaultConfig
    s3: S3Config | None
    derive: DeriveConfig
    watermark: WatermarkConfig
    rights: RightsConfig
    cloak: CloakConfig
    engine: EngineConfig
    paths: Paths
    provenance: ProvenanceConfig = ProvenanceConfig()
    site: SiteConfig = SiteConfig()
    share: ShareConfig | None = None

    def source_by_name(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)


# --------------------------------------------------------------------------- loading


class _Reader:
    """Pulls typed values out of one table and reports problems with their location."""

    def __init__(self, file: Path, table: str, data: dict[str, Any]):
        self.file, self.table, self.data = file, table, dict(data)

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.file.name}: [{self.table}] {key}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else ()):
            raise self.fail(key, f"expected {getattr(kind, '__name__', kind)}, got a boolean")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"expected {expected}, got {type(value).__name__}: {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def number(self, key: str, kind: type, default: Any, low: float | None, high: float | None) -> Any:
        value = self.get(key, kind, default)
        if (low is not None and value < low) or (high is not None and value > high):
            bound = f"between {low} and {high}" if low is not None and high is not None else \
                f"at least {low}" if low is not None else f"at most {high}"
            raise self.fail(key, f"must be {bound}; got {value}")
        return value

    def words(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, list, list(default))
        if not all(isinstance(item, str) for item in value):
            raise self.fail(key, f"expected a list of strings; got {value!r}")
        return tuple(value)

    def path(self, key: str, default: Path | None) -> Path | None:
        value = self.get(key, str, None)
        if value is None:
            return default
        if not value.strip():
            return None
        return Path(value).expanduser()

    def done(self) -> None:
        if self.data:
            raise self.fail(sorted(self.data)[0], "unknown key")


def _table(file: Path, raw: dict[str, Any], name: str) -> _Reader:
    data = raw.pop(name, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{file.name}: [{name}]: expected a table")
    return _Reader(file, name, data)


def _existing_dir_or_creatable(reader: _Reader, key: str, path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise reader.fail(key, f"not a directory: {path}")
    return path


def _sources(file: Path, raw: dict[str, Any]) -> tuple[SourceConfig, ...]:
    tables = raw.pop("source", None)
    if tables is None:
        tables = [{"path": str(_pictures() / "Import")}]
    if not isinstance(tables, list):
        raise ConfigError(f"{file.name}: [[source]]: expected an array of tables")
    sources: list[SourceConfig] = []
    names: set[str] = set()
    for index, table in enumerate(tables):
        reader = _Reader(file, f"source #{index + 1}", table)
        path = reader.path("path", None)
        if path is None:
            raise reader.fail("path", "missing")
        path = _existing_dir_or_creatable(reader, "path", path)
        source = _read_table(reader, SourceConfig, path=path)
        name = source.name or path.name or f"source{index + 1}"
        if name in names:
            raise reader.fail("name", f"duplicate source name {name!r}; give each source a distinct name")
        names.add(name)
        sources.append(replace(source, name=name))
    return tuple(sources)


T = TypeVar("T")


def _read_table(reader: _Reader, kind: type[T], **given: Any) -> T:
    """Read every key of ``kind`` from the table (defaults and rules from its fields); unknown keys fail."""
    hints = typing.get_type_hints(kind)
    default = kind(**given)
    values = dict(given)
    for item in fields(kind):  # type: ignore[arg-type]
        if item.name in given:
            continue
        current, hint, check = getattr(default, item.name), hints[item.name], item.metadata or rule()
        if check["choices"]:
            values[item.name] = reader.choice(item.name, check["choices"], current)
        elif hint in (int, float):
            values[item.name] = reader.number(item.name, hint, current, check["low"], check["high"])
        elif hint in (Path, Path | None):
            values[item.name] = reader.path(item.name, current) or current
        elif hint == tuple[str, ...]:
            values[item.name] = reader.words(item.name, current)
        else:
            values[item.name] = reader.get(item.name, hint, current)
    reader.done()
    return kind(**values)


def _s3(file: Path, raw: dict[str, Any]) -> S3Config | None:
    if "s3" not in raw:
        return None
    reader = _table(file, raw, "s3")
    url = reader.get("url", str, "")
    if not url.startswith("s3://") or not url[5:].split("/")[0]:
        raise reader.fail("url", f"must look like s3://BUCKET/PREFIX; got {url!r}")
    endpoint = reader.get("endpoint", str, "")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise reader.fail("endpoint", f"must be an http:// or https:// URL; got {endpoint!r}")
    return _read_table(reader, S3Config, url=url, endpoint=endpoint)


def _share(file: Path, raw: dict[str, Any]) -> ShareConfig | None:
    if "share" not in raw:
        return None
    reader = _table(file, raw, "share")
    url = reader.get("url", str, "")
    if not url.startswith("s3://") or not url[5:].split("/")[0]:
        raise reader.fail("url", f"must look like s3://BUCKET/PREFIX; got {url!r}")
    given = {"url": url}
    for key in ("endpoint", "public_url"):
        value = reader.get(key, str, "")
        if value and not value.startswith(("http://", "https://")):
            raise reader.fail(key, f"must be an http:// or https:// URL; got {value!r}")
        given[key] = value.rstrip("/") if key == "public_url" else value
    return _read_table(reader, ShareConfig, **given)


def _derive(file: Path, raw: dict[str, Any]) -> DeriveConfig:
    reader = _table(file, raw, "derive")
    outbox = reader.path("outbox", None)
    if outbox is not None:
        _existing_dir_or_creatable(reader, "outbox", outbox)
        return _read_table(reader, DeriveConfig, outbox=outbox)
    return _read_table(reader, DeriveConfig)


def _watermark(file: Path, raw: dict[str, Any]) -> WatermarkConfig:
    reader = _table(file, raw, "watermark")
    logo = reader.path("logo", None)
    if logo is not None and not logo.is_file():
        raise reader.fail("logo", f"no such file: {logo}")
    return _read_table(reader, WatermarkConfig, logo=logo)


def _cloak(file: Path, raw: dict[str, Any]) -> CloakConfig:
    """``$SHUTTERLOCK_MODELS_DIR`` overrides ``models_dir``; this is the only place that reads it."""
    reader = _table(file, raw, "cloak")
    models_dir = reader.path("models_dir", None)
    env_models = os.environ.get(MODELS_DIR_ENV)
    if env_models:
        models_dir = Path(env_models).expanduser()
    return _read_table(reader, CloakConfig, models_dir=models_dir)


def _provenance(file: Path, raw: dict[str, Any]) -> ProvenanceConfig:
    reader = _table(file, raw, "provenance")
    config = _read_table(reader, ProvenanceConfig)
    if (config.certificate is None) != (config.key is None):
        missing = "key" if config.key is None else "certificate"
        raise reader.fail(missing, "missing: a certificate from a CA needs both certificate and key")
    for name in ("certificate", "key"):
        path = getattr(config, name)
        if path is not None and not path.is_file():
            raise reader.fail(name, f"no such file: {path}")
    return config


def _strings(reader: _Reader, key: str) -> tuple[str, ...]:
    values = reader.get(key, list, [])
    if not all(isinstance(value, str) and value.strip() for value in values):
        raise reader.fail(key, "expected a list of non-empty strings")
    return tuple(values)


def _site(file: Path, raw: dict[str, Any]) -> SiteConfig:
    reader = _table(file, raw, "site")
    captions = reader.get("captions", dict, {})
    if not all(isinstance(text, str) for text in captions.values()):
        raise reader.fail("captions", "expected a table of pattern = \"caption\"")
    widths = reader.get("widths", list, list(SiteConfig().widths))
    if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and 64 <= w <= 8192 for w in widths):
        raise reader.fail("widths", f"expected a list of pixel widths between 64 and 8192; got {widths!r}")
    config = _read_table(reader, SiteConfig, links=_strings(reader, "links"), include=_strings(reader, "include"),
                         captions=tuple(captions.items()), widths=tuple(sorted(set(widths))))
    if config.url.startswith("s3://") and not config.url[5:].split("/")[0]:
        raise ConfigError(f"{file.name}: [site] url: must look like s3://BUCKET/PREFIX or be a folder; "
                          f"got {config.url!r}")
    for key in ("endpoint", "base_url"):
        value = getattr(config, key)
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{file.name}: [site] {key}: must be an http:// or https:// URL; got {value!r}")
    return config


def parse(raw: dict[str, Any], file: Path, paths: Paths) -> Config:
    """Validate a parsed TOML document; every key not understood is an error (typos matter)."""
    raw = dict(raw)
    sources = _sources(file, raw)
    reader = _table(file, raw, "vault")
    default_vault = paths.state_dir / "vault"
    vault = VaultConfig(path=_existing_dir_or_creatable(
        reader, "path", reader.path("path", default_vault) or default_vault))
    reader.done()
    config = Config(sources=sources, vault=vault, s3=_s3(file, raw), derive=_derive(file, raw),
                    watermark=_watermark(file, raw), rights=_read_table(_table(file, raw, "rights"), RightsConfig),
                    cloak=_cloak(file, raw), engine=_read_table(_table(file, raw, "engine"), EngineConfig),
                    paths=paths, provenance=_provenance(file, raw), site=_site(file, raw),
                    share=_share(file, raw))
    if raw:
        raise ConfigError(f"{file.name}: [{sorted(raw)[0]}]: unknown table")
    return config


def load(config_file: Path | None = None) -> Config:
    """Read the config file, or the embedded defaults when there is none."""
    paths = resolve_paths(config_file)
    file = paths.config_file
    raw: dict[str, Any] = {}
    if file.exists():
        try:
            with file.open("rb") as handle:
                raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{file.name}: not valid TOML: {error}") from None
        except OSError as error:
            raise ConfigError(f"{file}: cannot read: {error.strerror}") from None
    elif config_file is not None:
        raise ConfigError(f"{file}: no such config file")
    return parse(raw, file, paths)


def warnings(config: Config) -> list[str]:
    """Settings that work but will surprise the user (a watermark that renders empty, …)."""
    found = []
    mark = config.watermark
    if config.derive.enabled and mark.enabled and "{creator}" in mark.text and not config.rights.creator.strip():
        found.append("the watermark is empty because no creator is set: add `creator = \"Your Name\"` to "
                     f"[rights] in {config.paths.config_file} (or run `shutterlock init` again)")
    return found


def save(config: Config) -> None:
    """Write the config file (owner-only: it may name buckets and paths the user keeps private)."""
    import tomli_w

    from shutterlock.fsutil import atomic_write_bytes

    atomic_write_bytes(config.paths.config_file, tomli_w.dumps(to_toml_dict(config)).encode(), mode=0o600)


def to_toml_dict(config: Config) -> dict[str, Any]:
    """The config as a TOML document, for ``init`` to write."""

    def table(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            if f.name in skip:
                continue
            value = getattr(obj, f.name)
            if value is None:
                continue
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out

    doc: dict[str, Any] = {
        "source": [table(s) for s in config.sources],
        "vault": table(config.vault),
        "derive": table(config.derive),
        "watermark": table(config.watermark),
        "rights": table(config.rights),
        "cloak": table(config.cloak),
        "engine": table(config.engine),
        "provenance": table(config.provenance),
        "site": {**table(config.site), "captions": dict(config.site.captions)},
    }
    if config.s3 is not None:
        doc["s3"] = table(config.s3)
    if config.share is not None:
        doc["share"] = table(config.share)
    return doc


@dataclass(frozen=True)
class Choices:
    """What ``init`` was told (flags, or answers at its prompts); None leaves the config's value."""

    sources: list[Path] | None = None
    vault: Path | None = None
    outbox: Path | None = None
    s3_url: str | None = None
    s3_endpoint: str | None = None
    creator: str | None = None
    copyright: str | None = None

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def with_overrides(config: Config, choices: Choices) -> Config:
    """Apply ``init``'s choices on top of an existing or default config."""
    sources, vault, outbox = choices.sources, choices.vault, choices.outbox
    s3_url, s3_endpoint = choices.s3_url, choices.s3_endpoint
    if choices.creator is not None or choices.copyright is not None:
        config = replace(config, rights=replace(
            config.rights, creator=config.rights.creator if choices.creator is None else choices.creator.strip(),
            copyright=config.rights.copyright if choices.copyright is None else choices.copyright.strip()))
    if sources:
        config = replace(config, sources=tuple(
            SourceConfig(path=p.expanduser().resolve(), name=_unique_name(p, i, sources))
            for i, p in enumerate(sources)))
    if vault is not None:
        config = replace(config, vault=VaultConfig(path=vault.expanduser().resolve()))
    if outbox is not None:
        config = replace(config, derive=replace(config.derive, outbox=outbox.expanduser().resolve()))
    if s3_url is not None or s3_endpoint is not None:
        base = config.s3 or S3Config(url=s3_url or "")
        config = replace(config, s3=replace(base, url=s3_url or base.url,
                                            endpoint=s3_endpoint if s3_endpoint is not None else base.endpoint))
    return config


def _unique_name(path: Path, index: int, all_paths: list[Path]) -> str:
    name = path.expanduser().resolve().name or f"source{index + 1}"
    earlier = [p.expanduser().resolve().name for p in all_paths[:index]]
    return name if name not in earlier else f"{name}-{index + 1}"
