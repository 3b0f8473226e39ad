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


def _perms(user: dict[str, object]) -> list[tuple[str, str]]:
    raw = user.get("permissions") or []
    assert isinstance(raw, list)
    return [(str(p["action"]), str(p.get("path") or "")) for p in raw]


def _allows(users: list[dict[str, object]], action: str, path: str, who: str) -> bool:
    """Whether `who` ("publisher", "worker" or "stranger", a client with no credentials from
    outside) may do `action` on `path`, as MediaMTX's internal auth decides it."""
    for user in users:
        name = user["user"]
        if name not in ("any", who) or (name == "any" and user.get("ips")):
            continue
        for act, p in _perms(user):
            if act != action:
                continue
            if p == "" or (p.startswith("~") and re.search(p[1:], path)) or p == path:
                return True
    return False


def test_mediamtx_is_shipped_closed() -> None:
    """#1: publishers need credentials for `in`, only the workers' account publishes `out`,
    anyone may read (configurable), no takeover of a live path, no known password shipped."""
    doc = yaml.safe_load((DEPLOY / "mediamtx.yml").read_text())
    assert doc["authMethod"] == "internal"
    users = doc["authInternalUsers"]
    assert doc["pathDefaults"]["overridePublisher"] is False
    inp, out = "live/cam-1/in", "live/cam-1/out"
    assert _allows(users, "publish", inp, "publisher")
    assert not _allows(users, "publish", out, "publisher")
    assert _allows(users, "publish", out, "worker")
    assert not _allows(users, "publish", inp, "worker")
    for path in (inp, out, "live/x/other", "other"):
        assert not _allows(users, "publish", path, "stranger"), path
    assert _allows(users, "read", out, "stranger") and _allows(users, "read", inp, "worker")
    assert not _allows(users, "api", "", "stranger")
    for user in users:
        if user["user"] != "any":
            assert str(user["pass"]).startswith("sha256:"), user["user"]  # no known password
