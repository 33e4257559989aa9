"""Signing derivatives in the daemon: which identity signs, and what the manifest says about one image.

Called by the derive lane and ``protect`` between the worker's rendered bytes and the atomic write into
the outbox (and by the site for its renditions); never inside the worker (the package's ``__init__``, which
the worker imports, does not import this module).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shutterlock.config import Config, RightsConfig
from shutterlock.provenance import identity
from shutterlock.provenance.identity import SigningIdentity
from shutterlock.provenance.manifest import Credit, ProvenanceError, Treatment, sign_jpeg
from shutterlock.vault.format import Keys

from .metadata import copyright_notice, data_mining_uri
from .render import Rendered


def identity_for(config: Config, keys: Callable[[], Keys], vault_root: Path) -> tuple[SigningIdentity, bool]:
    """(the identity that signs, whether it was just created). A ``[provenance]`` certificate wins; else the
    self-issued one, created the first time, its sealed copy (re)written into the vault (needs the master key)."""
    if config.provenance.certificate is not None and config.provenance.key is not None:
        return identity.load_user(config.provenance.certificate, config.provenance.key), False
    return identity.ensure(config.paths.state_dir, config.rights.creator, keys().catalog, vault_root)


def credit(rights: RightsConfig, year: int) -> Credit:
    """The manifest's rights: the same creator, copyright and PLUS value as the XMP packet."""
    return Credit(creator=rights.creator.strip(), copyright=copyright_notice(rights, year),
                  web_statement=rights.web_statement.strip(), data_mining=data_mining_uri(rights.data_mining))


def sign_rendered(rendered: Rendered, signer: SigningIdentity, rights: RightsConfig) -> bytes:
    """The worker's encoded derivative with its manifest: what was done to it, by whom, on what terms."""
    if rendered.jpeg is None or rendered.capture_time is None:
        raise ProvenanceError(f"{rendered.source.name}: nothing rendered to sign")
    treatment = Treatment(resized_to=rendered.resized_to, watermark=rendered.watermark,
                          cloak_strength=rendered.cloak_strength if rendered.cloaked else "")
    return sign_jpeg(rendered.jpeg, signer, treatment, credit(rights, rendered.capture_time.year))
