"""Configuration: one validated schema, its defaults, and where every file lives.

Everything the program reads from the user's config file passes through :func:`load`, which
returns frozen dataclasses; nothing else in the code base parses TOML or guesses paths.
Errors name the file, the table, the key and the problem, e.g.
``config.toml: [vault] path: not a directory: /srv/x``.
"""

from __future__ import annotations

import enum
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

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
    def socket(self) -> Path:
        return self.runtime_dir / "control.sock"

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


def resolve_paths(config_file: Path | None = None) -> Paths:
    runtime = _first_env_dir("RUNTIME_DIRECTORY")
    if runtime is None:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        runtime = Path(xdg) / APP if xdg else Path(platformdirs.user_state_dir(APP)) / "run"
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


@dataclass(frozen=True)
class SourceConfig:
    path: Path
    watch_mode: str = "auto"
    name: str = ""


@dataclass(frozen=True)
class VaultConfig:
    path: Path


@dataclass(frozen=True)
class S3Config:
    url: str
    endpoint: str = ""
    region: str = ""
    addressing_style: str = "auto"  # auto | path | virtual
    storage_class: str = ""
    bandwidth_limit: int = 0  # bytes per second, 0 = unlimited
    stale_upload_hours: float = 72.0
    snapshot_minutes: float = 60.0
    scrub_days: float = 7.0
    scrub_percent: float = 5.0
    # Transient errors (5xx, throttling) an upload survives before it fails for good; an unreachable
    # endpoint is an outage, not an attempt, and never fails an upload.
    max_attempts: int = 32

    @property
    def bucket(self) -> str:
        return self.url[len("s3://"):].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = self.url[len("s3://"):].split("/", 1)
        return rest[1].strip("/") if len(rest) > 1 else ""


@dataclass(frozen=True)
class DeriveConfig:
    enabled: bool = True
    outbox: Path = field(default_factory=lambda: _pictures() / "Outbox")
    long_edge: int = 2048
    jpeg_quality: int = 90
    max_pixels: int = 200_000_000
    time_limit: float = 300.0  # seconds per image, cloak included
    pair_preference: str = "jpeg"  # which half of a RAW+JPEG pair is derived
    release_uncloaked: bool = False  # hold back derivatives whose cloak could not run
    # A JPEG may be decoded at a reduced scale that falls this much short of the long edge and be topped
    # up (4000 px → 2000 px → 2048 px): ~3× faster, 43 dB from a full decode, below JPEG q90's own loss.
    draft_tolerance: float = 0.03
    workers: int = 1  # derive processes (niced); 2 on an otherwise idle 2-core box doubles throughput


@dataclass(frozen=True)
class WatermarkConfig:
    enabled: bool = True
    text: str = "© {creator} {year}"
    logo: Path | None = None
    anchor: str = "bottom-right"
    inset: float = 0.03  # fraction of the short side
    size: float = 0.035  # text height as a fraction of the short side
    opacity: float = 0.6


@dataclass(frozen=True)
class RightsConfig:
    creator: str = ""
    copyright: str = ""
    data_mining: str = "DMI-PROHIBITED-AIMLTRAINING"
    web_statement: str = ""
    other_constraints: str = "No use for training, fine-tuning or evaluating AI/ML models."


@dataclass(frozen=True)
class CloakConfig:
    strength: str = "standard"
    models_dir: Path | None = None
    offline: bool = False
    threads: int = 0  # 0 = all cores
    seed: int = 0
    time_budget: float = 60.0


@dataclass(frozen=True)
class EngineConfig:
    settle_seconds: float = 2.0
    rescan_minutes: float = 15.0
    seal_workers: int = 0  # 0 = one per core
    max_attempts: int = 8
    chunk_size: int = 1 << 20
    stall_seconds: float = 300.0  # a busy worker silent this long stops the systemd watchdog pings


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

    def number(self, key: str, default: float, *, low: float, high: float | None = None) -> float:
        value = self.get(key, float, default)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.fail(key, f"must be {bound}; got {value}")
        return value

    def integer(self, key: str, default: int, *, low: int, high: int | None = None) -> int:
        value = self.get(key, int, default)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.fail(key, f"must be {bound}; got {value}")
        return value

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
        d = SourceConfig(path=path)
        name = reader.get("name", str, d.name) or path.name or f"source{index + 1}"
        if name in names:
            raise reader.fail("name", f"duplicate source name {name!r}; give each source a distinct name")
        names.add(name)
        sources.append(SourceConfig(path=path, watch_mode=reader.choice("watch_mode", WATCH_MODES, d.watch_mode),
                                    name=name))
        reader.done()
    return tuple(sources)


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
    d = S3Config(url=url)
    config = S3Config(
        url=url,
        endpoint=endpoint,
        region=reader.get("region", str, d.region),
        addressing_style=reader.choice("addressing_style", ADDRESSING_STYLES, d.addressing_style),
        storage_class=reader.get("storage_class", str, d.storage_class),
        bandwidth_limit=reader.integer("bandwidth_limit", d.bandwidth_limit, low=0),
        stale_upload_hours=reader.number("stale_upload_hours", d.stale_upload_hours, low=0.01),
        snapshot_minutes=reader.number("snapshot_minutes", d.snapshot_minutes, low=0.01),
        scrub_days=reader.number("scrub_days", d.scrub_days, low=0.0001),
        scrub_percent=reader.number("scrub_percent", d.scrub_percent, low=0.0, high=100.0),
        max_attempts=reader.integer("max_attempts", d.max_attempts, low=1, high=1000),
    )
    reader.done()
    return config


def _derive(file: Path, raw: dict[str, Any]) -> DeriveConfig:
    reader = _table(file, raw, "derive")
    d = DeriveConfig()
    derive = DeriveConfig(
        enabled=reader.get("enabled", bool, d.enabled),
        outbox=_existing_dir_or_creatable(reader, "outbox", reader.path("outbox", d.outbox) or d.outbox),
        long_edge=reader.integer("long_edge", d.long_edge, low=64, high=65535),
        jpeg_quality=reader.integer("jpeg_quality", d.jpeg_quality, low=1, high=100),
        max_pixels=reader.integer("max_pixels", d.max_pixels, low=1),
        time_limit=reader.number("time_limit", d.time_limit, low=1.0),
        pair_preference=reader.choice("pair_preference", PAIR_PREFERENCES, d.pair_preference),
        release_uncloaked=reader.get("release_uncloaked", bool, d.release_uncloaked),
        draft_tolerance=reader.number("draft_tolerance", d.draft_tolerance, low=0.0, high=0.25),
        workers=reader.integer("workers", d.workers, low=1, high=64),
    )
    reader.done()
    return derive


def _watermark(file: Path, raw: dict[str, Any]) -> WatermarkConfig:
    reader = _table(file, raw, "watermark")
    d = WatermarkConfig()
    logo = reader.path("logo", d.logo)
    if logo is not None and not logo.is_file():
        raise reader.fail("logo", f"no such file: {logo}")
    watermark = WatermarkConfig(
        enabled=reader.get("enabled", bool, d.enabled),
        text=reader.get("text", str, d.text),
        logo=logo,
        anchor=reader.choice("anchor", ANCHORS, d.anchor),
        inset=reader.number("inset", d.inset, low=0.0, high=0.45),
        size=reader.number("size", d.size, low=0.005, high=0.5),
        opacity=reader.number("opacity", d.opacity, low=0.0, high=1.0),
    )
    reader.done()
    return watermark


def _rights(file: Path, raw: dict[str, Any]) -> RightsConfig:
    reader = _table(file, raw, "rights")
    d = RightsConfig()
    rights = RightsConfig(
        creator=reader.get("creator", str, d.creator),
        copyright=reader.get("copyright", str, d.copyright),
        data_mining=reader.choice("data_mining", DATA_MINING_VALUES, d.data_mining),
        web_statement=reader.get("web_statement", str, d.web_statement),
        other_constraints=reader.get("other_constraints", str, d.other_constraints),
    )
    reader.done()
    return rights


def _cloak(file: Path, raw: dict[str, Any]) -> CloakConfig:
    """``$SHUTTERLOCK_MODELS_DIR`` overrides ``models_dir``; this is the only place that reads it."""
    reader = _table(file, raw, "cloak")
    d = CloakConfig()
    models_dir = reader.path("models_dir", d.models_dir)
    env_models = os.environ.get(MODELS_DIR_ENV)
    if env_models:
        models_dir = Path(env_models).expanduser()
    cloak = CloakConfig(
        strength=reader.choice("strength", STRENGTHS, d.strength),
        models_dir=models_dir,
        offline=reader.get("offline", bool, d.offline),
        threads=reader.integer("threads", d.threads, low=0, high=1024),
        seed=reader.integer("seed", d.seed, low=0),
        time_budget=reader.number("time_budget", d.time_budget, low=0.1),
    )
    reader.done()
    return cloak


def _engine(file: Path, raw: dict[str, Any]) -> EngineConfig:
    reader = _table(file, raw, "engine")
    d = EngineConfig()
    engine = EngineConfig(
        settle_seconds=reader.number("settle_seconds", d.settle_seconds, low=0.0, high=3600.0),
        rescan_minutes=reader.number("rescan_minutes", d.rescan_minutes, low=0.05),
        seal_workers=reader.integer("seal_workers", d.seal_workers, low=0, high=256),
        max_attempts=reader.integer("max_attempts", d.max_attempts, low=1, high=1000),
        chunk_size=reader.integer("chunk_size", d.chunk_size, low=4096, high=64 << 20),
        stall_seconds=reader.number("stall_seconds", d.stall_seconds, low=1.0),
    )
    reader.done()
    return engine


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
                    watermark=_watermark(file, raw), rights=_rights(file, raw), cloak=_cloak(file, raw),
                    engine=_engine(file, raw), paths=paths)
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
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    doc: dict[str, Any] = {
        "source": [table(s) for s in config.sources],
        "vault": table(config.vault),
        "derive": table(config.derive),
        "watermark": table(config.watermark),
        "rights": table(config.rights),
        "cloak": table(config.cloak),
        "engine": table(config.engine),
    }
    if config.s3 is not None:
        doc["s3"] = table(config.s3)
    return doc


def with_overrides(config: Config, *, sources: list[Path] | None = None, vault: Path | None = None,
                   outbox: Path | None = None, s3_url: str | None = None,
                   s3_endpoint: str | None = None) -> Config:
    """Apply ``init``'s flags on top of an existing or default config."""
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
