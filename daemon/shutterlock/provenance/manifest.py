"""The C2PA manifest every derivative carries, and signing bytes with it.

What goes in is the point of this module; it is the whole public statement about the image:

- ``cawg.training-mining``: ``notAllowed`` for AI generative training, AI training, data mining and AI
  inference (CAWG training-and-data-mining assertion);
- ``c2pa.actions.v2``: created by a camera (IPTC digital source type ``digitalCapture``), then resized,
  cloaked (``c2pa.filtered``) and visibly watermarked (``c2pa.watermarked.unbound``: a mark that is no
  soft binding), as far as each happened;
- ``cawg.metadata``: creator, copyright notice and the same rights fields as the XMP packet.

What stays out, on purpose: no ingredient (so no thumbnail of the original or of the uncloaked image
and no hash linking to the sealed original), no claim thumbnail (switched off), no title (the outbox
name is the original's), no capture time, GPS, camera or serial. Signing runs in the daemon, never in
the derive worker: the worker never holds the key.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from shutterlock import __version__
from shutterlock.errors import OperationFailed

from .identity import SigningIdentity

DIGITAL_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
TRAINING_MINING = "cawg.training-mining"
# The four uses the CAWG assertion predefines, in the order people read them.
FORBIDDEN_USES = ("cawg.ai_generative_training", "cawg.ai_training", "cawg.data_mining", "cawg.ai_inference")
JPEG = "image/jpeg"
# Reader and builder settings: nothing fetched from the network, no thumbnail made of the asset.
SETTINGS: dict[str, Any] = {
    "builder": {"thumbnail": {"enabled": False}},
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
}


class ProvenanceError(OperationFailed):
    """Signing or reading a manifest failed; the message says which file and why."""


@dataclass(frozen=True)
class Treatment:
    """What was done to the pixels, each fact one action. Empty/zero means it did not happen."""

    resized_to: int = 0  # the long edge after scaling down
    cloak_strength: str = ""  # the strength the cloak ran at
    watermark: str = ""  # the visible mark's description


@dataclass(frozen=True)
class Credit:
    """Who made the image and on what terms (from ``[rights]``, copyright already filled in)."""

    creator: str = ""
    copyright: str = ""
    web_statement: str = ""
    data_mining: str = ""  # the PLUS Data Mining URI, as in the XMP packet


def definition(treatment: Treatment, credit: Credit) -> dict[str, Any]:
    """The manifest definition handed to the C2PA builder."""
    actions: list[dict[str, Any]] = [{"action": "c2pa.created", "digitalSourceType": DIGITAL_CAPTURE}]
    if treatment.resized_to:
        actions.append({"action": "c2pa.resized",
                        "description": f"scaled down to {treatment.resized_to} px on the long edge"})
    if treatment.cloak_strength:
        actions.append({"action": "c2pa.filtered",
                        "description": f"cloaked ({treatment.cloak_strength}): a perturbation against the "
                                       "image encoders of generative models"})
    if treatment.watermark:
        actions.append({"action": "c2pa.watermarked.unbound", "description": f"visible mark: {treatment.watermark}"})
    metadata: dict[str, Any] = {
        "@context": {"dc": "http://purl.org/dc/elements/1.1/", "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
                     "plus": "http://ns.useplus.org/ldf/xmp/1.0/"},
        "xmpRights:Marked": True,
    }
    if credit.creator.strip():
        metadata["dc:creator"] = [credit.creator.strip()]
    if credit.copyright.strip():
        metadata["dc:rights"] = credit.copyright.strip()
    if credit.web_statement.strip():
        metadata["xmpRights:WebStatement"] = credit.web_statement.strip()
    if credit.data_mining:
        metadata["plus:DataMining"] = credit.data_mining
    return {
        "claim_generator_info": [{"name": "Shutterlock", "version": __version__}],
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {"label": TRAINING_MINING,
             "data": {"entries": {use: {"use": "notAllowed"} for use in FORBIDDEN_USES}}},
            {"label": "cawg.metadata", "data": metadata},
        ],
    }


def sign_jpeg(jpeg: bytes, identity: SigningIdentity, treatment: Treatment, credit: Credit) -> bytes:
    """``jpeg`` with the manifest embedded (APP11); every other byte of the image is kept as it was."""
    import c2pa

    try:
        context = c2pa.Context(settings=c2pa.Settings.from_dict(SETTINGS))
        info = c2pa.C2paSignerInfo(alg=identity.algorithm().encode(), sign_cert=identity.chain_pem,
                                   private_key=identity.key_pem, ta_url=None)
        with c2pa.Signer.from_info(info) as signer, \
                c2pa.Builder(definition(treatment, credit), context=context) as builder:
            out = io.BytesIO()
            builder.sign(signer, JPEG, io.BytesIO(jpeg), out)
    except c2pa.C2paError as error:
        # The library's messages describe the asset or the certificate, never the key's bytes.
        raise ProvenanceError(f"cannot sign: {error}") from None
    return out.getvalue()
