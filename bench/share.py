"""A 100-image private share: time to create and publish it, and time to first and to all thumbnails in a browser.

    python bench/share.py [--count 100] [--rounds 3]

Inputs: sample JPEGs from ../shared/samples, upscaled to 3000 px and made distinct, sealed and
derived by ``shutterlock run --once`` (long edge 2048, JPEG q90, watermark; cloak off so that the
setup takes a minute, not hours: the share is created with uncloaked images allowed, which changes
nothing in what is measured). The S3 host is moto's server on 127.0.0.1.

Measured:
- prepare: making the grid thumbnail of every derivative (decode, resize, encode), in-process, alone;
- create: ``Shares.create`` end to end (select, thumbnails, encryption, parallel uploads of both
  sizes, lifecycle rule, manifest, page) — what ``share create`` costs once derivatives exist;
- browser: headless chromium (Debian's), fresh profile each round, desktop 1440x900 and phone
  390x844: milliseconds from navigation start to the first and to the last of the thumbnails
  decrypted and decoded (an ``img`` load event on its blob URL), recorded by a listener injected
  through the DevTools protocol before the page loads (the viewer has no timing code of its own).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from browser import DESKTOP, PHONE, browser  # noqa: E402
from common import Installation, scratch  # noqa: E402
from conftest import S3_ENV, S3Server  # noqa: E402
from shutterlock import config as config_module  # noqa: E402
from shutterlock import keystore  # noqa: E402
from shutterlock.catalog import Catalog  # noqa: E402
from shutterlock.config import ShareConfig  # noqa: E402
from shutterlock.share import Shares  # noqa: E402
from shutterlock.share.images import prepare  # noqa: E402
from shutterlock.vault.format import Keys  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples" / "exif-samples" / "jpg"
RECORDER = """
window.__thumbs = [];
document.addEventListener('load', (event) => {
  const node = event.target;
  if (node.tagName === 'IMG' && node.src.startsWith('blob:') && node.closest('ul.grid')) {
    window.__thumbs.push(performance.now());
  }
}, true);
"""


def make_originals(folder: Path, count: int) -> None:
    bases = sorted(SAMPLES.glob("gps/*.jpg")) + sorted(SAMPLES.glob("*.jpg"))
    folder.mkdir(parents=True)
    for index in range(count):
        with Image.open(bases[index % len(bases)]) as source:
            image = source.convert("RGB")
        scale = 3000 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        image.putpixel((index % image.width, 0), (index % 256, 0, 0))  # a distinct original each time
        image.save(folder / f"IMG_{index:04d}.jpg", quality=92)


def thumbnails_in_browser(link: str, size: tuple[int, int], profile: Path, count: int) -> tuple[float, float]:
    with browser(profile, size) as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        driver.get(link)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            times = driver.execute_script("return window.__thumbs || []")
            if len(times) >= count:
                return min(times), max(times)
            time.sleep(0.05)
    raise SystemExit(f"only {len(times)} of {count} thumbnails loaded in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(S3_ENV)
    base = scratch("share")
    server = S3Server(base)
    try:
        print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
        server.start()
        server.create_bucket("photos")
        install = Installation(base, [base / "src"])
        make_originals(install.sources[0], args.count)
        install.configure('\n[cloak]\nstrength = "off"\n\n[rights]\ncreator = "Bench Mark"\n', derive=True)
        started = time.monotonic()
        install.cli("run", "--once")
        print(f"setup: {args.count} originals sealed and derived in {time.monotonic() - started:.1f} s (not measured)")

        state = Path(install.env["XDG_DATA_HOME"]) / "shutterlock"
        paths = config_module.Paths(config_file=base / "config.toml", state_dir=state, cache_dir=base / "cache",
                                    runtime_dir=base / "run", credentials_dir=None)
        config = config_module.parse(tomllib.loads(paths.config_file.read_text()), paths.config_file, paths)
        keys = Keys.from_master(keystore.load_master_key(paths))
        catalog = Catalog(paths.catalog)
        derivatives = [Path(d["output"]) for d in catalog.derivatives() if d["status"] == "written"]
        assert len(derivatives) == args.count, f"{len(derivatives)} derivatives"

        started = time.monotonic()
        prepared = [prepare(path, 640) for path in derivatives]
        prepare_s = time.monotonic() - started
        full = sum(len(p.full) for p in prepared)
        thumbs = sum(len(p.thumb) for p in prepared)
        print(f"prepare: {prepare_s:.2f} s for {args.count} thumbnails ({thumbs / args.count / 1024:.0f} KiB each; "
              f"share size {full / args.count / 1024:.0f} KiB each)")

        creates, firsts, lasts = [], {DESKTOP: [], PHONE: []}, {DESKTOP: [], PHONE: []}
        config = replace(config, share=ShareConfig(url="s3://photos/shares", endpoint=server.endpoint,
                                                   addressing_style="path"))
        for round_number in range(args.rounds):
            shares = Shares(config, catalog, keys)
            started = time.monotonic()
            info = shares.create(f"bench-{round_number}", [], allow_uncloaked=True)
            creates.append(time.monotonic() - started)
            for size in (DESKTOP, PHONE):
                first, last = thumbnails_in_browser(info.link, size, base / f"profile-{round_number}-{size[0]}",
                                                    args.count)
                firsts[size].append(first)
                lasts[size].append(last)
            shares.revoke(f"bench-{round_number}")
        print(f"create + publish: median {statistics.median(creates):.2f} s, best {min(creates):.2f} s "
              f"({args.count} images, {2 * args.count + 2} objects, {(full + thumbs) / 1e6:.1f} MB)")
        for size, label in ((DESKTOP, "desktop 1440x900"), (PHONE, "phone 390x844")):
            print(f"browser {label}: first thumbnail median {statistics.median(firsts[size]):.0f} ms "
                  f"(best {min(firsts[size]):.0f}), all {args.count} median {statistics.median(lasts[size]):.0f} ms "
                  f"(best {min(lasts[size]):.0f})")
        print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
              f"{os.cpu_count()} cores; chromium {_chromium()}")
        catalog.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _chromium() -> str:
    out = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip()
    return out.split()[1] if out else "?"


if __name__ == "__main__":
    main()
