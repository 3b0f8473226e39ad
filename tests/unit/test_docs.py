"""The docs list every setting of every process (env var names), so they cannot drift silently."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from livedub.orchestrator.media_server import MediaServerSettings
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.sts.settings import StsSettings
from livedub.worker.config import WorkerSettings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.mark.parametrize("model", [WorkerSettings, StsSettings, MediaServerSettings, OrchestratorSettings])
def test_operations_doc_lists_every_setting(model: type[BaseSettings]) -> None:
    text = OPERATIONS.read_text()
    prefix = str(model.model_config.get("env_prefix", ""))
    missing = [f"{prefix}{name.upper()}" for name in model.model_fields if f"`{prefix}{name.upper()}`" not in text]
    assert not missing, f"docs/operations.md lacks {missing}"
