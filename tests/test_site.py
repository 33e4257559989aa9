"""The public portfolio, end to end with real components and the real CLI: 20 sample photos sealed, derived
and cloaked by the daemon (``run --once``), built with ``site build --out`` into a folder and published with
``site publish`` to a real S3 server process (moto), then opened in headless chromium at phone and desktop
widths, light and dark. Screenshots: test-artifacts/site/."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import urllib.request
import urllib.robotparser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import DESKTOP, PHONE, available, browser, static_server
from conftest import ROOT, S3_ENV, Home, S3Server, _new_home
from PIL import Image
from shutterlock.config import RightsConfig, SiteConfig
from shutterlock.provenance import TRUSTED, Credit, SigningIdentity, Treatment, identity, sign_jpeg, verify_bytes
from shutterlock.site import Candidate, Protection, build
from shutterlock.site.signals import crawlers
from test_derive import ALLOWED_GROUPS, ALLOWED_TAGS, exif_json
from test_provenance import C2PA_TAGS

SAMPLES = ROOT.parent / "shared" / "samples" / "exif-samples"
MODELS = ROOT.parent / "shared" / "models"
ARTIFACTS = ROOT / "test-artifacts" / "site"
CREATOR = "Ada Lovelace"
RIGHTS = RightsConfig(creator=CREATOR)
BASE_URL = "https://ada.example"
SITE = SiteConfig(title="Ada Lovelace Photography", tagline="Coasts, streets and the light between them",
                  about="I photograph coasts and cities at the edges of the day.\n\nCommissions welcome.",
                  email="studio@ada.example", links=("https://ada.example/journal",), base_url=BASE_URL)
ALBUMS = {"gps": "Coast", "tests": "Street", "mobile": "Travel", "hdr": "Light", "exif-org": "Archive",
          "heic": "Portraits"}
# 21 real photos: the 20 of the portfolio, then one added before the re-publish.
PHOTOS = [*sorted((SAMPLES / "jpg" / "gps").glob("*.jpg"))[:5], *sorted((SAMPLES / "jpg" / "hdr").glob("*.jpg")),
          SAMPLES / "jpg" / "mobile" / "jolla.jpg", SAMPLES / "heic" / "IMG_5195.HEIC",
          *(SAMPLES / "jpg" / "tests" / name for name in ("42_IndexError.jpg", "30-type_error.jpg", "33-type_error.jpg",
                                                           "35-empty.jpg", "28-hex_value.jpg")),
          *(SAMPLES / "jpg" / "exif-org" / name for name in ("sony-powershota5.jpg", "fujifilm-dx10.jpg",
                                                              "ricoh-rdc5300.jpg", "nikon-e950.jpg")),
          SAMPLES / "jpg" / "gps" / "DSCN0042.jpg"]

pytestmark = [pytest.mark.skipif(not SAMPLES.is_dir() or not MODELS.is_dir(), reason="../shared not present"),
              pytest.mark.skipif(available() is not None, reason=str(available()))]


@dataclass
class Studio:
    """One installation that derived the 20 photos with the real daemon (``run --once``)."""

    home: Home
    server: S3Server
    folder: Path  # `site build --out` (the folder a static host or rsync would serve)
    build_stdout: str
    publish_stdout: str

    @property
    def signer(self) -> SigningIdentity:
        return identity.load(identity.folder(self.home.state))


def _config(home: Home, server: S3Server) -> str:
    captions = "\n".join(f'"{name}" = "Low tide, first light"' for name in ("Coast/DSCN0010.jpg", "DSCN0021.jpg"))
    return f"""
[[source]]
path = "{home.sources[0]}"
[vault]
path = "{home.vault}"
[derive]
outbox = "{home.outbox}"
long_edge = 800
[rights]
creator = "{CREATOR}"
[cloak]
strength = "light"
offline = true
threads = 1
time_budget = 1.0
[engine]
settle_seconds = 0.0
[site]
url = "s3://web/portfolio"
endpoint = "{server.endpoint}"
base_url = "{BASE_URL}"
title = "{SITE.title}"
tagline = "{SITE.tagline}"
about = \"\"\"{SITE.about}\"\"\"
email = "{SITE.email}"
links = ["{SITE.links[0]}"]
[site.captions]
{captions}
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, key_template: Path) -> Iterator[Studio]:
    base = tmp_path_factory.mktemp("studio")
    home = _new_home(base, [base / "src"])
    home.env.update(S3_ENV)
    server = S3Server(base)
    server.start()
    try:
        _public_website_bucket(server)
        home.config_file.parent.mkdir(parents=True, exist_ok=True)
        home.config_file.write_text(_config(home, server))
        home.state.mkdir(parents=True)
        for item in ("master.key", "key-envelope.json"):
            shutil.copy2(key_template / item, home.state / item)
        for source in PHOTOS[:20]:
            _add(home, source)
        home.cli("run", "--once", check=True, timeout=900)
        folder = base / "public"
        built = home.cli("site", "build", "--out", str(folder), check=True)
        published = home.cli("site", "publish", check=True)
        yield Studio(home, server, folder, built.stdout + built.stderr, published.stdout + published.stderr)
    finally:
        server.stop()


def _add(home: Home, source: Path) -> Path:
    album = home.sources[0] / ALBUMS[source.parent.name]
    album.mkdir(exist_ok=True)
    return Path(shutil.copy2(source, album))


def _public_website_bucket(server: S3Server) -> None:
    """A bucket set up the way docs/PUBLISHING.md tells the photographer: anyone may read, only they write."""
    server.create_bucket("web")
    server.client().put_bucket_policy(Bucket="web", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::web/*"}]}))


def _published(studio: Studio) -> dict[str, bytes]:
    return {key.removeprefix("portfolio/"): body for key, body in studio.server.all_objects("web").items()}


def test_the_cli_builds_and_publishes_20_photos(studio: Studio) -> None:
    assert f"{studio.folder}: 20 photographs in 6 albums" in studio.build_stdout, studio.build_stdout
    assert "s3://web/portfolio: 20 photographs;" in studio.publish_stdout, studio.publish_stdout
    assert "left out" not in studio.build_stdout + studio.publish_stdout
    index = json.loads((studio.folder / ".shutterlock-site.json").read_text())
    assert sorted(_published(studio)) == sorted([*index, ".shutterlock-site.json"])
    page = (studio.folder / "albums" / "coast" / "index.html").read_text()
    assert page.count('class="tile"') == 5 and "Low tide, first light" in page


def test_unprotected_derivatives_are_left_out_and_reported(studio: Studio, tmp_path: Path) -> None:
    signer = studio.signer
    outbox = sorted(studio.home.outbox.rglob("*.jpg"))
    assert len(outbox) == 20
    data = bytearray(outbox[0].read_bytes())
    data[-300] ^= 0x01
    (tmp_path / "tampered.jpg").write_bytes(bytes(data))
    with Image.open(outbox[1]) as image:  # re-encoded: the manifest is gone
        image.save(tmp_path / "stripped.jpg", quality=90)
    (tmp_path / "stranger.jpg").write_bytes(
        sign_jpeg(_unsigned(outbox[2]), identity.create("Mallory"), Treatment(cloak_strength="light"),
                  Credit(creator="Mallory")))
    (tmp_path / "uncloaked.jpg").write_bytes(outbox[3].read_bytes())
    cloaked = Protection(True, "light", False)
    candidates = [Candidate("bad/tampered", tmp_path / "tampered.jpg", "Coast", cloaked),
                  Candidate("bad/stripped", tmp_path / "stripped.jpg", "Coast", cloaked),
                  Candidate("bad/stranger", tmp_path / "stranger.jpg", "Coast", cloaked),
                  Candidate("bad/uncloaked", tmp_path / "uncloaked.jpg", "Coast", Protection(False, "light", False)),
                  Candidate("good", outbox[4], "Coast", cloaked)]
    report = build(candidates, tmp_path / "site", site=SITE, rights=RIGHTS, identity=signer)
    reasons = dict(report.left_out)
    assert report.photos == 1 and set(reasons) == {"bad/tampered", "bad/stripped", "bad/stranger", "bad/uncloaked"}
    assert reasons["bad/tampered"].startswith("provenance invalid") and "dataHash.mismatch" in reasons["bad/tampered"]
    assert reasons["bad/stripped"].startswith("provenance missing")
    assert reasons["bad/stranger"] == "provenance valid: signed by Mallory, not by your key"
    assert reasons["bad/uncloaked"] == "not cloaked"
    published = {p.read_bytes() for p in (tmp_path / "site").rglob("*.jpg")}
    assert not published & {(tmp_path / f"{name}.jpg").read_bytes() for name in ("tampered", "stripped", "stranger")}


def _unsigned(path: Path) -> bytes:
    """The derivative's bytes without its APP11 (C2PA) segments."""
    data = path.read_bytes()
    out, pos = bytearray(data[:2]), 2
    while data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] != 0xEB:
            out += data[pos:pos + 2 + length]
        pos += 2 + length
    return bytes(out + data[pos:])


def test_signals_files_are_present_and_valid(studio: Studio) -> None:
    out = studio.folder
    robots = urllib.robotparser.RobotFileParser()
    robots.parse((out / "robots.txt").read_text().splitlines())
    listed = [c.user_agent for c in crawlers()]
    assert {"GPTBot", "ClaudeBot", "CCBot", "Google-Extended", "Bytespider", "meta-externalagent"} <= set(listed)
    for agent in listed:
        assert not robots.can_fetch(agent, f"{BASE_URL}/albums/coast/index.html"), agent
        assert not robots.can_fetch(f"{agent}/1.0", f"{BASE_URL}/img/x.jpg"), agent
    assert robots.can_fetch("Googlebot", f"{BASE_URL}/index.html")
    assert all(c.source.startswith("https://") for c in crawlers())
    tdm = json.loads((out / ".well-known" / "tdmrep.json").read_text())
    assert tdm == [{"location": "/", "tdm-reservation": 1, "tdm-policy": f"{BASE_URL}/rights.html"}]
    ai = (out / "ai.txt").read_text().splitlines()
    assert ai[1] == "User-Agent: *" and "Disallow: /" in ai and "Disallow: *.jpg" in ai
    published = _published(studio)
    for name in ("robots.txt", "ai.txt", ".well-known/tdmrep.json"):
        assert published[name] == (out / name).read_bytes(), name


def test_a_non_shutterlock_folder_is_never_written_into(studio: Studio, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = studio.home.cli("site", "build", "--out", str(tmp_path))
    assert result.returncode == 1 and "not empty and not a Shutterlock site" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_the_portfolio_in_a_real_browser_from_a_folder_and_from_s3(studio: Studio, tmp_path: Path) -> None:
    published = _published(studio)
    _assert_nothing_unprotected(studio, published)
    _assert_nothing_unprotected(studio, {str(p.relative_to(studio.folder)): p.read_bytes()
                                         for p in studio.folder.rglob("*") if p.is_file()})
    for record in exif_json(sorted(studio.folder.rglob("*.jpg"))):  # renditions carry only the allow-list too
        unexpected = {tag for tag in record if tag not in ALLOWED_TAGS | C2PA_TAGS
                      and tag.split(":", 1)[0] not in ALLOWED_GROUPS}
        assert not unexpected, (record["SourceFile"], sorted(unexpected))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with static_server(studio.folder) as base:
        sources = {"folder": base, "s3": f"{studio.server.endpoint}/web/portfolio/"}
        for size in (PHONE, DESKTOP):
            with browser(tmp_path / f"profile-{size[0]}", size) as driver:
                for name, root in sources.items():
                    _tour(driver, root, name, size[0])
    with urllib.request.urlopen(f"{studio.server.endpoint}/web/portfolio/.well-known/tdmrep.json") as response:
        assert json.loads(response.read())[0]["tdm-reservation"] == 1
        assert response.headers["Content-Type"] == "application/json"


def _assert_nothing_unprotected(studio: Studio, tree: dict[str, bytes]) -> None:
    """Every image verifies as ours, cloaked, forbidding all four uses; no original's bytes or name anywhere."""
    originals = {hashlib.sha256(p.read_bytes()).hexdigest() for p in PHOTOS}
    images = {path: data for path, data in tree.items() if path.endswith(".jpg")}
    assert len(images) >= 20 * 2
    anchor = studio.signer.anchor_pem
    for path, data in images.items():
        assert hashlib.sha256(data).hexdigest() not in originals, path
        verdict = verify_bytes(data, anchor=anchor)
        assert verdict.state == TRUSTED and verdict.forbids_all, (path, verdict)
        assert "c2pa.filtered" in verdict.actions, path  # cloaked, every one
    text = b"".join(data for path, data in tree.items() if not path.endswith(".jpg"))
    for name in [*(p.stem for p in PHOTOS), "DSCN", "IMG_", "jolla"]:
        assert name.encode() not in text, name


def _tour(driver: Any, root: str, source: str, width: int) -> None:
    """Every kind of page: all images load, nothing overflows sideways, the no-AI tags are there."""
    pages = {"index": "index.html", "album": "albums/street/index.html", "about": "about.html",
             "rights": "rights.html"}
    driver.get(root + "albums/coast/index.html")
    first_photo = driver.find_element("css selector", ".gallery a").get_attribute("href")
    pages["photo"] = first_photo.removeprefix(root)
    for name, path in pages.items():
        driver.get(root + path)
        _load_every_image(driver)
        metas = {m.get_attribute("name"): m.get_attribute("content")
                 for m in driver.find_elements("css selector", "meta[name]")}
        assert metas["robots"] == "noai, noimageai", path
        assert metas["tdm-reservation"] == "1" and metas["tdm-policy"] == f"{BASE_URL}/rights.html", path
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (source, width, path, overflow)
        for scheme in ("light", "dark"):
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                   {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
            background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
            red, green, blue = (int(v) for v in re.findall(r"\d+", background)[:3])
            assert (red + green + blue > 600) == (scheme == "light"), (scheme, background)
            _screenshot(driver, ARTIFACTS / f"{source}-{name}-{width}{'-dark' if scheme == 'dark' else ''}.png")
        if name == "index":
            columns = driver.execute_script(
                "return new Set([...document.querySelectorAll('.album-card')].map(e => e.offsetTop)).size")
            cards = len(driver.find_elements("css selector", ".album-card"))
            assert columns == (cards if width == PHONE[0] else -(-cards // 3)), (width, columns, cards)
        if name == "photo":
            box = driver.execute_script("const r = document.querySelector('.photo img').getBoundingClientRect();"
                                        "return [r.width, r.height, window.innerWidth, window.innerHeight]")
            assert box[0] <= box[2] and box[1] <= box[3] and box[0] > box[2] * 0.5, box


def _screenshot(driver: Any, path: Path) -> None:
    """The whole page, not just the viewport."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def _load_every_image(driver: Any) -> None:
    """Scroll through the page (lazy images load near the viewport), then every image must have decoded."""
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    for image in driver.find_elements("css selector", "img"):
        driver.execute_script("arguments[0].scrollIntoView()", image)
    driver.execute_script("window.scrollTo(0, 0)")
    result = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([...document.images].map(i => i.decode().then(() => null, () => i.currentSrc || i.src)))
            .then(failed => done([document.images.length, failed.filter(Boolean),
                                  [...document.images].filter(i => !i.naturalWidth).length]));""")
    count, failed, empty = result
    assert not failed and not empty, (driver.current_url, failed)
    assert count >= 0


def test_republish_after_one_new_photo_sends_only_its_files_and_changed_pages(studio: Studio) -> None:
    home = studio.home
    before = json.loads(studio.server.all_objects("web")["portfolio/.shutterlock-site.json"])
    _add(home, PHOTOS[20])
    home.cli("run", "--once", check=True, timeout=300)
    log_start = studio.server.log.stat().st_size
    result = home.cli("site", "publish", check=True)
    assert "s3://web/portfolio: 21 photographs;" in result.stdout, result.stdout
    after = json.loads(studio.server.all_objects("web")["portfolio/.shutterlock-site.json"])
    changed = sorted(path for path, digest in after.items() if before.get(path) != digest)
    new_images = sorted(path for path in changed if path.startswith("img/"))
    assert 2 <= len(new_images) <= 4 and len({path.rsplit("-", 1)[0] for path in new_images}) == 1, new_images
    changed_pages = sorted(set(changed) - set(new_images))
    # Its own page, its album, the neighbour whose "next" now points to it, and the album count on the index.
    assert len(changed_pages) == 4 and "index.html" in changed_pages and "albums/coast/index.html" in changed_pages
    requests = studio.server.log.read_bytes()[log_start:].decode(errors="replace")
    puts = sorted(re.findall(r'"PUT /web/portfolio/(\S+) HTTP', requests))
    assert puts == sorted([*changed, ".shutterlock-site.json"]), puts
    assert len(re.findall(r'"(?:PUT|POST|DELETE) ', requests)) == len(puts)
    assert f"{len(changed)} files sent" in result.stdout


def test_candidates_come_from_the_catalog_records(tmp_path: Path) -> None:
    from shutterlock.catalog import Catalog, Discovery
    from shutterlock.site.select import candidates

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    rows = [("Lisbon/tram.jpg", "written", True, "standard"), ("Lisbon/bare.jpg", "written", False, "off"),
            ("top.jpg", "written", True, "light"), ("Lisbon/held.jpg", "held", False, "standard"),
            ("Lisbon/pair.CR3", "skipped", False, "standard")]
    for number, (relpath, status, cloaked, strength) in enumerate(rows, start=1):
        catalog.discover_many([Discovery("trips", relpath, 1, 1)])
        catalog.record_derivative(number, "0" * 64, status=status, output=str(tmp_path / f"{number}.jpg")
                                  if status == "written" else None, reason="cloak weights missing" if
                                  status == "held" else "", cloaked=cloaked, strength=strength, watermark="© Ada",
                                  settings="", rating=4 if relpath == "Lisbon/tram.jpg" else None)
    offered, missing = candidates(catalog.derivatives(), captions=[("*/tram.jpg", "The 28 at dusk")])
    assert [(c.key, c.album, c.caption) for c in offered] == [
        ("trips/Lisbon/bare.jpg", "Lisbon", ""), ("trips/Lisbon/tram.jpg", "Lisbon", "The 28 at dusk"),
        ("trips/top.jpg", "trips", "")]
    assert not offered[0].protection.cloak_off  # made with the cloak off, but the cloak is on now
    assert missing == [("trips/Lisbon/held.jpg", "no derivative (held: cloak weights missing)")]
    off, _ = candidates(catalog.derivatives(), patterns=["Lisbon/"], cloak_strength="off")
    assert [c.key for c in off] == ["trips/Lisbon/bare.jpg", "trips/Lisbon/tram.jpg"] and off[0].protection.cloak_off
    starred, _ = candidates(catalog.derivatives(), min_rating=3)  # the rating the derive worker read
    assert [c.key for c in starred] == ["trips/Lisbon/tram.jpg"]
    catalog.close()
