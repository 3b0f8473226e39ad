"""The docs list every setting of every process (env var names), so they cannot drift silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedub.orchestrator.media_server import MediaServerSettings
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.settings import EnvSettings
from livedub.sts.settings import StsSettings
from livedub.typed import fields_of
from livedub.worker.config import WorkerSettings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.mark.parametrize(
    "model", [WorkerSettings, StsSettings, MediaServerSettings, OrchestratorSettings]
)
def test_operations_doc_lists_every_setting(model: type[EnvSettings]) -> None:
    text = OPERATIONS.read_text()
    envs = [model.env_name(f.name) for f in fields_of(model)]
    missing = [env for env in envs if f"`{env}`" not in text]
    assert not missing, f"docs/operations.md lacks {missing}"
