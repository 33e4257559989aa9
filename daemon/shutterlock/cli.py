"""The ``shutterlock`` command: parses arguments, calls the façade, prints, picks the exit code.

Exit codes (the contract): 0 ok, 1 the operation failed, 2 usage or configuration error. Every error the
program reports is a ``ShutterlockError`` carrying its exit code; :class:`_Commands` turns it into one
line on stderr in one place, so nothing reaches the user as a traceback.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shutterlock import __version__, facade
from shutterlock import config as config_module
from shutterlock.config import STRENGTHS, Choices, Config
from shutterlock.config import warnings as config_warnings
from shutterlock.errors import EXIT_FAILED, EXIT_USAGE, DaemonNotRunning, KeyProblem, ShutterlockError
from shutterlock.keystore import read_passphrase_file
from shutterlock.restore import Report
from shutterlock.service import setup_logging
from shutterlock.status import Status, duration, human_bytes

if TYPE_CHECKING:
    from shutterlock.share import ShareInfo


def fail(message: str, code: int) -> None:
    click.echo(f"shutterlock: {message}", err=True)
    sys.exit(code)


class _Commands(click.Group):
    """Maps every ShutterlockError (and Ctrl-C) raised by a command to one line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShutterlockError as error:
            fail(str(error), error.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_FAILED)


def load_config(ctx: click.Context) -> Config:
    return config_module.load(ctx.obj["config_path"])


def passphrase_source(passphrase_file: Path | None, *, confirm: bool,
                      prompt: str = "Passphrase") -> Callable[[], bytes]:
    """Where a passphrase comes from: a file (or its env var), else a labelled prompt on a TTY."""

    def read() -> bytes:
        file = passphrase_file or (Path(os.environ["SHUTTERLOCK_PASSPHRASE_FILE"])
                                   if os.environ.get("SHUTTERLOCK_PASSPHRASE_FILE") else None)
        if file is not None:
            return read_passphrase_file(file)
        if not sys.stdin.isatty():
            raise KeyProblem("no passphrase: give --passphrase-file FILE (or SHUTTERLOCK_PASSPHRASE_FILE) "
                             "when not on a terminal")
        first = getpass.getpass(f"{prompt}: ").encode()
        if not first:
            raise KeyProblem("the passphrase is empty")
        if confirm and getpass.getpass(f"{prompt}, again: ").encode() != first:
            raise KeyProblem("the passphrases differ")
        return first

    return read


@contextmanager
def progress_bar(label: str, unit_bytes: bool) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """A progress bar on a terminal, nothing otherwise; yields (advance, set_total)."""
    if not sys.stderr.isatty():
        yield (lambda _: None), (lambda _: None)
        return
    from rich.console import Console
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
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        yield (lambda n: bar.advance(task, n)), (lambda total: bar.update(task, total=total))


def finish_restore(report: Report, dest: Path, verb: str) -> None:
    """Name every refused file, sum up, exit 1 if anything could not be restored."""
    for note in report.notes:
        click.echo(note)
    for label, reason in report.bad:
        click.echo(f"REFUSED {label}: {reason}", err=True)
    click.echo(f"{verb} {len(report.ok)} file(s), {human_bytes(report.bytes)} to {dest}"
               + (f"; {len(report.bad)} refused" if report.bad else ""))
    if report.failed:
        sys.exit(EXIT_FAILED)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--creator", help="Your name, for the watermark and the copyright of shared copies.")
@click.option("--copyright", "copyright_notice", help="The copyright notice (default: © YEAR CREATOR).")
@click.option("--passphrase-file", type=click.Path(path_type=Path))
@click.pass_context
def init(ctx: click.Context, sources: tuple[Path, ...], vault: Path | None, outbox: Path | None,
         s3_url: str | None, s3_endpoint: str | None, creator: str | None, copyright_notice: str | None,
         passphrase_file: Path | None) -> None:
    """Write the config and create the key envelope; on a terminal, ask what it needs."""
    config = load_config(ctx)
    if creator is None and sys.stdin.isatty() and not config.rights.creator:
        click.echo("Shared copies carry a visible watermark and a copyright notice with your name.")
        creator = click.prompt("Your name (Enter to leave it out)", default="", show_default=False).strip()
        if creator and copyright_notice is None:
            copyright_notice = click.prompt(
                "Copyright notice (Enter for the year of each photo and your name, e.g. "
                f"'© {time.localtime().tm_year} {creator}')", default="", show_default=False).strip()
    if sys.stdin.isatty() and not config.paths.key_file.exists() and passphrase_file is None:
        click.echo("Choose a passphrase. With it, the vault (or the bucket) brings everything back; without it,\n"
                   "nobody — not even you — can read your originals. Write it down somewhere safe.")
    choices = Choices(sources=list(sources) or None, vault=vault, outbox=outbox, s3_url=s3_url,
                      s3_endpoint=s3_endpoint, creator=creator, copyright=copyright_notice)
    result = facade.init(config, passphrase_source(passphrase_file, confirm=True), choices)
    config = load_config(ctx)
    click.echo(f"\nconfig  {result.config_file} ({'created' if result.created_config else 'kept'})")
    where = result.key_file or f"from {config.paths.credentials_dir}, no key file kept"
    click.echo(f"key     {'created' if result.created_key else 'present'} ({where})")
    for source in config.sources:
        click.echo(f"import  {source.path}\n        copy or import your photos here: each is sealed within seconds")
    click.echo(f"vault   {config.vault.path}\n        your originals, encrypted; with the passphrase, enough to "
               "recover everything")
    click.echo(f"signer  {result.signer} ({'created' if result.created_signer else 'present'})\n        signs the "
               "C2PA manifest of every derivative: who made it, and that AI training is not allowed")
    if config.s3 is not None:
        problem = result.replica_problem
        click.echo(f"bucket  {config.s3.url}\n        an encrypted copy of the vault"
                   + (f" (not reachable yet: {problem}; the daemon keeps trying)" if problem else ""))
    if config.derive.enabled:
        click.echo(f"outbox  {config.derive.outbox}\n        share-ready copies: resized, cloaked, watermarked, "
                   "stripped of private metadata")
    for warning in config_warnings(config):
        click.echo(f"warning: {warning}", err=True)
    click.echo("\nNext: `shutterlock run` (or `shutterlock service install --user`, or the tray).")


@main.command()
@click.option("--once", is_flag=True, help="Scan, process everything due, exit.")
@click.pass_context
def run(ctx: click.Context, once: bool) -> None:
    """The daemon, in the foreground."""
    config = load_config(ctx)
    if not config.paths.key_file.exists() and config.paths.credentials_dir is None:
        raise KeyProblem(f"no key file at {config.paths.key_file}: run `shutterlock init` first")
    if once:
        failures, status = facade.run_once(config)
        click.echo(status.summary)
        if failures:
            fail(f"{failures} item(s) failed; see `shutterlock status`", EXIT_FAILED)
        return
    from shutterlock.daemon import Daemon

    Daemon(config).run()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="The status document, for machines.")
@click.option("--watch", is_flag=True, help="Follow it live: progress, rates and time left (Ctrl-C to stop).")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool) -> None:
    """State, progress, backlog and recent problems."""
    config = load_config(ctx)
    if watch:
        follow_status(config)
        return
    info = facade.status(config)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2, default=str))
        return
    click.echo("\n".join(describe(info)))


def follow_status(config: Config) -> None:
    """A live view (rich) redrawn whenever the daemon's status changes, and each second for rates and ETAs."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    info = facade.status(config)
    with contextlib.suppress(KeyboardInterrupt), \
            Live(Text("\n".join(describe(info))), console=Console(), auto_refresh=False) as live:
        while True:
            try:
                info = facade.control(config, "watch", version=info.version, timeout=1.0) if info.running \
                    else facade.status(config)
            except DaemonNotRunning:
                info = facade.status(config)
            live.update(Text("\n".join(describe(info))), refresh=True)
            if not info.running:
                time.sleep(2.0)


def describe(info: Status) -> list[str]:
    """The status for people: a headline, then one line per part that has something to say."""
    lines = [f"{info.state}: {info.summary}" + ("" if info.running else "   (the daemon is not running)")]
    files = info.files
    last = f", the last at {time.strftime('%Y-%m-%d %H:%M', time.localtime(info.last_sealed_at))}" \
        if info.last_sealed_at else ""
    lines.append(f"  sealed       {files.sealed:,} originals ({info.objects:,} objects), {info.sealed_today:,} today"
                 + last)
    for lane in info.lanes:
        if lane.waiting or lane.current:
            rate = f", {lane.rate:.1f}/s" if lane.rate else ""
            eta = f", about {duration(lane.eta_seconds)} left" if lane.eta_seconds else ""
            lines.append(f"  {lane.name:<12} {lane.done} of {lane.total} done{rate}{eta}")
    replica = info.replica
    if replica.configured:
        state = "online" if replica.online else f"OFFLINE: {replica.error}"
        waiting = f", {replica.waiting:,} objects ({human_bytes(replica.waiting_bytes)}) waiting" \
            if replica.waiting else ", up to date"
        lines.append(f"  bucket       {replica.url}: {state}{waiting}")
    if info.derive.enabled:
        made = info.derive.by_status
        parts = [f"{made.get('written', 0):,} made"] + [f"{made[k]:,} {label}" for k, label in
                                                      (("held", "held back"), ("failed", "failed"),
                                                       ("skipped", "skipped")) if made.get(k)]
        if info.derive.waiting:
            parts.append(f"{info.derive.waiting:,} waiting")
        lines.append(f"  derivatives  {', '.join(parts)} (cloak: {info.cloak.strength}); outbox {info.outbox}")
        if info.cloak.error:
            lines.append(f"  cloak        {info.cloak.error}")
        isolation = info.derive.isolation
        if isolation is not None:
            lines.append(f"  worker       confined: {'; '.join(isolation.active)}")
            for missing in isolation.missing:
                lines.append(f"  worker       ! not available: {missing}")
    for source in info.sources:
        warn = f"  ! {source.warning}" if source.warning else ""
        lines.append(f"  source       {source.name}: {source.path} ({source.watch_mode}){warn}")
        lines.extend(f"  skipped      {source.name}: {item}" for item in source.skipped)
    lines.extend(f"  settling     {item.source}/{item.relpath} {item.reason}" for item in info.unsettled)
    for item in info.current:
        lines.append(f"  now          {item}")
    for why in info.restart_needed:
        lines.append(f"  restart      {why}")
    if info.rotation is not None:
        lines.append(f"  key rotation {info.rotation.done:,} of {info.rotation.total:,} objects under the new key; "
                     "the old key and its objects are deleted when all are")
    if info.replica.problem:
        lines.append(f"  ! bucket     {info.replica.problem}")
    for failed in info.failed_files:
        lines.append(f"  not sealed   {failed.source}/{failed.relpath}: {failed.error}")
    for event in info.errors[:5]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(event.at))
        lines.append(f"  {event.level:<12} {when} {event.subject}: {event.message}")
    return lines


def _pause_resume(ctx: click.Context, paused: bool) -> None:
    config = load_config(ctx)
    try:
        facade.control(config, "pause" if paused else "resume")
        click.echo("paused" if paused else "resumed")
    except DaemonNotRunning:
        facade.set_paused_offline(config, paused)
        click.echo(f"no daemon running; it will start {'paused' if paused else 'unpaused'}")


@main.command()
@click.pass_context
def pause(ctx: click.Context) -> None:
    """Stop starting new work (persists across restarts)."""
    _pause_resume(ctx, True)


@main.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Resume work."""
    _pause_resume(ctx, False)


@main.command()
@click.argument("patterns", nargs=-1)
@click.option("--stale", "stale_only", is_flag=True, help="Only derivatives made under older settings.")
@click.pass_context
def rederive(ctx: click.Context, patterns: tuple[str, ...], stale_only: bool) -> None:
    """Make derivatives again (all, or those matching PATTERN) after a settings change."""
    count = facade.rederive(load_config(ctx), list(patterns), stale_only=stale_only)
    click.echo(f"{count} derivative(s) queued; `shutterlock status --watch` shows the progress")


@main.command()
@click.pass_context
def retry(ctx: click.Context) -> None:
    """Try again now whatever failed or is held back (after fixing a permission, a bucket, the weights)."""
    click.echo(facade.retry(load_config(ctx)))


@main.group()
def models() -> None:
    """The cloak's model weights (pinned by SHA-256)."""


@models.command(name="status")
@click.pass_context
def models_status(ctx: click.Context) -> None:
    """Where each weights file was found; exit 1 if any is missing."""
    _report_weights(facade.weights(load_config(ctx)))


@models.command()
@click.option("--from", "source", type=click.Path(file_okay=False, path_type=Path),
              help="Copy them from this folder instead of downloading (an offline machine).")
@click.pass_context
def fetch(ctx: click.Context, source: Path | None) -> None:
    """Download (or copy) the missing weights and verify them; exit 1 if any could not be had."""
    _report_weights(facade.weights(load_config(ctx), fetch=source is None, source=source))


def _report_weights(files: list[facade.WeightsFile]) -> None:
    for item in files:
        click.echo(f"{item.file}: {item.found}" if item.found else f"{item.file}: MISSING — {item.problem}")
    if any(item.found is None for item in files):
        from shutterlock.cloak.models import cache_dir

        fail("the cloak cannot run until every weights file is in place: download them from "
             "https://github.com/madebyollin/taesd and run `shutterlock models fetch --from FOLDER`, or put them "
             f"in {cache_dir()} (or the folder named by [cloak] models_dir or $SHUTTERLOCK_MODELS_DIR); "
             "until then derivatives are held back (see `shutterlock status`)", EXIT_FAILED)


@main.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Make the running daemon re-read its config."""
    info = facade.control(load_config(ctx), "reload")
    click.echo("configuration reloaded" + "".join(f"\n  restart needed: {why}" for why in info.restart_needed))


@main.command(name="ls")
@click.option("--json", "as_json", is_flag=True)
@click.option("--versions", is_flag=True, help="Every sealed version of every path, numbered from the oldest.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool, versions: bool) -> None:
    """The sealed originals."""
    rows = facade.list_originals(load_config(ctx), versions=versions)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        sealed = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["sealed_at"]))
        if versions:
            click.echo(f"{row['source']}/{row['path']}\tv{row['version']}\t{row['size']}\t{sealed}\t"
                       f"{row['content_id'][:12]}\t{','.join(row['replicas'])}")
            continue
        made = row["derivative"] or {}
        shared = made.get("status", "-") + (" (cloaked)" if made.get("cloaked") else "") + \
            (" STALE" if made.get("stale") else "")
        click.echo(f"{row['source']}/{row['path']}\t{row['size']}\t{sealed}\t{','.join(row['replicas'])}\t{shared}")


def octal_mode(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or not mode & 0o600 == 0o600:
        raise click.BadParameter(f"{value!r}: an octal mode such as 600 or 644 (the owner must read and write)")
    return mode


@main.command()
@click.argument("patterns", nargs=-1)
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path))
@click.option("--from", "where", type=click.Choice(["local", "s3"]), default="local", show_default=True)
@click.option("--at", type=click.DateTime(["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]),
              help='The versions current at this local time, "YYYY-MM-DD HH:MM".')
@click.option("--all-versions", is_flag=True, help="Every version, each as NAME.vN.ext (N = 1 is the oldest).")
@click.option("--overwrite", is_flag=True, help="Replace files already in the way (otherwise they are reported).")
@click.option("--mode", default="600", show_default=True, callback=octal_mode,
              help="Permissions of restored files (folders get the matching search bits).")
@click.pass_context
def restore(ctx: click.Context, patterns: tuple[str, ...], dest: Path, where: str, at: Any, all_versions: bool,
            overwrite: bool, mode: int) -> None:
    """Restore originals byte-identical, with their mtimes, confined under --to."""
    if at is not None and all_versions:
        raise click.UsageError("--at and --all-versions exclude each other")
    config = load_config(ctx)
    with progress_bar("restoring", unit_bytes=True) as (advance, set_total):
        report = facade.restore_originals(config, list(patterns), dest, where, at=at.timestamp() if at else None,
                                          all_versions=all_versions, overwrite=overwrite, mode=mode,
                                          progress=advance, on_total=set_total)
    finish_restore(report, dest, "restored")


@main.command()
@click.option("--remote", is_flag=True, help="Check the S3 replica instead of the local vault.")
@click.option("--sample", type=click.FloatRange(0.01, 100), help="Check a random PERCENT of the objects.")
@click.pass_context
def verify(ctx: click.Context, remote: bool, sample: float | None) -> None:
    """Authenticate stored objects, repair bad ones from the other copy; exit 1 if any stays bad or missing."""
    config = load_config(ctx)
    with progress_bar("verifying", unit_bytes=False) as (advance, set_total):
        report = facade.verify_objects(config, remote=remote, sample=sample, progress=advance, on_total=set_total)
    for note in report.notes:
        click.echo(note, err=True)
    for label, reason in report.bad:
        click.echo(f"BAD {label}: {reason}", err=True)
    click.echo(f"verified {len(report.ok)} object(s) ({human_bytes(report.bytes)}): "
               + ("all good" if not report.bad else f"{len(report.bad)} bad or missing")
               + (f"; {len(report.repaired)} repaired" if report.repaired else ""))
    if report.failed:
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--s3-url", help="s3://BUCKET/PREFIX of the replica.")
@click.option("--s3-endpoint", help="Endpoint URL of an S3-compatible service.")
@click.option("--vault", "vault_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A vault folder (e.g. on an external drive), instead of a bucket; it is used in place.")
@click.option("--passphrase-file", type=click.Path(path_type=Path))
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path))
@click.pass_context
def recover(ctx: click.Context, s3_url: str | None, s3_endpoint: str | None, vault_dir: Path | None,
            passphrase_file: Path | None, dest: Path) -> None:
    """Disaster recovery: rebuild local state from the bucket (or the vault) and restore every original."""
    config = load_config(ctx)
    with progress_bar("recovering", unit_bytes=True) as (advance, _):
        report = facade.recover(config, passphrase_source(passphrase_file, confirm=False), dest, s3_url=s3_url,
                                s3_endpoint=s3_endpoint, vault=vault_dir, progress=advance)
    finish_restore(report, dest, "recovered")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--strength", type=click.Choice(STRENGTHS), help="Cloak strength (default: from the config).")
@click.option("--preview", is_flag=True,
              help="Also write NAME.preview.png: uncloaked | cloaked, what a model reconstructs, a 100 % crop.")
@click.pass_context
def protect(ctx: click.Context, inputs: tuple[Path, ...], out_dir: Path, strength: str | None,
            preview: bool) -> None:
    """One-shot share-ready derivatives of the given files, same pipeline as the daemon."""
    from shutterlock.derive.protect import preview_path
    from shutterlock.derive.render import Outcome

    results = facade.protect(load_config(ctx), list(inputs), out_dir, strength=strength, preview=preview)
    failed = 0
    for result in results:
        made = result.rendered
        if made.outcome is Outcome.WRITTEN:
            cloak = f"cloaked ({made.cloak_strength})" if made.cloaked else "NOT cloaked"
            click.echo(f"{made.source} -> {result.output} [{cloak}]")
            if preview and made.cloaked and result.output is not None:
                click.echo(f"  preview: {preview_path(result.output)}")
        else:
            failed += 1
            click.echo(f"{made.source}: {made.outcome}: {made.reason}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


USES = {"cawg.ai_generative_training": "AI generative training", "cawg.ai_training": "AI training",
        "cawg.data_mining": "data mining", "cawg.ai_inference": "AI inference"}


@main.group()
def provenance() -> None:
    """The signed C2PA manifest on every derivative."""


@provenance.command(name="verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def provenance_verify(ctx: click.Context, file: Path) -> None:
    """Who signed FILE's manifest and what it forbids; exit 1 if it is missing or invalid."""
    verdict = facade.verify_provenance(load_config(ctx), file)
    if verdict.state == "missing":
        fail(f"{file}: no C2PA manifest", EXIT_FAILED)
    if not verdict.ok:
        fail(f"{file}: INVALID manifest (signed as {verdict.signer or 'unknown'}): {'; '.join(verdict.problems)}",
             EXIT_FAILED)
    trust = "your own signing key" if verdict.state == "trusted" else \
        "certificate not on a trust list (self-issued or an unknown CA)"
    click.echo(f"{file}: valid, signed by {verdict.signer} (issuer {verdict.issuer}; {trust})")
    forbidden = [USES.get(use, use) for use in verdict.forbidden]
    click.echo(f"forbids: {', '.join(forbidden) if forbidden else 'nothing'}")
    if verdict.creator or verdict.copyright:
        click.echo(f"rights:  {' / '.join(part for part in (verdict.creator, verdict.copyright) if part)}")
    click.echo(f"actions: {', '.join(verdict.actions)}")
    if verdict.ingredients or verdict.thumbnails:
        click.echo(f"embeds:  {verdict.ingredients} ingredient(s), {verdict.thumbnails} thumbnail(s)")


@main.group()
def site() -> None:
    """The public portfolio: protected derivatives only, with every no-AI signal."""


def _report_left_out(left_out: list[tuple[str, str]]) -> None:
    for key_, reason in left_out:
        click.echo(f"left out {key_}: {reason}", err=True)


@site.command(name="build")
@click.argument("patterns", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder to build into.")
@click.option("--min-rating", type=click.IntRange(0, 5), help="Only originals with at least this many stars.")
@click.pass_context
def site_build(ctx: click.Context, patterns: tuple[str, ...], out: Path | None, min_rating: int | None) -> None:
    """Build the portfolio from the derivatives of the matching originals (default: all)."""
    report = facade.site_build(load_config(ctx), list(patterns), out, min_rating)
    click.echo(f"{report.out}: {report.photos} photographs in {report.albums} albums "
               f"({len(report.written)} pages rewritten, {len(report.removed)} files removed)")
    _report_left_out(report.left_out)


@site.command(name="publish")
@click.pass_context
def site_publish(ctx: click.Context) -> None:
    """Build the portfolio and send what changed to [site] url."""
    built, sent = facade.site_publish(load_config(ctx))
    click.echo(f"{sent.target}: {built.photos} photographs; {len(sent.uploaded)} files sent, {sent.unchanged} "
               f"unchanged, {len(sent.deleted)} deleted")
    _report_left_out(built.left_out)


@main.group()
def key() -> None:
    """Manage the key envelope."""


@key.command()
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="The current passphrase.")
@click.option("--new-passphrase-file", type=click.Path(path_type=Path), help="The new passphrase.")
@click.pass_context
def passwd(ctx: click.Context, passphrase_file: Path | None, new_passphrase_file: Path | None) -> None:
    """Change the passphrase (re-wraps the master key; no object is re-encrypted)."""
    config = load_config(ctx)
    if new_passphrase_file is None and not sys.stdin.isatty():
        raise KeyProblem("no new passphrase: give --new-passphrase-file FILE when not on a terminal")
    old = passphrase_source(passphrase_file, confirm=False, prompt="Current passphrase")()
    facade.check_passphrase(config, old)  # before asking for the new one twice
    new = read_passphrase_file(new_passphrase_file) if new_passphrase_file else \
        passphrase_source(None, confirm=True, prompt="New passphrase")()
    facade.change_passphrase(config, old, new)
    click.echo("passphrase changed")


@main.group(name="catalog")
def catalog_group() -> None:
    """Look after the catalog."""


@catalog_group.command(name="rebuild")
@click.option("--from", "where", type=click.Choice(["local", "s3"]),
              help="Start from the bucket's newest catalog snapshot (s3, the default with a bucket) or from the "
                   "objects alone (local). Objects in the vault and the bucket are always read.")
@click.pass_context
def catalog_rebuild(ctx: click.Context, where: str | None) -> None:
    """Rebuild a lost or damaged catalog (the daemon must be stopped; the old file is kept)."""
    result = facade.rebuild_catalog(load_config(ctx), where)
    for note in result.notes:
        click.echo(note)
    if result.kept is not None:
        click.echo(f"the old catalog is kept as {result.kept}")
    click.echo(f"catalog rebuilt: {result.paths:,} paths, {result.objects:,} objects")


@key.command()
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="The current passphrase.")
@click.option("--new-passphrase-file", type=click.Path(path_type=Path),
              help="The passphrase for the new key (may be the current one).")
@click.pass_context
def rotate(ctx: click.Context, passphrase_file: Path | None, new_passphrase_file: Path | None) -> None:
    """A new master key: new objects use it at once, the daemon re-encrypts the old ones in the background,
    then deletes them, the old key and its envelope (the daemon must be stopped to start it)."""
    config = load_config(ctx)
    if new_passphrase_file is None and not sys.stdin.isatty():
        raise KeyProblem("no new passphrase: give --new-passphrase-file FILE when not on a terminal")
    old = passphrase_source(passphrase_file, confirm=False, prompt="Current passphrase")()
    facade.check_passphrase(config, old)
    new = read_passphrase_file(new_passphrase_file) if new_passphrase_file else \
        passphrase_source(None, confirm=True, prompt="Passphrase for the new key")()
    count = facade.rotate_key(config, old, new)
    click.echo(f"new master key in use; {count:,} object(s) will be re-encrypted in the background when the daemon "
               "runs (`shutterlock status` shows how far it is)")


@main.command()
@click.option("--autostart", type=click.Choice(["on", "off"]), help="Install or remove the login autostart entry.")
@click.pass_context
def tray(ctx: click.Context, autostart: str | None) -> None:
    """The tray icon; starts the daemon as its own process if none is running."""
    if autostart is not None:
        from shutterlock import autostart as entry

        if not entry.supported():
            fail("--autostart manages XDG autostart (Linux/BSD desktops); on macOS use Login Items, "
                 "on Windows the Startup folder", EXIT_USAGE)
        if autostart == "on":
            click.echo(f"autostart: installed {entry.install(entry.command(ctx.obj['config_path']))}")
        else:
            removed = entry.remove()
            click.echo(f"autostart: removed {removed}" if removed else "autostart: was not installed")
        return
    from shutterlock_tray.icon import run as run_tray

    sys.exit(run_tray(ctx.obj["config_path"]))


# --------------------------------------------------------------------------- private shares


@main.group()
def share() -> None:
    """Private, end-to-end encrypted client galleries on your own bucket (docs/SHARING.md)."""


@contextmanager
def phase_progress() -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar for work in phases ("making derivatives", "encrypting and uploading"), on a terminal."""
    if not sys.stderr.isatty():
        yield lambda done, total, what: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("preparing", total=None)
        yield lambda done, total, what: bar.update(task, description=what, completed=done, total=total)


def share_password(ask: bool) -> str | None:
    """Typed twice on a terminal, else one line of standard input; never on the command line."""
    if not ask:
        return None
    if sys.stdin.isatty():
        first = getpass.getpass("Password for the client: ")
        if getpass.getpass("Password, again: ") != first:
            fail("the passwords differ", EXIT_USAGE)
        return first
    return sys.stdin.readline().rstrip("\r\n")


def when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "-"


def echo_share(info: ShareInfo) -> None:
    photos = f"{info.images} photo{'s' if info.images != 1 else ''}"
    extras = [w for w, on in (("password", info.password), ("download allowed", info.download),
                              ("feedback on", info.feedback), (f"{info.uncloaked} NOT cloaked", info.uncloaked))
              if on]
    click.echo(f"share {info.name!r}: {info.state}, {photos}, ends {when(info.expires_at)}"
               + (f" ({', '.join(extras)})" if extras else ""))
    if info.link:
        click.echo(f"link:    {info.link}")
        click.echo(f"QR code: {info.qr_png}\n         {info.qr_svg}")
    if info.feedback:
        new = f", {info.new_feedback} new" if info.new_feedback else ""
        click.echo(f"feedback: {info.visitors} visitor(s), {info.favourites} favourite(s), "
                   f"{info.comments} comment(s){new}"
                   + (f"; {info.rejected_feedback} unreadable message(s) discarded" if info.rejected_feedback else ""))
    for note in info.notes:
        click.echo(f"note:    {note}")


@share.command(name="create")
@click.argument("name")
@click.argument("patterns", nargs=-1)
@click.option("--password", "ask_password", is_flag=True,
              help="Protect with a password too (typed twice, or one line on standard input).")
@click.option("--expires", help="When it ends: 36h, 14d, 2w, or a date (2026-12-24 = the end of that day).")
@click.option("--allow-download", is_flag=True, help="Let the client download the share-size photos.")
@click.option("--feedback/--no-feedback", default=True, show_default=True,
              help="Favourites and comments, encrypted to you.")
@click.option("--allow-uncloaked", is_flag=True,
              help="Also share derivatives made without the cloak (the gallery says so).")
@click.option("--title", default="", help="Shown to the client (default: NAME).")
@click.option("--message", default="", help="A note shown under the title.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def share_create(ctx: click.Context, name: str, patterns: tuple[str, ...], ask_password: bool, expires: str | None,
                 allow_download: bool, feedback: bool, allow_uncloaked: bool, title: str, message: str,
                 as_json: bool) -> None:
    """Publish a gallery of the matching originals' protected derivatives (made now if missing)."""
    config = load_config(ctx)
    password = share_password(ask_password)
    with phase_progress() as progress:
        info = facade.share_create(config, name, list(patterns), password=password, expires=expires,
                                   download=allow_download, feedback=feedback, allow_uncloaked=allow_uncloaked,
                                   title=title, message=message, progress=progress)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
    else:
        echo_share(info)


@share.command(name="ls")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def share_ls(ctx: click.Context, as_json: bool) -> None:
    """Every share: state, photos, end, feedback."""
    shares = facade.share_list(load_config(ctx))
    if as_json:
        click.echo(json.dumps([info.to_dict() for info in shares], indent=2))
        return
    for info in shares:
        new = f" ({info.new_feedback} new)" if info.new_feedback else ""
        click.echo(f"{info.name}\t{info.state}\t{info.images} photos\tends {when(info.expires_at)}\t"
                   f"{info.visitors} visitor(s){new}")


@share.command(name="show")
@click.argument("name")
@click.pass_context
def share_show(ctx: click.Context, name: str) -> None:
    """The link, its QR code, the expiry and what clients sent back."""
    info, code = facade.share_show(load_config(ctx), name)
    echo_share(info)
    if code:
        click.echo(code, nl=False)


@share.command(name="add")
@click.argument("name")
@click.argument("patterns", nargs=-1, required=True)
@click.pass_context
def share_add(ctx: click.Context, name: str, patterns: tuple[str, ...]) -> None:
    """Add the matching originals' derivatives to a share (same link)."""
    with phase_progress() as progress:
        info = facade.share_add(load_config(ctx), name, list(patterns), progress)
    echo_share(info)


@share.command(name="remove")
@click.argument("name")
@click.argument("patterns", nargs=-1, required=True)
@click.pass_context
def share_remove(ctx: click.Context, name: str, patterns: tuple[str, ...]) -> None:
    """Take the matching photos out of a share (same link); their objects are deleted."""
    echo_share(facade.share_remove(load_config(ctx), name, list(patterns)))


@share.command(name="revoke")
@click.argument("name")
@click.pass_context
def share_revoke(ctx: click.Context, name: str) -> None:
    """Delete every object of the share now; the link then says the gallery is no longer available."""
    info = facade.share_revoke(load_config(ctx), name)
    click.echo(f"share {info.name!r} revoked: its photos, names and feedback were deleted from the bucket "
               "(a client may have saved what they saw)")


@share.command(name="feedback")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def share_feedback(ctx: click.Context, name: str, as_json: bool) -> None:
    """The clients' favourites and comments, decrypted (collected from the bucket first)."""
    entries = facade.share_feedback(load_config(ctx), name)
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    if not entries:
        click.echo(f"no feedback for {name!r} yet")
    for entry in entries:
        who = entry["name"] or f"visitor {entry['visitor'][:6]}"
        click.echo(f"{who} ({'new, ' if entry['new'] else ''}sent {entry['sent_at'] or '?'}):")
        for favourite in entry["favourites"]:
            click.echo(f"  ♥ {favourite['path'] or favourite['name']}")
        for comment in entry["comments"]:
            click.echo(f"  « {comment['text']} » on {comment['path'] or comment['name']}")
        if entry["note"]:
            click.echo(f"  note: {entry['note']}")


@share.command(name="doctor")
@click.pass_context
def share_doctor(ctx: click.Context) -> None:
    """Try, on the bucket, everything shares need; say exactly what to change. Exit 1 if something fails."""
    checks = facade.share_doctor(load_config(ctx))
    for check in checks:
        click.echo(f"{check.status.upper():4} {check.name}: {check.message}")
        if check.fix:
            click.echo("     fix: " + check.fix.replace("\n", "\n     "))
    if any(check.status == "fail" for check in checks):
        sys.exit(EXIT_FAILED)


@main.group()
def service() -> None:
    """Run under systemd."""


@service.command()
@click.option("--user", "scope", flag_value="user", help="A user unit, for a workstation login.")
@click.option("--system", "scope", flag_value="system", help="A system unit, for a home server.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.pass_context
def install(ctx: click.Context, scope: str | None, print_only: bool) -> None:
    """Write the systemd unit with this installation's paths and explain the next steps."""
    from shutterlock.units import install_unit

    if scope is None:
        raise click.UsageError("choose --user or --system")
    click.echo(install_unit(load_config(ctx), scope, print_only=print_only))


if __name__ == "__main__":
    main()
