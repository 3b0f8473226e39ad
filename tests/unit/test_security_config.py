"""Issue 17: the shipped configuration is closed by default."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_compose_requires_the_hook_secret() -> None:
    """#2: `${ORCH_HOOK_SECRET:-}` gave an empty secret; `:?` makes compose refuse to start."""
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    values = [
        env["ORCH_HOOK_SECRET"]
        for service in doc["services"].values()
        if isinstance(env := service.get("environment"), dict) and "ORCH_HOOK_SECRET" in env
    ]
    assert values, "no service gets ORCH_HOOK_SECRET"
    for value in values:
        assert re.fullmatch(r"\$\{ORCH_HOOK_SECRET:\?[^}]+\}", value), value


def test_hook_script_never_puts_the_secret_on_a_command_line() -> None:
    """#4: the script sends the secret from a private file (curl -H @file, GNU wget's WGETRC)."""
    script = (DEPLOY / "mediamtx-hook.sh").read_text()
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    for line in code:
        if "ORCH_HOOK_SECRET}" in line:
            assert line.strip().startswith(("if [", "elif [")) or '>"$private"' in line or (
                line.strip().startswith("echo")
            ), line
    assert any("@$private" in line for line in code)
    assert any('WGETRC="$private"' in line for line in code)
