"""Which later stages a configuration asks for, and the jobs a freshly sealed original needs."""

from __future__ import annotations

from shutterlock.catalog import Catalog, FileRow
from shutterlock.config import Config
from shutterlock.pipeline import Stage
from shutterlock.vault.format import Keys
from shutterlock.vault.local import LocalStore


def make_stages(config: Config, catalog: Catalog, keys: Keys, vault: LocalStore) -> list[Stage]:
    stages: list[Stage] = []
    if config.s3 is not None:
        from shutterlock.replicate import ReplicateStage

        stages.append(ReplicateStage(config, catalog, keys, vault))
    if config.derive.enabled:
        from shutterlock.derive_stage import DeriveStage

        stages.append(DeriveStage(config, catalog, keys, vault))
    return stages


def follow_up_jobs(stages: list[Stage], file: FileRow, content_id: str, size: int) -> list[tuple[str, str, int]]:
    """(kind, subject, size) for each stage: replicas are per object, derivatives per original path."""
    jobs = []
    for stage in stages:
        subject = content_id if stage.kind == "replicate" else str(file.id)
        jobs.append((stage.kind, subject, size))
    return jobs
