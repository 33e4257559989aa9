"""Signed provenance on derivatives: real derivatives, real signing, read back by c2pa-python in a
separate process, inspected with the real exiftool and by walking the JUMBF boxes byte by byte."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import S3_ENV, s3_config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig
from shutterlock.derive import DeriveJob, Outcome, render
from shutterlock.derive.signing import sign_rendered
from shutterlock.provenance import (
    FORBIDDEN_USES,
    INVALID,
    MISSING,
    TRUSTED,
    VALID,
    Credit,
    IdentityError,
    SigningIdentity,
    Treatment,
    identity,
    sign_jpeg,
    verify_bytes,
    verify_file,
)
from shutterlock.vault.format import Keys
from shutterlock.vault.local import VAULT_MARKER
from test_derive import ALLOWED_GROUPS, ALLOWED_TAGS, EXIF_SAMPLES, FORBIDDEN_WORDS, exif_json

pytestmark = pytest.mark.skipif(not EXIF_SAMPLES.is_dir(), reason="../shared/samples not present")

CREATOR = "Ada Lovelace"
RIGHTS = RightsConfig(creator=CREATOR, web_statement="https://ada.example/rights")
# Originals full of private metadata: GPS + Nikon maker notes + thumbnails, phones, XMP/IPTC/Photoshop.
PRIVATE_SAMPLES = sorted([*(EXIF_SAMPLES / "jpg" / "gps").glob("*.jpg"),
                          *(EXIF_SAMPLES / "jpg" / "mobile").glob("*.jpg"),
                          *(EXIF_SAMPLES / "jpg" / "xmp").glob("*.jpg"),
                          *(EXIF_SAMPLES / "heic").glob("*.HEIC")])
# What the manifest adds to exiftool's view: the JUMBF/C2PA structure, the assertions we write, nothing else.
C2PA_TAGS = {
    "JUMBF:JUMDType", "JUMBF:JUMDToggles", "JUMBF:JUMDLabel",
    "Jpeg2000:C2paActionsV2Salt", "Jpeg2000:CawgTraining-miningSalt", "Jpeg2000:CawgMetadataSalt",
    "Jpeg2000:C2paHashDataSalt",
    "CBOR:ActionsAction", "CBOR:ActionsDigitalSourceType", "CBOR:ActionsDescription",
    "CBOR:EntriesCawgAi_Generative_TrainingUse", "CBOR:EntriesCawgAi_InferenceUse", "CBOR:EntriesCawgAi_TrainingUse",
    "CBOR:EntriesCawgData_MiningUse",
    "CBOR:ContextDc", "CBOR:ContextXmpRights", "CBOR:ContextPlus", "CBOR:XmpRightsMarked",
    "CBOR:XmpRightsWebStatement", "CBOR:PlusDataMining", "CBOR:Dccreator", "CBOR:Dcrights",
    "CBOR:ExclusionsStart", "CBOR:ExclusionsLength", "CBOR:Name", "CBOR:Alg", "CBOR:Hash", "CBOR:Pad",
    "CBOR:InstanceID", "CBOR:Claim_Generator_InfoName", "CBOR:Claim_Generator_InfoVersion",
    "CBOR:Claim_Generator_InfoOrgContentauthC2Pa_Rs", "CBOR:Signature", "CBOR:Created_AssertionsUrl",
    "CBOR:Created_AssertionsHash", "CBOR:Gathered_AssertionsUrl", "CBOR:Gathered_AssertionsHash",
    # The COSE signature: protected header, certificate chain (names only), padding, signature bytes.
    "CBOR:Item0", "CBOR:Item1Pad", "CBOR:Item2", "CBOR:Item3",
}

DIGITAL = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"

READER = """
import io, json, sys
import c2pa
data = open(sys.argv[1], "rb").read()
settings = c2pa.Settings.from_dict({"verify": {"remote_manifest_fetch": False}})
with c2pa.Reader("image/jpeg", io.BytesIO(data), context=c2pa.Context(settings=settings)) as reader:
    print(reader.json())
"""


def read_in_other_process(path: Path) -> dict:
    """c2pa-python in a fresh interpreter that never imported Shutterlock: what any reader sees."""
    done = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def signer() -> SigningIdentity:
    return identity.create(CREATOR)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, signer: SigningIdentity) -> dict[Path, Path]:
    """original → signed derivative, made as the daemon makes it: rendered (here in-process), then signed."""
    outbox = tmp_path_factory.mktemp("outbox")
    out = {}
    for source in PRIVATE_SAMPLES:
        rendered = render(DeriveJob(source=source, derive=DeriveConfig(outbox=outbox), watermark=WatermarkConfig(),
                                    rights=RIGHTS, cloak=CloakConfig(strength="off")))
        assert rendered.outcome is Outcome.WRITTEN, (source.name, rendered.reason)
        assert rendered.resized_to == 0 or rendered.resized_to == max(rendered.width, rendered.height)
        out[source] = outbox / f"{source.stem}.jpg"
        out[source].write_bytes(sign_rendered(rendered, signer, RIGHTS))
    return out


def test_a_separate_reader_finds_a_valid_manifest_forbidding_all_four_uses(signed: dict[Path, Path]) -> None:
    for path in list(signed.values())[:3]:
        store = read_in_other_process(path)
        assert store["validation_state"] == "Valid", path.name
        results = store["validation_results"]["activeManifest"]
        assert [item["code"] for item in results["failure"]] == ["signingCredential.untrusted"], path.name
        assert {"claimSignature.validated", "assertion.dataHash.match"} <= {item["code"] for item in results["success"]}
        manifest = store["manifests"][store["active_manifest"]]
        assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
        entries = assertions["cawg.training-mining"]["entries"]
        assert {use: entry["use"] for use, entry in entries.items()} == dict.fromkeys(FORBIDDEN_USES, "notAllowed")
        actions = assertions["c2pa.actions.v2"]["actions"]
        assert actions[0] == {"action": "c2pa.created",
                              "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}
        assert [a["action"] for a in actions[1:]] in (["c2pa.resized", "c2pa.watermarked.unbound"],
                                                      ["c2pa.watermarked.unbound"])  # small originals: not resized
        assert assertions["cawg.metadata"]["dc:creator"] == [CREATOR]
        assert manifest["signature_info"]["common_name"] == CREATOR
        assert "ingredients" not in manifest or manifest["ingredients"] == []
        assert "thumbnail" not in manifest and "title" not in manifest


def test_exiftool_sees_only_allowed_tags_with_the_manifest_present(signed: dict[Path, Path]) -> None:
    records = exif_json(list(signed.values()))
    assert len(records) == len(PRIVATE_SAMPLES)
    for record in records:
        name = record["SourceFile"]
        unexpected = {tag for tag in record if tag not in ALLOWED_TAGS | C2PA_TAGS
                      and tag.split(":", 1)[0] not in ALLOWED_GROUPS}
        assert not unexpected, f"{name}: tags outside the allow-list: {sorted(unexpected)}"
        assert record["CBOR:EntriesCawgAi_TrainingUse"] == "notAllowed", name
        assert record["XMP-plus:DataMining"].endswith("DMI-PROHIBITED-AIMLTRAINING"), name
        for tag, value in record.items():
            if tag.split(":", 1)[0] in ("System", "ICC-header"):
                continue
            if tag not in ALLOWED_TAGS:  # the rights in EXIF/IPTC are allowed by name, like in test_derive
                assert not any(word in tag.lower() for word in FORBIDDEN_WORDS), f"{name}: {tag}"
            if tag.startswith(("CBOR:", "JUMBF:")):
                assert not any(word in str(value).lower() for word in ("gps", "nikon", "coolpix", "serial")), (
                    name, tag, value)


def test_the_manifest_names_no_original_and_carries_no_camera_data(signed: dict[Path, Path]) -> None:
    for original, path in signed.items():
        data = path.read_bytes()
        segment = b"".join(payload for payload in app11_payloads(data))
        assert segment, path.name
        # The outbox file is named after the original; the manifest must not repeat it.
        assert original.stem.encode() not in segment, path.name
        # (An EXIF block is there — the rights, written by us; its tags are allow-listed above.)
        for needle in (b"NIKON", b"COOLPIX", b"GPS", b"Apple", b"iPhone", b"Nokia", b"Jolla"):
            assert needle not in data, (original.name, needle)


def test_no_thumbnail_or_ingredient_inside_the_jumbf_boxes(signed: dict[Path, Path], signer: SigningIdentity,
                                                           tmp_path: Path) -> None:
    for path in signed.values():
        boxes = jumbf_boxes(path.read_bytes())
        labels = [label for label, _ in boxes]
        assert "c2pa.signature" in labels and "cawg.training-mining" in labels, labels
        assert not [label for label in labels if "thumbnail" in label or "ingredient" in label], labels
        assert not [kind for _, kind in boxes if kind in ("bidb", "bfdb")], boxes  # embedded files (images)
    # The check can fail: the same library with its default settings embeds a thumbnail, and the walk finds it.
    import io

    import c2pa

    plain = c2pa.Builder({"claim_generator_info": [{"name": "control"}], "assertions": [
        {"label": "c2pa.actions.v2", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": DIGITAL}]}}]})
    out = io.BytesIO()
    info = c2pa.C2paSignerInfo(alg=b"es256", sign_cert=signer.chain_pem, private_key=signer.key_pem, ta_url=None)
    with c2pa.Signer.from_info(info) as raw_signer:
        plain.sign(raw_signer, "image/jpeg", io.BytesIO(next(iter(signed.values())).read_bytes()), out)
    control = jumbf_boxes(out.getvalue())
    assert any("thumbnail" in label for label, _ in control) and any(kind == "bidb" for _, kind in control)


def test_one_tampered_pixel_byte_makes_the_manifest_invalid(signed: dict[Path, Path], tmp_path: Path) -> None:
    path = next(iter(signed.values()))
    assert verify_file(path).state == VALID
    data = bytearray(path.read_bytes())
    offset = scan_data_offset(bytes(data)) + 500
    data[offset] ^= 0x01 if data[offset] not in (0xFE, 0xFF) else 0x02
    tampered = tmp_path / "tampered.jpg"
    tampered.write_bytes(bytes(data))
    verdict = verify_file(tampered)
    assert verdict.state == INVALID
    assert any("dataHash.mismatch" in problem for problem in verdict.problems), verdict.problems
    assert read_in_other_process(tampered)["validation_state"] == "Invalid"


def test_verdict_missing_and_trusted_with_the_own_anchor(signed: dict[Path, Path], signer: SigningIdentity) -> None:
    path = next(iter(signed.values()))
    verdict = verify_file(path)
    assert (verdict.state, verdict.signer, verdict.forbids_all) == (VALID, CREATOR, True)
    assert verdict.thumbnails == verdict.ingredients == 0
    assert verify_file(path, anchor=signer.anchor_pem).state == TRUSTED
    assert verify_file(path, anchor=identity.create("Someone Else").anchor_pem).state == VALID
    by_name = {original.name: verify_file(out) for original, out in signed.items()}
    assert "c2pa.resized" in by_name["HMD_Nokia_8.3_5G.jpg"].actions  # 4608 px, scaled down to 2048
    assert "c2pa.resized" not in by_name["DSCN0010.jpg"].actions  # 640 px: kept at its own size
    unsigned = next(iter(signed))  # an original: no manifest at all
    assert verify_bytes(unsigned.read_bytes()).state == MISSING


# --------------------------------------------------------------------------- the signing identity


def test_identity_files_are_owner_only_and_round_trip(tmp_path: Path, signer: SigningIdentity) -> None:
    folder = tmp_path / "state" / "provenance"
    identity.write(folder, signer)
    assert folder.stat().st_mode & 0o777 == 0o700
    for name in (identity.KEY_FILE, identity.CHAIN_FILE):
        assert (folder / name).stat().st_mode & 0o777 == 0o600
    loaded = identity.load(folder)
    assert (loaded.key_pem, loaded.chain_pem) == (signer.key_pem, signer.chain_pem)
    assert b"PRIVATE" not in repr(loaded).encode() and "PRIVATE" not in str(loaded)
    os.chmod(folder / identity.KEY_FILE, 0o644)
    with pytest.raises(IdentityError, match=f"{identity.KEY_FILE}: signing key is readable by others"):
        identity.load(folder)


def test_sealed_identity_opens_only_with_the_master_key(signer: SigningIdentity) -> None:
    keys = Keys.from_master(b"\x01" * 32)
    blob = identity.seal(keys.catalog, signer)
    assert signer.key_pem not in blob and b"PRIVATE" not in blob
    opened = identity.open_sealed(keys.catalog, blob, "vault/signing-identity")
    assert opened.key_pem == signer.key_pem and opened.chain_pem == signer.chain_pem
    with pytest.raises(IdentityError, match="vault/signing-identity: blob failed authentication"):
        identity.open_sealed(Keys.from_master(b"\x02" * 32).catalog, blob, "vault/signing-identity")


def test_a_certificate_from_a_real_ca_signs_and_is_trusted_under_its_root(tmp_path: Path) -> None:
    """A CA hierarchy as a commercial CA issues it: root → intermediate → the photographer's certificate."""
    root_key, root = _ca("Example Root CA", None, None)
    inter_key, inter = _ca("Example Issuing CA", root_key, root)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Grace Hopper")]), key, inter_key, inter,
                 ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "chain.pem").write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    os.chmod(tmp_path / "key.pem", 0o600)
    own = identity.load_user(tmp_path / "chain.pem", tmp_path / "key.pem")
    from PIL import Image

    image = tmp_path / "in.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    data = sign_jpeg(image.read_bytes(), own, Treatment(), Credit(creator="Grace Hopper"))
    assert verify_bytes(data).state == VALID
    assert verify_bytes(data, anchor=root.public_bytes(pem)).state == TRUSTED

    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.pem").write_bytes(other.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    os.chmod(tmp_path / "other.pem", 0o600)
    with pytest.raises(IdentityError, match="does not belong to the first certificate"):
        identity.load_user(tmp_path / "chain.pem", tmp_path / "other.pem")
    (tmp_path / "reversed.pem").write_bytes(inter.public_bytes(pem) + leaf.public_bytes(pem))
    with pytest.raises(IdentityError, match=r"reversed\.pem"):
        identity.load_user(tmp_path / "reversed.pem", tmp_path / "key.pem")


def _ca(name: str, issuer_key: ec.EllipticCurvePrivateKey | None,
        issuer: x509.Certificate | None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key, issuer_key, issuer, ca=True)


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey | None,
          issuer: x509.Certificate | None, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=400))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


# --------------------------------------------------------------------------- JPEG / JUMBF walking


def _segments(data: bytes) -> list[tuple[int, int, bytes]]:
    """(marker, offset, payload) of every JPEG marker segment up to the start of scan."""
    assert data[:2] == b"\xff\xd8"
    out, pos = [], 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"bad marker at {pos}"
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        out.append((marker, pos, data[pos + 4:pos + 2 + length]))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def scan_data_offset(data: bytes) -> int:
    marker, pos, payload = _segments(data)[-1]
    assert marker == 0xDA
    return pos + 4 + len(payload)


def app11_payloads(data: bytes) -> list[bytes]:
    return [payload for marker, _, payload in _segments(data) if marker == 0xEB]


def jumbf_boxes(data: bytes) -> list[tuple[str, str]]:
    """Every box of the embedded JUMBF: (label of the enclosing superbox, box type).

    APP11 segments carry "JP", an instance number, a sequence number and then the JUMBF bytes; every
    segment after the first repeats the superbox's 8-byte header, which is dropped when joining.
    """
    parts: dict[int, list[tuple[int, bytes]]] = {}
    for payload in app11_payloads(data):
        assert payload[:2] == b"JP"
        instance, sequence = struct.unpack(">HI", payload[2:8])
        parts.setdefault(instance, []).append((sequence, payload[8:]))
    boxes: list[tuple[str, str]] = []
    for chunks in parts.values():
        chunks.sort()
        joined = chunks[0][1] + b"".join(chunk[8:] for _, chunk in chunks[1:])
        _walk(joined, "", boxes)
    return boxes


def _walk(data: bytes, label: str, out: list[tuple[str, str]]) -> None:
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8:pos + 16])
            header = 16
        elif size == 0:
            size = len(data) - pos
        body = data[pos + header:pos + size]
        name = kind.decode("latin-1")
        if name == "jumb":
            inner_label = label
            if body[4:8] == b"jumd":
                toggles = body[8 + 16]
                if toggles & 0x02:
                    end = body.index(b"\x00", 8 + 17)
                    inner_label = body[8 + 17:end].decode()
            out.append((inner_label, name))
            _walk(body, inner_label, out)
        else:
            out.append((label, name))
        pos += size


def test_ensure_creates_once_and_restore_brings_the_same_identity_back(tmp_path: Path) -> None:
    keys = Keys.from_master(b"\x03" * 32)
    state, vault = tmp_path / "state", tmp_path / "vault"
    vault.mkdir()  # the mount point of a vault drive that is not mounted: no marker
    first, created = identity.ensure(state, CREATOR, keys.catalog, vault)
    assert created and not any(vault.iterdir()), "nothing is written into an absent vault"
    (vault / VAULT_MARKER).write_text("{}")
    again, created_again = identity.ensure(state, CREATOR, keys.catalog, vault)
    assert not created_again and again.key_pem == first.key_pem
    blob = (vault / identity.SEALED_NAME).read_bytes()
    assert (vault / identity.SEALED_NAME).stat().st_mode & 0o777 == 0o600
    restored = identity.restore(tmp_path / "new-machine", keys.catalog, blob, "s3://b/p/signing-identity")
    assert (restored.key_pem, restored.chain_pem) == (first.key_pem, first.chain_pem)
    assert identity.folder(tmp_path / "new-machine").stat().st_mode & 0o777 == 0o700


# --------------------------------------------------------------------------- the real CLI and daemon


def test_protect_signs_and_provenance_verify_reports(make_home: Any, tmp_path: Path) -> None:
    home = make_home()
    home.write_config(f'\n[rights]\ncreator = "{CREATOR}"\n[cloak]\nstrength = "off"\n')
    sample = EXIF_SAMPLES / "jpg" / "gps" / "DSCN0010.jpg"
    out = tmp_path / "out"
    home.cli("run", "--once", check=True)  # the vault exists (as after `init`): the identity's sealed copy goes there
    home.cli("protect", str(sample), "--out", str(out), check=True)
    derivative = out / "DSCN0010.jpg"
    result = home.cli("provenance", "verify", str(derivative), check=True)
    assert f"valid, signed by {CREATOR}" in result.stdout and "your own signing key" in result.stdout
    assert "forbids: AI generative training, AI training, data mining, AI inference" in result.stdout
    data = bytearray(derivative.read_bytes())
    data[scan_data_offset(bytes(data)) + 300] ^= 0x04
    tampered = tmp_path / "tampered.jpg"
    tampered.write_bytes(bytes(data))
    result = home.cli("provenance", "verify", str(tampered))
    assert result.returncode == 1 and "INVALID manifest" in result.stderr and "dataHash.mismatch" in result.stderr
    result = home.cli("provenance", "verify", str(sample))
    assert result.returncode == 1 and "no C2PA manifest" in result.stderr
    key_file = identity.folder(home.state) / identity.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (home.vault / identity.SEALED_NAME).exists()


def test_the_outbox_holds_the_bytes_a_reader_validates_and_recovery_restores_the_signer(
        make_home: Any, s3_server: Any) -> None:
    home = make_home()
    home.env.update(S3_ENV)
    home.write_config(s3_config(s3_server) + f'\n[rights]\ncreator = "{CREATOR}"\n[cloak]\nstrength = "off"\n',
                      derive=True)
    for sample in ("gps/DSCN0010.jpg", "mobile/jolla.jpg"):
        shutil.copy2(EXIF_SAMPLES / "jpg" / sample, home.sources[0])
    log = home.cli("--verbose", "run", "--once", check=True).stderr  # debug logging: the key must not be in it
    outputs = sorted(home.outbox.rglob("*.jpg"))
    assert len(outputs) == 2
    for path in outputs:  # the file in the outbox, read by another process: nothing between the two
        store = read_in_other_process(path)
        assert store["validation_state"] == "Valid", path
        assert [item["code"] for item in store["validation_results"]["activeManifest"]["failure"]] == [
            "signingCredential.untrusted"]
    key = (identity.folder(home.state) / identity.KEY_FILE).read_bytes()
    assert "signing identity" in log and "PRIVATE KEY" not in log and key.decode() not in log
    bucket = s3_server.all_objects("photos")
    assert "vault/signing-identity" in bucket and key not in bucket["vault/signing-identity"]

    passphrase = home.base / "kept-passphrase"
    shutil.copy2(home.passphrase_file, passphrase)
    shutil.rmtree(home.vault)
    shutil.rmtree(home.state)
    home.config_file.unlink()
    result = home.cli("recover", "--s3-url", "s3://photos/vault", "--s3-endpoint", s3_server.endpoint,
                      "--passphrase-file", str(passphrase), "--to", str(home.base / "recovered"))
    assert result.returncode == 0, result.stderr
    assert (identity.folder(home.state) / identity.KEY_FILE).read_bytes() == key
    result = home.cli("provenance", "verify", str(outputs[0]), check=True)
    assert "your own signing key" in result.stdout


def test_the_derive_worker_never_imports_provenance_or_a_key_library() -> None:
    """What the worker process loads (render and everything it imports, transitively) holds no signing code."""
    from test_house import imports_of, project_modules

    modules = project_modules()
    seen, todo = set(), ["shutterlock.derive.runner", "shutterlock.derive.render"]
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        todo += [m if m in modules else m.rsplit(".", 1)[0] for m in imports_of(modules[name], name)]
    assert "shutterlock.derive.render" in seen and "shutterlock.cloak" in seen
    assert not [name for name in seen if name.startswith(("shutterlock.provenance", "shutterlock.site"))], seen
    for name in seen:
        source = modules[name].read_text()
        assert not re.search(r"^\s*(import|from) (c2pa|cryptography)\b", source, re.M), name
