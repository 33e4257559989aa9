"""Derivative pipeline: real sample files in, real JPEGs out, checked with the real exiftool."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig
from shutterlock.derive import DeriveJob, DeriveRunner, Outcome, Rendered, render
from shutterlock.derive.decode import decode
from shutterlock.derive.outbox import dated_dir, place
from shutterlock.derive.pairs import pair_partner, skip_reason
from shutterlock.derive.protect import protect
from shutterlock.derive.watermark import render_text
from shutterlock.fsutil import TEMP_PREFIX
from shutterlock.provenance import identity
from stalling import stall_on_name

WRITTEN, HELD, FAILED, SKIPPED = Outcome

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
EXIF_SAMPLES = SAMPLES / "exif-samples"
HOSTILE = SAMPLES / "hostile"
DAEMON_DIR = Path(__file__).resolve().parents[1] / "daemon"
SIGNER = identity.create("Ada Lovelace")  # protect signs what it writes, as the daemon does
PROHIBITION = "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"

# Decodes, but its entropy-coded data is corrupt (libjpeg would silently paint grey garbage).
CORRUPT = EXIF_SAMPLES / "jpg" / "corrupted.jpg"
# The other "broken" exif-samples (jpg/invalid, jpg/tests) are broken in their EXIF only; their pixels
# decode cleanly, so they must yield clean derivatives: that is the point of rewriting metadata from scratch.

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples not present")

ALLOWED_TAGS = {
    "SourceFile", "ExifTool:ExifToolVersion",
    "File:FileType", "File:FileTypeExtension", "File:MIMEType", "File:ImageWidth", "File:ImageHeight",
    "File:EncodingProcess", "File:BitsPerSample", "File:ColorComponents", "File:YCbCrSubSampling",
    "JFIF:JFIFVersion", "JFIF:ResolutionUnit", "JFIF:XResolution", "JFIF:YResolution",
    "XMP-dc:Creator", "XMP-dc:Rights", "XMP-xmpRights:Marked", "XMP-xmpRights:WebStatement",
    "XMP-plus:DataMining", "XMP-plus:OtherConstraints",
    # The creator and copyright again, for sites that read only EXIF or IPTC-IIM (written by us, not copied).
    "IFD0:Artist", "IFD0:Copyright", "IPTC:CodedCharacterSet", "IPTC:ApplicationRecordVersion", "IPTC:By-line",
    "IPTC:CopyrightNotice", "File:ExifByteOrder", "File:CurrentIPTCDigest",  # exiftool's facts about them
    "ICC_Profile:ProfileDescription", "ICC_Profile:ProfileCopyright", "ICC_Profile:MediaWhitePoint",
    "ICC_Profile:ChromaticAdaptation", "ICC_Profile:RedMatrixColumn", "ICC_Profile:GreenMatrixColumn",
    "ICC_Profile:BlueMatrixColumn", "ICC_Profile:RedTRC", "ICC_Profile:GreenTRC", "ICC_Profile:BlueTRC",
    "ICC-header:ProfileCMMType", "ICC-header:ProfileVersion", "ICC-header:ProfileClass",
    "ICC-header:ColorSpaceData", "ICC-header:ProfileConnectionSpace", "ICC-header:ProfileDateTime",
    "ICC-header:ProfileFileSignature", "ICC-header:PrimaryPlatform", "ICC-header:CMMFlags",
    "ICC-header:DeviceManufacturer", "ICC-header:DeviceModel", "ICC-header:DeviceAttributes",
    "ICC-header:RenderingIntent", "ICC-header:ConnectionSpaceIlluminant", "ICC-header:ProfileCreator",
    "ICC-header:ProfileID", "ICC-chrm:ChromaticityChannels", "ICC-chrm:ChromaticityColorant",
    "ICC-chrm:ChromaticityChannel1", "ICC-chrm:ChromaticityChannel2", "ICC-chrm:ChromaticityChannel3",
    "Composite:ImageSize", "Composite:Megapixels",
}
# The file system's view of the output file (name, size, dates, permissions), not the photo's.
ALLOWED_GROUPS = {"System"}
FORBIDDEN_WORDS = ("gps", "serial", "make", "model", "maker", "thumbnail", "comment", "history", "region",
                   "iptc", "photoshop", "mpf", "exif:", "ifd0", "ifd1", "lens", "owner")


def _exiftool() -> str:
    tool = shutil.which("exiftool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("exiftool (libimage-exiftool-perl) is required in CI")
        pytest.skip("exiftool not installed")
    return tool


def exif_json(paths: list[Path]) -> list[dict[str, object]]:
    out = subprocess.run([_exiftool(), "-j", "-G1", "-a", "-u", *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def configs(outbox: Path,
            **derive: object) -> tuple[DeriveConfig, WatermarkConfig, RightsConfig, CloakConfig]:
    return (DeriveConfig(outbox=outbox, **derive), WatermarkConfig(),  # type: ignore[arg-type]
            RightsConfig(creator="Ada Lovelace & <Co>"), CloakConfig(strength="off"))


def job(source: Path, outbox: Path, *, cloak: CloakConfig | None = None,
        watermark: WatermarkConfig | None = None, **derive: object) -> DeriveJob:
    d, w, r, c = configs(outbox, **derive)
    return DeriveJob(source=source, derive=d, watermark=watermark or w, rights=r, cloak=cloak or c)


@dataclasses.dataclass(frozen=True)
class Made:
    """A rendered derivative and where it was placed: the two steps the daemon's derive lane takes."""

    rendered: Rendered
    output: Path | None

    def __getattr__(self, name: str) -> object:
        return getattr(self.rendered, name)


def derive_file(job: DeriveJob, previous: Path | None = None) -> Made:
    """In this process (the lane runs ``render`` in its worker): pair rule, render, place in the dated outbox."""
    if reason := skip_reason(job.source, job.derive.pair_preference):
        return Made(Rendered(job.source, Outcome.SKIPPED, reason=reason), None)
    rendered = render(job)
    if rendered.outcome is not Outcome.WRITTEN:
        return Made(rendered, None)
    assert rendered.jpeg is not None and rendered.capture_time is not None
    own = previous if previous is not None and previous.is_relative_to(job.derive.outbox) else None
    return Made(rendered, place(rendered.jpeg, dated_dir(job.derive.outbox, rendered.capture_time),
                                job.source.stem, previous=own))


def sample_images() -> list[Path]:
    files = [p for p in sorted(EXIF_SAMPLES.rglob("*"))
             if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".heic", ".heif", ".tif", ".tiff")]
    return [p for p in files if p != CORRUPT]


@pytest.fixture(scope="module")
def sample_results(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Made]:
    outbox = tmp_path_factory.mktemp("outbox")
    return {path: derive_file(job(path, outbox)) for path in sample_images()}


# --------------------------------------------------------------------------- metadata allow-list


def test_every_decodable_sample_gets_a_clean_derivative(sample_results: dict[Path, Made]) -> None:
    assert len(sample_results) > 90
    not_written = {p.name: r.reason for p, r in sample_results.items() if r.outcome != WRITTEN}
    assert not not_written
    outputs = [r.output for r in sample_results.values() if r.output is not None]
    assert len(set(outputs)) == len(outputs)
    for record in exif_json(outputs):  # type: ignore[arg-type]
        name = record["SourceFile"]
        unexpected = {tag for tag in record
                      if tag not in ALLOWED_TAGS and tag.split(":", 1)[0] not in ALLOWED_GROUPS}
        assert not unexpected, f"{name}: tags outside the allow-list: {sorted(unexpected)}"
        assert record["XMP-plus:DataMining"] == PROHIBITION, name
        assert record["XMP-xmpRights:Marked"] is True, name
        assert record["XMP-dc:Creator"] == "Ada Lovelace & <Co>", name
        assert record["ICC_Profile:ProfileDescription"] == "sRGB built-in", name
        assert record["File:ColorComponents"] == 3, name
        assert record["ICC-header:DeviceManufacturer"] == record["ICC-header:DeviceModel"] == "", name
        assert record["ICC-header:ProfileDateTime"] == "2024:01:01 00:00:00", name
        assert record["IFD0:Artist"] == record["IPTC:By-line"] == "Ada Lovelace & <Co>", name
        assert record["IPTC:CopyrightNotice"] == record["XMP-dc:Rights"] == record["IFD0:Copyright"], name
        for tag in record:
            if tag.split(":", 1)[0] not in ("System", "ICC-header") and tag not in ALLOWED_TAGS:
                assert not any(word in tag.lower() for word in FORBIDDEN_WORDS), f"{name}: {tag}"


def test_no_gps_or_camera_strings_survive(sample_results: dict[Path, Made]) -> None:
    """Belt and braces: the raw bytes of the GPS samples' derivatives hold no camera or GPS strings."""
    for path, result in sample_results.items():
        if path.parent.name != "gps":
            continue
        data = result.output.read_bytes()  # type: ignore[union-attr]
        for needle in (b"NIKON", b"COOLPIX", b"GPS", b"MPF", b"8BIM\x04\x0c"):  # 0x040C: a Photoshop thumbnail
            assert needle not in data, (path.name, needle)


def test_dimensions_never_upscale_and_hit_the_long_edge(sample_results: dict[Path, Made]) -> None:
    for path, result in sample_results.items():
        with Image.open(result.output) as out:  # type: ignore[arg-type]
            assert (out.width, out.height) == (result.width, result.height)
            assert max(out.size) <= 2048
        with Image.open(path) as original:
            if max(original.size) >= 2048:
                assert max(result.width, result.height) == 2048, path.name
            else:
                assert max(result.width, result.height) == max(original.size), path.name


# --------------------------------------------------------------------------- look


@pytest.mark.parametrize("series", ["landscape", "portrait"])
def test_orientation_samples_come_out_upright(sample_results: dict[Path, Made], series: str) -> None:
    folder = EXIF_SAMPLES / "jpg" / "orientation"
    outputs = {n: sample_results[folder / f"{series}_{n}.jpg"].output for n in range(1, 9)}
    small = (32, 24) if series == "landscape" else (24, 32)

    def grey(path: Path | None) -> np.ndarray:
        with Image.open(path) as image:  # type: ignore[arg-type]
            assert image.size == ((600, 450) if series == "landscape" else (450, 600))
            return np.asarray(image.convert("L").resize(small, Image.Resampling.BOX), dtype=float)

    reference = grey(outputs[1])
    for number, output in outputs.items():
        pixels = grey(output)
        assert np.abs(pixels - reference).mean() < 5, (series, number)
        # The tolerance is meaningful: a mirrored or rotated result would be far off.
        assert np.abs(pixels[:, ::-1] - reference).mean() > 15
        assert np.abs(pixels[::-1, ::-1] - reference).mean() > 15


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def adobe_rgb_like_profile() -> bytes:
    """A hand-built ICC v2 matrix/TRC profile: Adobe RGB (1998) primaries (D50-adapted), gamma 563/256."""
    colorants = {
        b"rXYZ": (0.60974, 0.31111, 0.01947),
        b"gXYZ": (0.20528, 0.62567, 0.06087),
        b"bXYZ": (0.14919, 0.06322, 0.74457),
        b"wtpt": (0.9642, 1.0, 0.8249),
    }
    tags: list[tuple[bytes, bytes]] = []
    description = b"Adobe RGB like (test)"
    tags.append((b"desc", b"desc" + b"\0" * 4 + struct.pack(">I", len(description) + 1) + description + b"\0"
                 + b"\0" * 8 + b"\0" * 3 + b"\0" * 67))
    tags.append((b"cprt", b"text" + b"\0" * 4 + b"public domain\0"))
    for signature, xyz in colorants.items():
        tags.append((signature, b"XYZ " + b"\0" * 4 + b"".join(_s15f16(v) for v in xyz)))
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 563) + b"\0\0"
    for signature in (b"rTRC", b"gTRC", b"bTRC"):
        tags.append((signature, curve))
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    table = struct.pack(">I", len(tags))
    body = b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = 128 + len(table) + len(body)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 8
              + b"\0" * 8 + struct.pack(">I", 1) + _s15f16(0.9642) + _s15f16(1.0) + _s15f16(0.8249)
              + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + table + body


def expected_srgb(adobe: tuple[int, int, int]) -> np.ndarray:
    """Reference conversion from first principles: Adobe RGB → XYZ(D50) → lcms' D50-adapted sRGB."""
    linear = (np.array(adobe) / 255.0) ** (563 / 256)
    to_xyz = np.array([[0.60974, 0.20528, 0.14919], [0.31111, 0.62567, 0.06322], [0.01947, 0.06087, 0.74457]])
    srgb_to_xyz = np.array([[0.43604, 0.38512, 0.14305], [0.22249, 0.71690, 0.06061],
                            [0.01392, 0.09706, 0.71391]])
    rgb = np.clip(np.linalg.solve(srgb_to_xyz, to_xyz @ linear), 0, 1)
    encoded = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * rgb ** (1 / 2.4) - 0.055)
    return encoded * 255


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_non_srgb_profile_is_converted(tmp_path: Path, suffix: str) -> None:
    patch = (60, 160, 90)  # a green well inside both gamuts
    source = tmp_path / f"adobe{suffix}"
    Image.new("RGB", (300, 200), patch).save(source, icc_profile=adobe_rgb_like_profile(),
                                             **({"quality": 100} if suffix == ".jpg" else {}))
    result = derive_file(job(source, tmp_path / "out", watermark=WatermarkConfig(enabled=False)))
    assert result.outcome == WRITTEN, result.reason
    with Image.open(result.output) as out:  # type: ignore[arg-type]
        centre = np.asarray(out.convert("RGB"), dtype=float)[80:120, 130:170].reshape(-1, 3).mean(axis=0)
    expected = expected_srgb(patch)
    assert np.abs(expected - np.array(patch)).max() > 20  # the conversion is not a no-op here
    assert np.abs(centre - expected).max() <= 3, (centre, expected)


def test_modes_alpha_palette_and_16_bit(tmp_path: Path) -> None:
    transparent = Image.new("RGBA", (64, 48), (255, 0, 0, 0))
    transparent.save(tmp_path / "alpha.png")
    Image.fromarray(np.full((48, 64), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")
    palette = Image.new("P", (64, 48), 0)
    palette.putpalette([0, 0, 255] * 256)
    palette.save(tmp_path / "palette.gif")
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    expected = {"alpha.png": (255, 255, 255), "grey16.png": (128, 128, 128), "palette.gif": (0, 0, 255),
                "cmyk.tif": (255, 0, 0)}
    for name, colour in expected.items():
        result = derive_file(job(tmp_path / name, tmp_path / "out", watermark=WatermarkConfig(enabled=False)))
        assert result.outcome == WRITTEN, (name, result.reason)
        with Image.open(result.output) as out:  # type: ignore[arg-type]
            assert out.mode == "RGB"
            mean = np.asarray(out, dtype=float).reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - np.array(colour)).max() <= 4, (name, mean)


def test_jpeg_draft_only_when_the_reduced_decode_still_covers_the_long_edge(tmp_path: Path) -> None:
    Image.new("RGB", (4200, 2800), (90, 120, 150)).save(tmp_path / "big.jpg", quality=80)
    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(tmp_path / "phone.jpg", quality=80)
    assert decode(tmp_path / "big.jpg", long_edge=2048, max_pixels=10**9).image.size == (2100, 1400)
    assert decode(tmp_path / "big.jpg", long_edge=1000, max_pixels=10**9).image.size == (1050, 700)
    assert decode(tmp_path / "phone.jpg", long_edge=2048, max_pixels=10**9).image.size == (4000, 3000)
    result = derive_file(job(tmp_path / "big.jpg", tmp_path / "out"))
    assert (result.width, result.height) == (2048, 1365)
    # With a tolerance the half-scale decode (2000 px) is used and topped up to exactly 2048 px.
    tolerant = decode(tmp_path / "phone.jpg", long_edge=2048, max_pixels=10**9, draft_tolerance=0.03)
    assert (tolerant.image.size, tolerant.target_edge) == ((2000, 1500), 2048)
    d, w, r, c = configs(tmp_path / "out")
    result = derive_file(DeriveJob(source=tmp_path / "phone.jpg", derive=dataclasses.replace(d, draft_tolerance=0.03),
                                   watermark=w, rights=r, cloak=c))
    assert (result.width, result.height) == (2048, 1536)
    assert decode(tmp_path / "phone.jpg", long_edge=2048, max_pixels=10**9,
                  draft_tolerance=0.02).image.size == (4000, 3000)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("path", "reason"), [
    (HOSTILE / "decompression_bomb.gif", "decompression bomb: 4364696535 pixels > limit 200000000"),
    (HOSTILE / "decompression_bomb.ico", "decompression bomb: 4294836225 pixels > limit 200000000"),
    (HOSTILE / "truncated_image.png", "truncated image data"),
    (HOSTILE / "truncated_jpeg.jpg", "truncated image data"),
    (CORRUPT, "corrupt JPEG data: invalid marker 0x9F inside the image data"),
])
def test_hostile_and_broken_files_fail_with_specific_reasons(tmp_path: Path, path: Path, reason: str) -> None:
    result = derive_file(job(path, tmp_path))
    assert (result.outcome, result.reason, result.output) == (FAILED, reason, None)
    assert not any(tmp_path.rglob("*.jpg"))


def test_other_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture")
    (tmp_path / "clip.MOV").write_bytes(b"\0\0\0\x18ftypqt  ")
    (tmp_path / "IMG_1.xmp").write_text("<x:xmpmeta/>")
    (tmp_path / "notes.bin").write_bytes(b"\x01\x02\x03")
    shutil.copy(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", tmp_path / "small.jpg")
    out = tmp_path / "out"
    cases = {
        "empty.jpg": (FAILED, "empty file"),
        "text.jpg": (FAILED, "not a recognised image format"),
        "clip.MOV": (SKIPPED, "not an image (video)"),
        "IMG_1.xmp": (SKIPPED, "not an image (sidecar)"),
        "notes.bin": (SKIPPED, "not an image (unrecognised format)"),
        "missing.jpg": (FAILED, "cannot read file: No such file or directory"),
    }
    for name, expected in cases.items():
        result = derive_file(job(tmp_path / name, out))
        assert (result.outcome, result.reason) == expected, name
    result = derive_file(job(tmp_path / "small.jpg", out, max_pixels=1000))
    assert (result.outcome, result.reason) == (FAILED, "decompression bomb: 6800 pixels > limit 1000")
    assert not out.exists() or not any(out.rglob("*"))


def test_runner_kills_a_stalled_image_and_keeps_going(tmp_path: Path) -> None:
    shutil.copy(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", tmp_path / "stall.jpg")
    shutil.copy(EXIF_SAMPLES / "jpg" / "Nikon_D70.jpg", tmp_path / "fine.jpg")
    out = tmp_path / "out"
    with DeriveRunner(time_limit=3.0, work=stall_on_name) as runner:
        first = runner.run(job(tmp_path / "fine.jpg", out))  # also warms the worker up
        stalled = runner.run(job(tmp_path / "stall.jpg", out))
        after = runner.run(job(tmp_path / "fine.jpg", out))
        bomb = runner.run(job(HOSTILE / "decompression_bomb.gif", out))
    assert first.outcome == WRITTEN, first.reason
    assert (stalled.outcome, stalled.reason) == (FAILED, "time limit exceeded (3 s); worker stopped")
    assert 3.0 <= stalled.seconds < 10.0
    assert after.outcome == WRITTEN, after.reason
    assert bomb.outcome == FAILED and bomb.reason.startswith("decompression bomb")
    assert runner.restarts == 1


def test_runner_survives_a_worker_crash(tmp_path: Path) -> None:
    """A native crash mid-job (simulated by SIGKILL during a stalled job) is one failed record."""
    shutil.copy(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", tmp_path / "stall.jpg")
    out = tmp_path / "out"
    with DeriveRunner(time_limit=60.0, work=stall_on_name) as runner:
        assert runner.run(job(EXIF_SAMPLES / "jpg" / "Nikon_D70.jpg", out)).outcome == WRITTEN
        pid = runner.worker_pid
        assert pid is not None
        killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
        killer.start()
        crashed = runner.run(job(tmp_path / "stall.jpg", out))
        killer.join()
        after = runner.run(job(EXIF_SAMPLES / "jpg" / "Nikon_D70.jpg", out))
    expected = f"derive worker crashed (exit code {-signal.SIGKILL})"
    assert (crashed.outcome, crashed.reason) == (FAILED, expected)
    assert crashed.seconds < 30
    assert after.outcome == WRITTEN and runner.worker_pid != pid


# --------------------------------------------------------------------------- RAW


def synthetic_dng(path: Path, *, preview: tuple[int, int, int] = (200, 100, 50)) -> None:
    """A minimal DNG written with tifffile: IFD0 is a 64x48 RGB preview, its SubIFD a 128x96 RGGB mosaic.

    No small real RAW is available, so this covers both RAW paths: the embedded preview (when it is
    large enough for the target long edge) and LibRaw's demosaic (when it is not).
    """
    tifffile = pytest.importorskip("tifffile")
    height, width = 96, 128
    y, x = np.mgrid[0:height, 0:width]
    red, green, blue = x / width * 3000 + 500, y / height * 3000 + 500, np.full((height, width), 1500.0)
    mosaic = np.empty((height, width), np.uint16)
    mosaic[0::2, 0::2] = red[0::2, 0::2]
    mosaic[0::2, 1::2] = green[0::2, 1::2]
    mosaic[1::2, 0::2] = green[1::2, 0::2]
    mosaic[1::2, 1::2] = blue[1::2, 1::2]
    identity = [10000, 10000, 0, 1, 0, 1, 0, 1, 10000, 10000, 0, 1, 0, 1, 0, 1, 10000, 10000]
    dng_tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "Shutterlock Synthetic", True),  # UniqueCameraModel
        (50721, "2i", 9, identity, True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1 = D65
        (50728, "2I", 3, [1, 1, 1, 1, 1, 1], True),  # AsShotNeutral
    ]
    raw_tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern RGGB
        (50717, "I", 1, 4095, True),  # WhiteLevel
    ]
    thumbnail = np.zeros((48, 64, 3), np.uint8)
    thumbnail[...] = preview
    with tifffile.TiffWriter(path) as writer:
        writer.write(thumbnail, photometric="rgb", subfiletype=1, subifds=1, extratags=dng_tags)
        writer.write(mosaic, photometric=32803, subfiletype=0, extratags=raw_tags)


def test_raw_preview_and_demosaic_paths(tmp_path: Path) -> None:
    pytest.importorskip("rawpy")
    synthetic_dng(tmp_path / "IMG_0001.dng")
    plain = WatermarkConfig(enabled=False)
    preview = derive_file(job(tmp_path / "IMG_0001.dng", tmp_path / "a", watermark=plain, preset="custom",
                              long_edge=64))
    assert preview.outcome == WRITTEN, preview.reason
    with Image.open(preview.output) as out:  # type: ignore[arg-type]
        assert out.size == (64, 48)
        assert np.abs(np.asarray(out, dtype=float).mean(axis=(0, 1)) - (200, 100, 50)).max() <= 4
    demosaic = derive_file(job(tmp_path / "IMG_0001.dng", tmp_path / "b", watermark=plain))
    assert demosaic.outcome == WRITTEN, demosaic.reason
    assert (demosaic.width, demosaic.height) == (128, 96)  # the preview was too small: full decode


def test_broken_raw_files_fail_with_reasons(tmp_path: Path) -> None:
    pytest.importorskip("rawpy")
    synthetic_dng(tmp_path / "whole.dng")
    (tmp_path / "cut.dng").write_bytes((tmp_path / "whole.dng").read_bytes()[:5000])
    (tmp_path / "fake.nef").write_text("hello")
    expected = {"cut.dng": "cannot decode camera RAW: unsupported format or not a camera RAW file",
                "fake.nef": "cannot decode camera RAW: unreadable or truncated RAW data"}
    for name, reason in expected.items():
        result = derive_file(job(tmp_path / name, tmp_path / "out"))
        assert (result.outcome, result.reason) == (FAILED, reason), name


def test_raw_jpeg_pair_yields_one_derivative(tmp_path: Path) -> None:
    pytest.importorskip("rawpy")
    folder = tmp_path / "import"
    folder.mkdir()
    synthetic_dng(folder / "IMG_0001.DNG")
    shutil.copy(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", folder / "IMG_0001.jpg")
    raw, jpeg = folder / "IMG_0001.DNG", folder / "IMG_0001.jpg"
    assert pair_partner(raw) == jpeg and pair_partner(jpeg) == raw
    assert not skip_reason(jpeg) and skip_reason(raw) == "RAW+JPEG pair: IMG_0001.jpg is derived instead"
    assert not skip_reason(raw, "raw")
    assert skip_reason(jpeg, "raw") == "RAW+JPEG pair: IMG_0001.DNG is derived instead"
    out = tmp_path / "out"
    results = [derive_file(job(path, out)) for path in (raw, jpeg)]
    assert [r.outcome for r in results] == [SKIPPED, WRITTEN]
    assert results[0].reason == "RAW+JPEG pair: IMG_0001.jpg is derived instead"
    assert len(list(out.rglob("*.jpg"))) == 1
    raw_out = tmp_path / "raw-out"
    preferring_raw = [derive_file(job(path, raw_out, pair_preference="raw")) for path in (raw, jpeg)]
    assert [r.outcome for r in preferring_raw] == [WRITTEN, SKIPPED]


# --------------------------------------------------------------------------- outbox


def test_outbox_dates_collisions_and_rederive(tmp_path: Path) -> None:
    out = tmp_path / "Outbox"
    first = tmp_path / "a" / "IMG.jpg"
    second = tmp_path / "b" / "IMG.jpg"
    undated = tmp_path / "c" / "scan.jpg"
    for path, sample in ((first, "Canon_40D.jpg"), (second, "Nikon_D70.jpg"), (undated, "xmp/no_exif.jpg")):
        path.parent.mkdir()
        shutil.copy(EXIF_SAMPLES / "jpg" / sample, path)
    os.utime(undated, (datetime(2019, 3, 4, 12).timestamp(),) * 2)

    a = derive_file(job(first, out))
    assert a.output == out / "2008" / "2008-05-30" / "IMG.jpg"
    assert a.capture_time == datetime(2008, 5, 30, 15, 56, 1)
    assert derive_file(job(undated, out)).output == out / "2019" / "2019-03-04" / "scan.jpg"

    # A foreign file and another original's derivative both keep their bytes.
    foreign = out / "2008" / "2008-03-15" / "IMG.jpg"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"someone else's file")
    b = derive_file(job(second, out))
    assert b.output == out / "2008" / "2008-03-15" / "IMG-2.jpg"
    assert foreign.read_bytes() == b"someone else's file"

    # Re-deriving an original (new watermark, say) replaces its own derivative and nothing else.
    before = b.output.read_bytes()  # type: ignore[union-attr]
    again = derive_file(job(second, out, watermark=WatermarkConfig(anchor="top-left")), previous=b.output)
    assert again.output == b.output
    assert again.output.read_bytes() != before  # type: ignore[union-attr]
    assert foreign.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in foreign.parent.iterdir()) == ["IMG-2.jpg", "IMG.jpg"]

    # Without the catalog's previous path a re-derive never overwrites: it takes the next suffix.
    # A temp file left by a killed writer is swept once stale; a "previous" outside the outbox is ignored.
    stale = out / "2008" / "2008-05-30" / f"{TEMP_PREFIX}killed"
    stale.write_bytes(b"half a jpeg")
    os.utime(stale, (datetime(2020, 1, 1).timestamp(),) * 2)
    outsider = tmp_path / "not-in-outbox.jpg"
    outsider.write_bytes(b"keep me")
    assert derive_file(job(first, out), previous=outsider).output == out / "2008" / "2008-05-30" / "IMG-2.jpg"
    assert outsider.read_bytes() == b"keep me"
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_protect_writes_flat_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", folder / "one.jpg")
    (folder / "clip.mp4").write_bytes(b"\0")
    d, w, r, c = configs(tmp_path / "unused")
    seen: list[object] = []
    first = protect([folder], tmp_path / "out", derive=d, watermark=w, rights=r, cloak=c, signer=SIGNER,
                    strength="off", on_result=seen.append)
    second = protect([folder / "one.jpg", tmp_path / "nope.jpg"], tmp_path / "out", derive=d, watermark=w,
                     rights=r, cloak=c, signer=SIGNER, strength="off")
    assert [(x.rendered.source.name, x.rendered.outcome) for x in first] == [("clip.mp4", SKIPPED),
                                                                             ("one.jpg", WRITTEN)]
    assert seen == first
    assert first[1].output == tmp_path / "out" / "one.jpg"
    assert [(x.rendered.outcome, x.output) for x in second] == [(WRITTEN, tmp_path / "out" / "one-2.jpg"),
                                                               (FAILED, None)]
    assert second[1].rendered.reason == "no such file"


def test_protect_pairs_only_among_its_inputs(tmp_path: Path) -> None:
    pytest.importorskip("rawpy")
    folder = tmp_path / "in"
    folder.mkdir()
    synthetic_dng(folder / "IMG_7.dng")
    shutil.copy(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", folder / "IMG_7.JPG")
    d, w, r, c = configs(tmp_path / "unused")
    both = protect([folder], tmp_path / "both", derive=d, watermark=w, rights=r, cloak=c, signer=SIGNER)
    assert [(x.rendered.source.name, x.rendered.outcome) for x in both] == [("IMG_7.JPG", WRITTEN),
                                                                            ("IMG_7.dng", SKIPPED)]
    only_raw = protect([folder / "IMG_7.dng"], tmp_path / "raw", derive=d, watermark=w, rights=r, cloak=c,
                       signer=SIGNER)
    assert [x.rendered.outcome for x in only_raw] == [WRITTEN]


# --------------------------------------------------------------------------- cloak slot and watermark


def test_cloak_off_is_recorded_as_not_cloaked(tmp_path: Path) -> None:
    result = derive_file(job(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", tmp_path))
    assert (result.outcome, result.cloaked, result.cloak_strength, result.cloak_error) == (
        WRITTEN, False, "off", "strength off")


def test_cloak_failure_holds_the_derivative_back(tmp_path: Path) -> None:
    empty_models = tmp_path / "models"
    empty_models.mkdir()
    failing = CloakConfig(strength="light", models_dir=empty_models, offline=True)
    source = EXIF_SAMPLES / "jpg" / "Canon_40D.jpg"
    held = derive_file(job(source, tmp_path / "out", cloak=failing))
    assert (held.outcome, held.output, held.cloaked, held.cloak_strength) == (HELD, None, False, "light")
    assert held.cloak_error and held.cloak_error in held.reason
    assert "held back" in held.reason
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.jpg"))
    released = derive_file(job(source, tmp_path / "out", cloak=failing, release_uncloaked=True))
    assert (released.outcome, released.cloaked) == (WRITTEN, False)
    assert released.reason.startswith("not cloaked")


def test_torch_is_not_imported_without_the_cloak(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path\n"
        "from shutterlock.config import *\n"
        "from shutterlock.derive import DeriveJob, render\n"
        f"r = render(DeriveJob(Path({str(EXIF_SAMPLES / 'jpg' / 'Canon_40D.jpg')!r}), "
        f"DeriveConfig(outbox=Path({str(tmp_path)!r})), WatermarkConfig(), RightsConfig(), "
        "CloakConfig(strength='off')))\n"
        "assert r.outcome == 'written', r\n"
        "assert 'torch' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DAEMON_DIR), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_watermark_text_template() -> None:
    assert render_text("© {creator} {year}", "", 2024) == ""
    assert render_text("© {creator} {year}", "  Ada  ", 2024) == "© Ada 2024"
    assert render_text("{year} {unknown} {0}", "", 2001) == "2001 {unknown} {0}"


def test_watermark_anchor_logo_and_description(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("RGB", (800, 600), (128, 128, 128)).save(grey)
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (40, 20), (255, 0, 0, 255)).save(logo)
    config = WatermarkConfig(logo=logo, anchor="top-left", opacity=1.0)
    result = derive_file(job(grey, tmp_path / "out", watermark=config))
    assert result.outcome == WRITTEN, result.reason
    year = datetime.fromtimestamp(grey.stat().st_mtime).year
    assert result.watermark == f"text '© Ada Lovelace & <Co> {year}' + logo logo.png at top-left, opacity 1"
    with Image.open(result.output) as out:  # type: ignore[arg-type]
        pixels = np.asarray(out, dtype=float)
    top_left, bottom_right = pixels[:100, :400], pixels[-100:, -400:]
    assert np.abs(top_left - 128).max() > 100  # the mark is there: white glyphs, black outline, red logo
    assert (top_left[..., 0] - top_left[..., 1] > 100).any()  # the logo's red
    assert np.abs(bottom_right - 128).max() < 12  # and nowhere else
    nobody = dataclasses.replace(RightsConfig(), creator="")
    d, w, _r, c = configs(tmp_path / "out2")
    unnamed = derive_file(DeriveJob(source=grey, derive=d, watermark=w, rights=nobody, cloak=c))
    assert unnamed.watermark == "none (no creator set)"
    with Image.open(unnamed.output) as out:  # type: ignore[arg-type]
        assert np.abs(np.asarray(out, dtype=float) - 128).max() < 12


def test_xmp_escapes_user_text(tmp_path: Path) -> None:
    rights = RightsConfig(creator='A "quoted" <name> & co', copyright="© 2024 <x>",
                          web_statement="https://example.org/?a=1&b=2", data_mining="DMI-PROHIBITED")
    d, _w, _r, c = configs(tmp_path)
    result = derive_file(DeriveJob(source=EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", derive=d,
                                   watermark=WatermarkConfig(enabled=False), rights=rights, cloak=c))
    [record] = exif_json([result.output])  # type: ignore[list-item]
    assert record["XMP-dc:Creator"] == 'A "quoted" <name> & co'
    assert record["XMP-dc:Rights"] == "© 2024 <x>"
    assert record["XMP-xmpRights:WebStatement"] == "https://example.org/?a=1&b=2"
    assert record["XMP-plus:DataMining"] == "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED"
    assert not any(k.startswith("ExifTool:Warning") for k in record)


def test_output_is_reproducible(tmp_path: Path) -> None:
    source = EXIF_SAMPLES / "jpg" / "orientation" / "landscape_6.jpg"
    a = derive_file(job(source, tmp_path / "a"))
    b = derive_file(job(source, tmp_path / "b"))
    assert a.output.read_bytes() == b.output.read_bytes()  # type: ignore[union-attr]


# --------------------------------------------------------------------------- export settings (issue 13)

WIDE = EXIF_SAMPLES / "jpg" / "mobile" / "HMD_Nokia_8.3_5G.jpg"  # 2.33:1, wider than Instagram allows


def test_presets_size_and_aspect(tmp_path: Path) -> None:
    web = derive_file(job(WIDE, tmp_path / "web"))
    assert (web.width, web.height) == (2048, 878)
    insta = derive_file(job(WIDE, tmp_path / "ig", preset="instagram-1080"))
    assert insta.width == 1080 and abs(insta.width / insta.height - 1.91) < 0.01  # centre-cropped to 1.91:1
    portrait = tmp_path / "tall.jpg"
    with Image.open(WIDE) as image:
        image.rotate(90, expand=True).save(portrait, quality=95)  # 1:2.33, taller than 4:5
    tall = derive_file(job(portrait, tmp_path / "ig2", preset="instagram-1080"))
    assert (tall.width, tall.height) == (1080, 1350)
    custom = derive_file(job(WIDE, tmp_path / "c", preset="custom", long_edge=1000))
    assert max(custom.width, custom.height) == 1000


def test_sharpening_for_screen_adds_edge_contrast(tmp_path: Path) -> None:
    plain = derive_file(job(WIDE, tmp_path / "a", sharpen="off"))
    sharp = derive_file(job(WIDE, tmp_path / "b", sharpen="high"))

    def edges(path: Path) -> float:
        grey = np.asarray(Image.open(path).convert("L"), dtype=float)
        return float(np.abs(np.diff(grey, axis=1)).mean())

    assert edges(sharp.output) > 1.05 * edges(plain.output)  # type: ignore[arg-type]


def test_capture_date_only_when_kept_and_rights_in_exif_and_iptc(tmp_path: Path) -> None:
    d, w, _, c = configs(tmp_path / "a")
    rights = RightsConfig(creator="José Müller-Lövgren")
    dropped = derive_file(DeriveJob(source=WIDE, derive=d, watermark=w, rights=rights, cloak=c))
    kept = derive_file(DeriveJob(source=WIDE, derive=dataclasses.replace(d, outbox=tmp_path / "b",
                                                                         keep_capture_date=True),
                                 watermark=w, rights=rights, cloak=c))
    first, second = exif_json([dropped.output, kept.output])  # type: ignore[list-item]
    assert "ExifIFD:DateTimeOriginal" not in first
    assert second["ExifIFD:DateTimeOriginal"] == "2022:08:14 14:12:31"
    for record in (first, second):
        assert record["IFD0:Artist"] == record["IPTC:By-line"] == "José Müller-Lövgren"
        assert record["IPTC:CopyrightNotice"] == record["IFD0:Copyright"] == "© 2022 José Müller-Lövgren"


def test_the_watermark_font_has_every_letter_of_the_name() -> None:
    from shutterlock.derive.watermark import _load, _missing, choose_font

    for name in ("© Ada Lovelace 2024", "© José Müller-Lövgren 2024", "© Łukasz Žižek 2024"):
        path, missing = choose_font(name, None)
        assert missing == "", (name, path, missing)
        assert _missing(_load(path, 32), name) == ""
    # The check is real: Pillow's bundled font lacks "ö", so it would have drawn a box there.
    assert "ö" in _missing(_load(None, 32), "Lövgren")


def test_only_rated_originals_get_derivatives(tmp_path: Path) -> None:
    from shutterlock.derive.rating import rating

    rated = tmp_path / "rated.jpg"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description xmp:Rating="4"/></rdf:RDF></x:xmpmeta>'
    with Image.open(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg") as image:
        image.save(rated, xmp=xmp)
    plain = tmp_path / "plain.jpg"
    shutil.copy(EXIF_SAMPLES / "jpg" / "Canon_40D.jpg", plain)
    with rated.open("rb") as first, plain.open("rb") as second:
        assert rating(first) == 4 and rating(second) is None
    sidecar = tmp_path / "plain.xmp"
    sidecar.write_bytes(b"<rdf:Description xmp:Rating='5'/>")
    with plain.open("rb") as original, sidecar.open("rb") as side:
        assert rating(original, side) == 5
    d, w, r, c = configs(tmp_path / "out")
    keep = render(DeriveJob(source=rated, derive=d, watermark=w, rights=r, cloak=c, min_rating=3))
    skip = render(DeriveJob(source=plain, derive=d, watermark=w, rights=r, cloak=c, min_rating=3))
    five = render(DeriveJob(source=plain, derive=d, watermark=w, rights=r, cloak=c, min_rating=3, sidecar=sidecar))
    assert keep.outcome == WRITTEN and five.outcome == WRITTEN
    assert (skip.outcome, skip.reason) == (SKIPPED, "not rated; this source makes derivatives of 3+ stars")
