"""The ``shutterlock`` command: parses arguments, calls the façade, prints, picks the exit code.

Exit codes (the contract): 0 ok, 1 the operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from shutterlock import __version__, app
from shutterlock import config as config_module
from shutterlock.config import Config, ConfigError
from shutterlock.control import DaemonNotRunning
from shutterlock.keys import KeyProblem, read_passphrase_file
from shutterlock.restore import Report
from shutterlock.service import setup_logging
from shutterlock.status import human_bytes

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> None:
    click.echo(f"shutterlock: {message}", err=True)
    sys.exit(code)


def handles_errors(func: F) -> F:
    """Turn the known failure kinds into one-line messages and the contract's exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, KeyProblem) as error:
            fail(str(error), 2)
        except app.OperationFailed as error:
            fail(str(error), 1)
        except KeyboardInterrupt:
            fail("interrupted", 1)

    return wrapper  # type: ignore[return-value]


def load_config(ctx: click.Context) -> Config:
    return config_module.load(ctx.obj["config_path"])


def passphrase_source(passphrase_file: Path | None, *, confirm: bool) -> Callable[[], bytes]:
    """Where the passphrase comes from: a file (or its env var), else a prompt on a TTY."""

    def read() -> bytes:
        file = passphrase_file or (Path(os.environ["SHUTTERLOCK_PASSPHRASE_FILE"])
                                   if os.environ.get("SHUTTERLOCK_PASSPHRASE_FILE") else None)
        if file is not None:
            return read_passphrase_file(file)
        if not sys.stdin.isatty():
            raise KeyProblem("no passphrase: give --passphrase-file FILE (or SHUTTERLOCK_PASSPHRASE_FILE) "
                             "when not on a terminal")
        first = getpass.getpass("Passphrase: ").encode()
        if confirm and getpass.getpass("Passphrase again: ").encode() != first:
            raise KeyProblem("the passphrases differ")
        if not first:
            raise KeyProblem("the passphrase is empty")
        return first

    return read


@contextmanager
def progress_bar(label: str, unit_bytes: bool) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """A progress bar on a terminal, nothing otherwise; yields (advance, set_total)."""
    if not sys.stderr.isatty():
        yield (lambda _: None), (lambda _: None)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [BarColumn(), DownloadColumn(), TransferSpeedColumn()] if unit_bytes else [BarColumn(),
                                                                                         MofNCompleteColumn()]
    with Progress(f"[bold]{label}", *columns, TimeRemainingColumn(), transient=True,
                  console=__import__("rich.console").console.Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        yield (lambda n: bar.advance(task, n)), (lambda total: bar.update(task, total=total))


def finish_restore(report: Report, dest: Path, verb: str) -> None:
    """Name every refused file, sum up, exit 1 if anything could not be restored."""
    for label, reason in report.bad:
        click.echo(f"REFUSED {label}: {reason}", err=True)
    click.echo(f"{verb} {len(report.ok)} file(s), {human_bytes(report.bytes)} to {dest}"
               + (f"; {len(report.bad)} refused" if report.bad else ""))
    if report.failed:
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shutterlock")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Config file (default: the platform's config dir; or $SHUTTERLOCK_CONFIG).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """Seal every original; share only cloaked, stripped, watermarked derivatives."""
    setup_logging("DEBUG" if verbose else os.environ.get("SHUTTERLOCK_LOG_LEVEL", "INFO"))
    ctx.obj = {"config_path": config_path}


@main.command()
@click.option("--source", "sources", multiple=True, type=click.Path(path_type=Path), help="A folder to watch.")
@click.option("--vault", type=click.Path(path_type=Path))
@click.option("--outbox", type=click.Path(path_type=Path))
@click.option("--s3-url")
@click.option("--s3-endpoint")
@click.option("--passphrase-file", type=click.Path(path_type=Path))
@click.pass_context
@handles_errors
def init(ctx: click.Context, sources: tuple[Path, ...], vault: Path | None, outbox: Path | None,
         s3_url: str | None, s3_endpoint: str | None, passphrase_file: Path | None) -> None:
    """Write the config and create the key envelope."""
    config = load_config(ctx)
    result = app.init(config, passphrase_source(passphrase_file, confirm=True), sources=list(sources) or None,
                      vault=vault, outbox=outbox, s3_url=s3_url, s3_endpoint=s3_endpoint)
    config = load_config(ctx)
    click.echo(f"config: {result.config_file} ({'created' if result.created_config else 'kept'})")
    click.echo(f"key:    {'created' if result.created_key else 'present'} ({config.paths.key_file})")
    for source in config.sources:
        click.echo(f"source: {source.name} = {source.path}")
    click.echo(f"vault:  {config.vault.path}")
    if config.s3 is not None:
        from shutterlock.replicate import publish_envelope
        from shutterlock.vault.store import StoreError

        try:
            publish_envelope(config)
            click.echo(f"replica: {config.s3.url}")
        except StoreError as error:
            click.echo(f"replica: {config.s3.url} (not reachable yet: {error}; the daemon will keep trying)")
    click.echo("Keep your passphrase safe: with the bucket (or vault) it is all you need to recover.")


@main.command()
@click.option("--once", is_flag=True, help="Scan, process everything due, exit.")
@click.pass_context
@handles_errors
def run(ctx: click.Context, once: bool) -> None:
    """The daemon, in the foreground."""
    config = load_config(ctx)
    if not config.paths.key_file.exists() and config.paths.credentials_dir is None:
        raise KeyProblem(f"no key file at {config.paths.key_file}: run `shutterlock init` first")
    if once:
        failures, status = app.run_once(config)
        click.echo(status["summary"])
        if failures:
            fail(f"{failures} item(s) failed; see `shutterlock status`", 1)
        return
    from shutterlock.daemon import AlreadyRunning, Daemon
    from shutterlock.vault.store import StoreError

    try:
        Daemon(config).run()
    except (AlreadyRunning, StoreError) as error:
        fail(str(error), 1)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handles_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """State, counts, backlog and recent problems."""
    info = app.status(load_config(ctx))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(f"{info['state']}: {info['summary']}{'' if info['running'] else '  (daemon not running)'}")
    files = info["files"]
    click.echo(f"sealed {files.get('sealed', 0)} originals ({info['objects']} objects), {info['sealed_today']} today;"
               f" backlog {info['backlog']['items']} ({human_bytes(info['backlog']['bytes'])})")
    replica = info.get("replica") or {}
    if replica.get("configured"):
        online = "online" if replica.get("online", True) else f"OFFLINE ({replica.get('error', '')})"
        click.echo(f"replica: {online}, {replica.get('waiting', 0)} waiting")
    derive = info.get("derive") or {}
    click.echo(f"derivatives: {derive.get('by_status', {})}, {derive.get('waiting', 0)} waiting")
    for source in info["sources"]:
        warn = f"  ! {source['warning']}" if source.get("warning") else ""
        click.echo(f"source {source['name']}: {source['path']} [{source['watch_mode']}]{warn}")
    for item in info.get("current", []):
        click.echo(f"now: {item}")
    for failed in info.get("failed_files", []):
        click.echo(f"failed: {failed['source']}/{failed['relpath']}: {failed['error']}")
    for event in info.get("errors", [])[:5]:
        click.echo(f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(event['at']))} {event['level']}: "
                   f"{event['message']}")


def _pause_resume(ctx: click.Context, paused: bool) -> None:
    config = load_config(ctx)
    try:
        app.control(config, "pause" if paused else "resume")
        click.echo("paused" if paused else "resumed")
    except DaemonNotRunning:
        app.set_paused_offline(config, paused)
        click.echo(f"no daemon running; it will start {'paused' if paused else 'unpaused'}")


@main.command()
@click.pass_context
@handles_errors
def pause(ctx: click.Context) -> None:
    """Stop starting new work (persists across restarts)."""
    _pause_resume(ctx, True)


@main.command()
@click.pass_context
@handles_errors
def resume(ctx: click.Context) -> None:
    """Resume work."""
    _pause_resume(ctx, False)


@main.command(name="ls")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handles_errors
def list_command(ctx: click.Context, as_json: bool) -> None:
    """The sealed originals."""
    rows = app.list_originals(load_config(ctx))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        sealed = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["sealed_at"]))
        made = row["derivative"] or {}
        shared = made.get("status", "-") + (" (cloaked)" if made.get("cloaked") else "")
        click.echo(f"{row['source']}/{row['path']}\t{row['size']}\t{sealed}\t{','.join(row['replicas'])}\t{shared}")


@main.command()
@click.argument("patterns", nargs=-1)
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path))
@click.option("--from", "where", type=click.Choice(["local", "s3"]), default="local", show_default=True)
@click.pass_context
@handles_errors
def restore(ctx: click.Context, patterns: tuple[str, ...], dest: Path, where: str) -> None:
    """Restore originals byte-identical, with their mtimes."""
    config = load_config(ctx)
    with progress_bar("restoring", unit_bytes=True) as (advance, set_total):
        report = app.restore_originals(config, list(patterns), dest, where, progress=advance, on_total=set_total)
    finish_restore(report, dest, "restored")


@main.command()
@click.option("--remote", is_flag=True, help="Check the S3 replica instead of the local vault.")
@click.option("--sample", type=click.FloatRange(0.01, 100), help="Check a random PERCENT of the objects.")
@click.pass_context
@handles_errors
def verify(ctx: click.Context, remote: bool, sample: float | None) -> None:
    """Authenticate stored objects; exit 1 if any is bad or missing."""
    config = load_config(ctx)
    with progress_bar("verifying", unit_bytes=False) as (advance, set_total):
        report = app.verify_objects(config, remote=remote, sample=sample, progress=advance, on_total=set_total)
    for label, reason in report.bad:
        click.echo(f"BAD {label}: {reason}", err=True)
    click.echo(f"verified {len(report.ok)} object(s) ({human_bytes(report.bytes)}): "
               + ("all good" if not report.bad else f"{len(report.bad)} bad or missing"))
    if report.failed:
        sys.exit(1)


@main.command()
@click.option("--s3-url", required=True, help="s3://BUCKET/PREFIX of the replica.")
@click.option("--s3-endpoint", help="Endpoint URL of an S3-compatible service.")
@click.option("--passphrase-file", type=click.Path(path_type=Path))
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path))
@click.pass_context
@handles_errors
def recover(ctx: click.Context, s3_url: str, s3_endpoint: str | None, passphrase_file: Path | None,
            dest: Path) -> None:
    """Disaster recovery: rebuild local state from the bucket and restore every original."""
    from shutterlock.recover import recover as run_recovery

    config = load_config(ctx)
    with progress_bar("recovering", unit_bytes=True) as (advance, _):
        report = run_recovery(config, s3_url, s3_endpoint, passphrase_source(passphrase_file, confirm=False), dest,
                              progress=advance)
    finish_restore(report, dest, "recovered")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--strength", type=click.Choice(["off", "light", "standard", "strong"]),
              help="Cloak strength (default: from the config).")
@click.option("--preview", is_flag=True,
              help="Also write NAME.preview.png: uncloaked | cloaked, what a model reconstructs, a 100 % crop.")
@click.pass_context
@handles_errors
def protect(ctx: click.Context, inputs: tuple[Path, ...], out_dir: Path, strength: str | None,
            preview: bool) -> None:
    """One-shot share-ready derivatives of the given files, same pipeline as the daemon."""
    from shutterlock.derive.protect import preview_path
    from shutterlock.derive.protect import protect as run_protect

    config = load_config(ctx)
    results = run_protect(list(inputs), out_dir, derive=config.derive, watermark=config.watermark,
                          rights=config.rights, cloak=config.cloak, strength=strength, preview=preview)
    failed = 0
    for result in results:
        if result.status == "written":
            cloak = f"cloaked ({result.cloak_strength})" if result.cloaked else "NOT cloaked"
            click.echo(f"{result.source} -> {result.output} [{cloak}]")
            if result.preview and result.output is not None:
                click.echo(f"  preview: {preview_path(result.output)}")
        else:
            failed += 1
            click.echo(f"{result.source}: {result.status}: {result.reason}", err=True)
    if failed:
        sys.exit(1)


@main.group()
def key() -> None:
    """Manage the key envelope."""


@key.command()
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="The current passphrase.")
@click.option("--new-passphrase-file", type=click.Path(path_type=Path), help="The new passphrase.")
@click.pass_context
@handles_errors
def passwd(ctx: click.Context, passphrase_file: Path | None, new_passphrase_file: Path | None) -> None:
    """Change the passphrase (re-wraps the master key; no object is re-encrypted)."""
    config = load_config(ctx)
    if new_passphrase_file is None and not sys.stdin.isatty():
        raise KeyProblem("no new passphrase: give --new-passphrase-file FILE when not on a terminal")
    old = passphrase_source(passphrase_file, confirm=False)()
    new = read_passphrase_file(new_passphrase_file) if new_passphrase_file else \
        passphrase_source(None, confirm=True)()
    app.change_passphrase(config, old, new)
    if config.s3 is not None:
        from shutterlock.replicate import publish_envelope
        from shutterlock.vault.store import StoreError

        try:
            publish_envelope(config)
        except StoreError as error:
            raise app.OperationFailed(f"passphrase changed locally, but the bucket still has the old envelope: "
                                      f"{error}; run `shutterlock key passwd` again when it is reachable") from None
    click.echo("passphrase changed")


@main.command()
@click.option("--autostart", type=click.Choice(["on", "off"]), help="Install or remove the login autostart entry.")
@click.pass_context
def tray(ctx: click.Context, autostart: str | None) -> None:
    """The tray icon (starts the daemon in-process if none is running)."""
    from shutterlock_tray.app import run as run_tray

    sys.exit(run_tray(ctx.obj["config_path"], autostart))


@main.group()
def service() -> None:
    """Run under systemd."""


@service.command()
@click.option("--user", "scope", flag_value="user", help="A user unit, for a workstation login.")
@click.option("--system", "scope", flag_value="system", help="A system unit, for a home server.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.pass_context
@handles_errors
def install(ctx: click.Context, scope: str | None, print_only: bool) -> None:
    """Write the systemd unit with this installation's paths and explain the next steps."""
    from shutterlock.units import install_unit

    if scope is None:
        raise click.UsageError("choose --user or --system")
    click.echo(install_unit(load_config(ctx), scope, print_only=print_only))


if __name__ == "__main__":
    main()
