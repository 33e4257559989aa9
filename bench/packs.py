"""What one object per original costs against a packed format, on many small files: Shutterlock (format 1,
one sealed object per original) against restic (small files packed into ~4-16 MB pack files), on disk and
into a local moto S3 server. Input for a decision on a packed format; nothing here is a target.

    .venv/bin/python bench/packs.py [--files 5000]

Local: wall time, files created, apparent and allocated bytes of the vault and the repository. S3: the
replica of the sealed vault alone (the objects were sealed first) and restic's backup to the same server:
wall time and the number of objects (= PUT requests) each leaves in the bucket.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import boto3
from botocore.config import Config
from common import cleanup, installation, load_average, measured, require, scratch
from s3 import CREDENTIALS, start_moto
from scale import make_archive


def footprint(root: Path) -> tuple[int, int, int]:
    """(files, apparent bytes, allocated bytes) under ``root``."""
    files = apparent = allocated = 0
    for path in root.rglob("*"):
        if path.is_file():
            info = path.stat()
            files += 1
            apparent += info.st_size
            allocated += info.st_blocks * 512
    return files, apparent, allocated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    args = parser.parse_args()
    restic = require("restic")
    base = scratch("packs")
    server = None
    try:
        print(f"start: {load_average()}")
        archive = base / "archive"
        total = make_archive(archive, args.files, seed=args.files)
        server, port = start_moto(base)
        endpoint = f"http://127.0.0.1:{port}"

        ours = installation(base / "ours", [archive])
        ours.configure()
        sealed = measured([sys.executable, "-m", "shutterlock", "run", "--once"], env=ours.env)
        config = ours.base / "config.toml"
        config.write_text(config.read_text() + f'\n[s3]\nurl = "s3://ours-replicate/vault"\nendpoint = "{endpoint}"\n'
                          'addressing_style = "path"\n')
        replicated = measured([sys.executable, "-m", "shutterlock", "run", "--once"], env={**ours.env, **CREDENTIALS})

        env = {**os.environ, **CREDENTIALS, "RESTIC_PASSWORD": "benchmark passphrase",
               "RESTIC_CACHE_DIR": str(base / "rcache")}
        measured([restic, "init", "-r", str(base / "repo")], env=env)
        local = measured([restic, "backup", "-q", "-r", str(base / "repo"), str(archive)], env=env)
        measured([restic, "init", "-r", f"s3:{endpoint}/restic"], env=env)
        remote = measured([restic, "backup", "-q", "-r", f"s3:{endpoint}/restic", str(archive)], env=env)

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench",
                              config=Config(request_checksum_calculation="when_required"))

        def keys(bucket: str) -> int:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return sum(len(page.get("Contents", [])) for page in pages)

        vault, repo = footprint(ours.vault), footprint(base / "repo")
        print(f"{args.files:,} files of 1-16 KB, {total / 1e6:.1f} MB ({load_average()})")
        print(f"local  shutterlock run --once: {sealed.seconds:6.1f} s, {vault[0]:,} files, {vault[1] / 1e6:.1f} MB "
              f"apparent, {vault[2] / 1e6:.1f} MB allocated")
        print(f"local  restic backup:          {local.seconds:6.1f} s, {repo[0]:,} files, {repo[1] / 1e6:.1f} MB "
              f"apparent, {repo[2] / 1e6:.1f} MB allocated")
        print(f"S3     shutterlock replicate:  {replicated.seconds:6.1f} s, {keys('ours-replicate'):,} objects "
              f"(PUTs), {args.files / replicated.seconds:.0f} originals/s")
        print(f"S3     restic backup:          {remote.seconds:6.1f} s, {keys('restic'):,} objects (PUTs), "
              f"{args.files / remote.seconds:.0f} originals/s")
        print(f"end: {load_average()}")
    finally:
        if server is not None:
            server.kill()
        cleanup(base)


if __name__ == "__main__":
    main()
