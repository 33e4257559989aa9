"""Replication throughput to a local moto S3 server: Shutterlock vs `restic backup` to the same server.

    .venv/bin/python bench/s3.py [--files 80] [--size-mb 25]

Shutterlock is measured twice: replication alone (the card sealed locally first, then a run that only
uploads) and end to end (seal + replicate in one `run --once` on a fresh installation). restic's backup
does its own chunking, encryption and upload. Target: at least 1.5× restic.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config
from common import cleanup, installation, make_card, require, scratch, timed

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(base: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(base / "moto.log", "wb") as log:
        server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                   "-p", str(port)], stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench",
                          config=Config(request_checksum_calculation="when_required"))
    for bucket in ("ours-replicate", "ours-e2e", "restic"):
        client.create_bucket(Bucket=bucket)
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--size-mb", type=float, default=25)
    args = parser.parse_args()
    restic = require("restic")
    base = scratch("s3")
    server = None
    try:
        server, port = start_moto(base)
        endpoint = f"http://127.0.0.1:{port}"
        card = base / "card"
        mb = make_card(card, args.files, int(args.size_mb * 1_000_000)) / 1e6

        def s3_section(bucket: str) -> str:
            return f'\n[s3]\nurl = "s3://{bucket}/vault"\nendpoint = "{endpoint}"\naddressing_style = "path"\n'

        replicate_only = installation(base / "replicate", [card])
        replicate_only.configure()
        replicate_only.cli("run", "--once")
        (replicate_only.base / "config.toml").write_text(
            (replicate_only.base / "config.toml").read_text() + s3_section("ours-replicate"))
        env = {**replicate_only.env, **CREDENTIALS}
        rep_seconds, rep_rss, _ = timed([sys.executable, "-m", "shutterlock", "run", "--once"], env=env)

        end_to_end = installation(base / "e2e", [card])
        end_to_end.configure(extra=s3_section("ours-e2e"), env=CREDENTIALS)
        env = {**end_to_end.env, **CREDENTIALS}
        e2e_seconds, e2e_rss, _ = timed([sys.executable, "-m", "shutterlock", "run", "--once"], env=env)

        restic_env = {**os.environ, **CREDENTIALS, "RESTIC_PASSWORD": "benchmark passphrase",
                      "RESTIC_CACHE_DIR": str(base / "rcache")}
        repo = f"s3:{endpoint}/restic"
        timed([restic, "init", "-r", repo], env=restic_env)
        r_seconds, r_rss, _ = timed([restic, "backup", "-q", "-r", repo, str(card)], env=restic_env)

        rates = {"replicate": mb / rep_seconds, "e2e": mb / e2e_seconds, "restic": mb / r_seconds}
        print(f"card: {args.files} files, {mb:.0f} MB of random bytes; moto server on 127.0.0.1; "
              f"{os.cpu_count()} cores shared with the server")
        print(f"shutterlock replicate only   : {rep_seconds:6.2f} s {rates['replicate']:7.1f} MB/s  "
              f"peak RSS {rep_rss:6.1f} MB")
        print(f"shutterlock seal + replicate : {e2e_seconds:6.2f} s {rates['e2e']:7.1f} MB/s  "
              f"peak RSS {e2e_rss:6.1f} MB")
        print(f"restic backup to s3          : {r_seconds:6.2f} s {rates['restic']:7.1f} MB/s  "
              f"peak RSS {r_rss:6.1f} MB")
        print(f"ratio replicate/restic: {rates['replicate'] / rates['restic']:.2f}x, "
              f"seal+replicate/restic: {rates['e2e'] / rates['restic']:.2f}x (target >= 1.5x)")
    finally:
        if server is not None:
            server.kill()
        cleanup(base)


if __name__ == "__main__":
    main()
