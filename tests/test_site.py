"""The public portfolio, end to end with real components: 20 sample photos derived and cloaked in the
real worker, signed, built into a site, published to a folder and to a real S3 server process (moto),
and opened in headless chromium at phone and desktop widths. Screenshots: test-artifacts/site/."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import urllib.request
import urllib.robotparser
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import DESKTOP, PHONE, available, browser, static_server
from conftest import ROOT, S3_ENV, S3Server
from PIL import Image
from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig
from shutterlock.derive import WRITTEN, DeriveJob, DeriveRunner
from shutterlock.derive.metadata import data_mining_uri
from shutterlock.provenance import TRUSTED, Credit, SigningIdentity, Treatment, identity, sign_jpeg, verify_bytes
from shutterlock.site import Candidate, Protection, SiteConfig, SiteError, build, publish
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
class Portfolio:
    identity: SigningIdentity
    candidates: list[Candidate]  # the 21 good ones, in PHOTOS order
    left_out: dict[str, Path]  # key → derivative that must never be published
    originals: dict[bytes, str]  # sha256 → name of every original and every unpublishable derivative


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory: pytest.TempPathFactory) -> Portfolio:
    """Derive and cloak in the real worker process, then sign in this (the daemon's) process."""
    outbox = tmp_path_factory.mktemp("outbox")
    signer = identity.create(CREATOR)
    derive = DeriveConfig(outbox=outbox, long_edge=800)
    cloak = CloakConfig(strength="light", models_dir=MODELS, offline=True, threads=1, time_budget=1.0)
    candidates, originals = [], {}
    with DeriveRunner(derive.time_limit) as runner:
        for index, source in enumerate(PHOTOS):
            result = runner.run(DeriveJob(source=source, derive=derive, watermark=WatermarkConfig(), rights=RIGHTS,
                                          cloak=cloak, seed=index))
            assert result.status == WRITTEN and result.cloaked, (source.name, result.reason)
            assert result.output is not None and result.capture_time is not None
            signed = _sign(result.output.read_bytes(), signer, result.cloak_strength, result.watermark,
                           result.capture_time.year)
            result.output.write_bytes(signed)
            originals[hashlib.sha256(source.read_bytes()).hexdigest().encode()] = source.name
            caption = "Low tide, first light" if index % 4 == 0 else ""
            candidates.append(Candidate(key=f"{source.parent.name}/{source.name}", derivative=result.output,
                                        album=ALBUMS[source.parent.name], caption=caption,
                                        protection=Protection(True, result.cloak_strength, False, result.watermark)))
        # Three derivatives that must never reach the site.
        source = SAMPLES / "jpg" / "exif-org" / "olympus-c960.jpg"
        bare = runner.run(DeriveJob(source=source, derive=derive, watermark=WatermarkConfig(), rights=RIGHTS,
                                    cloak=CloakConfig(strength="off")))
    assert bare.output is not None
    uncloaked = bare.output.with_name("uncloaked.jpg")
    uncloaked.write_bytes(_sign(bare.output.read_bytes(), signer, "", bare.watermark, 2024))
    tampered = bare.output.with_name("tampered.jpg")
    data = bytearray(_sign(bare.output.read_bytes(), signer, "light", bare.watermark, 2024))
    data[-300] ^= 0x01
    tampered.write_bytes(bytes(data))
    stranger = bare.output.with_name("stranger.jpg")
    stranger.write_bytes(_sign(bare.output.read_bytes(), identity.create("Mallory"), "light", bare.watermark, 2024))
    left_out = {"uncloaked": uncloaked, "tampered": tampered, "stranger": stranger}
    for path in [bare.output, *left_out.values()]:
        originals[hashlib.sha256(path.read_bytes()).hexdigest().encode()] = path.name
    return Portfolio(signer, candidates, left_out, originals)


def _sign(jpeg: bytes, signer: SigningIdentity, strength: str, watermark: str, year: int) -> bytes:
    return sign_jpeg(jpeg, signer, Treatment(resized_to=800, cloak_strength=strength, watermark=watermark),
                     Credit(creator=CREATOR, copyright=f"© {year} {CREATOR}",
                            data_mining=data_mining_uri(RIGHTS.data_mining)))


def _bad_candidates(portfolio: Portfolio) -> list[Candidate]:
    protections = {"uncloaked": Protection(False, "light", False), "tampered": Protection(True, "light", False),
                   "stranger": Protection(True, "light", False)}
    return [Candidate(key=f"bad/{name}", derivative=path, album="Coast", protection=protections[name])
            for name, path in portfolio.left_out.items()]


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def built(portfolio: Portfolio, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("site") / "build"
    report = build([*portfolio.candidates[:20], *_bad_candidates(portfolio)], out, site=SITE, rights=RIGHTS,
                   identity=portfolio.identity)
    return out, report


def test_unprotected_derivatives_are_left_out_and_reported(built: tuple[Path, Any]) -> None:
    _, report = built
    assert (report.photos, report.albums) == (20, 6)
    reasons = dict(report.left_out)
    assert set(reasons) == {"bad/uncloaked", "bad/tampered", "bad/stranger"}
    assert reasons["bad/uncloaked"] == "not cloaked"
    assert reasons["bad/tampered"].startswith("provenance invalid") and "dataHash.mismatch" in reasons["bad/tampered"]
    assert reasons["bad/stranger"] == "provenance valid: signed by Mallory, not by your key"


def test_signals_files_are_present_and_valid(built: tuple[Path, Any]) -> None:
    out, _ = built
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


def test_a_non_shutterlock_folder_is_never_written_into(portfolio: Portfolio, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SiteError, match="not empty and not a Shutterlock site"):
        build(portfolio.candidates[:1], tmp_path, site=SITE, rights=RIGHTS, identity=portfolio.identity)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.usefixtures("s3_credentials")
def test_portfolio_from_a_folder_and_from_s3_in_a_real_browser(portfolio: Portfolio, built: tuple[Path, Any],
                                                               tmp_path: Path) -> None:
    out, report = built
    folder = tmp_path / "public"
    first = publish(out, str(folder))
    assert len(first.uploaded) == len(report.files) and not first.deleted
    server = S3Server(tmp_path)
    server.start()
    try:
        _public_website_bucket(server)
        s3_first = publish(out, "s3://web/portfolio", endpoint=server.endpoint)
        assert sorted(s3_first.uploaded) == sorted(report.files)
        published = {key.removeprefix("portfolio/"): body for key, body in server.all_objects("web").items()}
        _assert_nothing_unprotected(portfolio, published)
        _assert_nothing_unprotected(portfolio, {str(p.relative_to(folder)): p.read_bytes()
                                                for p in folder.rglob("*") if p.is_file()})
        for record in exif_json(sorted(folder.rglob("*.jpg"))):  # renditions carry only the allow-list too
            unexpected = {tag for tag in record if tag not in ALLOWED_TAGS | C2PA_TAGS
                          and tag.split(":", 1)[0] not in ALLOWED_GROUPS}
            assert not unexpected, (record["SourceFile"], sorted(unexpected))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with static_server(folder) as base:
            sources = {"folder": base, "s3": f"{server.endpoint}/web/portfolio/"}
            for size in (PHONE, DESKTOP):
                with browser(tmp_path / f"profile-{size[0]}", size) as driver:
                    for name, root in sources.items():
                        _tour(driver, root, name, size[0])
            with urllib.request.urlopen(f"{server.endpoint}/web/portfolio/.well-known/tdmrep.json") as response:
                assert json.loads(response.read())[0]["tdm-reservation"] == 1
                assert response.headers["Content-Type"] == "application/json"
    finally:
        server.stop()


def _public_website_bucket(server: S3Server) -> None:
    """A bucket set up the way docs/PUBLISHING.md tells the photographer: anyone may read, only they write."""
    server.create_bucket("web")
    server.client().put_bucket_policy(Bucket="web", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::web/*"}]}))


def _assert_nothing_unprotected(portfolio: Portfolio, tree: dict[str, bytes]) -> None:
    images = {path: data for path, data in tree.items() if path.endswith(".jpg")}
    assert len(images) >= 20 * 2
    for path, data in images.items():
        assert hashlib.sha256(data).hexdigest().encode() not in portfolio.originals, path
        verdict = verify_bytes(data, anchor=portfolio.identity.anchor_pem)
        assert verdict.state == TRUSTED and verdict.forbids_all, (path, verdict)
        assert "c2pa.filtered" in verdict.actions, path  # cloaked, every one
    text = b"".join(data for path, data in tree.items() if not path.endswith(".jpg"))
    for name in [*(p.stem for p in PHOTOS), "DSCN", "IMG_", "olympus"]:
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


@pytest.mark.usefixtures("s3_credentials")
def test_republish_after_one_new_photo_sends_only_its_files_and_changed_pages(
        portfolio: Portfolio, built: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "build"
    shutil.copytree(built[0], out)
    server = S3Server(tmp_path)
    server.start()
    try:
        _public_website_bucket(server)
        publish(out, "s3://web/portfolio", endpoint=server.endpoint)
        before = dict(json.loads((out / ".shutterlock-site.json").read_text()))
        rebuilt = build(portfolio.candidates, out, site=SITE, rights=RIGHTS, identity=portfolio.identity)
        assert rebuilt.photos == 21 and not rebuilt.removed
        changed = sorted(path for path, digest in rebuilt.files.items() if before.get(path) != digest)
        new_images = sorted(path for path in changed if path.startswith("img/"))
        assert 2 <= len(new_images) <= 4  # the new photo's renditions and nothing else
        assert all(path.startswith(new_images[0].rsplit("-", 1)[0]) for path in new_images)
        changed_pages = sorted(set(changed) - set(new_images))
        # Its own page, its album, the neighbour whose "next" now points to it, and the album count on the index.
        assert len(changed_pages) <= 4 and "index.html" in changed_pages, changed_pages
        log_start = server.log.stat().st_size
        report = publish(out, "s3://web/portfolio", endpoint=server.endpoint)
        assert sorted(report.uploaded) == changed and not report.deleted
        requests = server.log.read_bytes()[log_start:].decode(errors="replace")
        puts = sorted(re.findall(r'"PUT /web/portfolio/(\S+) HTTP', requests))
        assert puts == sorted([*changed, ".shutterlock-site.json"]), puts
        assert len(re.findall(r'"(?:PUT|POST|DELETE) ', requests)) == len(puts)
    finally:
        server.stop()
    with Image.open(out / new_images[-1]) as image:
        assert image.size[0] == max(int(p.rsplit("-", 1)[1].split(".")[0]) for p in new_images)


def test_candidates_come_from_the_catalog_records(tmp_path: Path) -> None:
    from shutterlock.catalog import Catalog
    from shutterlock.site.select import candidates

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    rows = [("Lisbon/tram.jpg", "written", True, "standard"), ("Lisbon/bare.jpg", "written", False, "off"),
            ("top.jpg", "written", True, "light"), ("Lisbon/held.jpg", "held", False, "standard"),
            ("Lisbon/pair.CR3", "skipped", False, "standard")]
    for number, (relpath, status, cloaked, strength) in enumerate(rows, start=1):
        catalog.discover("trips", relpath, 1, 1)
        catalog.record_derivative(number, "0" * 64, status=status, output=str(tmp_path / f"{number}.jpg")
                                  if status == "written" else None, reason="cloak weights missing" if
                                  status == "held" else "", cloaked=cloaked, strength=strength, watermark="© Ada")
    offered, missing = candidates(catalog.derivatives(), captions=[("*/tram.jpg", "The 28 at dusk")])
    assert [(c.key, c.album, c.caption) for c in offered] == [
        ("trips/Lisbon/bare.jpg", "Lisbon", ""), ("trips/Lisbon/tram.jpg", "Lisbon", "The 28 at dusk"),
        ("trips/top.jpg", "trips", "")]
    assert not offered[0].protection.cloak_off  # made with the cloak off, but the cloak is on now
    assert missing == [("trips/Lisbon/held.jpg", "no derivative (held: cloak weights missing)")]
    off, _ = candidates(catalog.derivatives(), patterns=["Lisbon/"], cloak_strength="off")
    assert [c.key for c in off] == ["trips/Lisbon/bare.jpg", "trips/Lisbon/tram.jpg"] and off[0].protection.cloak_off
    catalog.close()
