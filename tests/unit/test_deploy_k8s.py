"""deploy/k8s/ (issue 17 item 12): every manifest validates against the Kubernetes JSON schemas
(`kubernetes-validate`, which ships them: no download), and the manifests agree with each other,
with the compose deployment and with the code (commands, settings, ports, probes, secrets, the
NetworkPolicy that keeps the STS and the hooks internal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from livedub.cli import build_parser
from livedub.orchestrator.settings import OrchestratorSettings, env_name
from livedub.typed import fields_of
from livedub.worker.config import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
MEDIAMTX = REPO / "deploy" / "mediamtx.yml"
K8S_VERSION = kubernetes_validate.latest_version()
LOG_ENV = {"LIVEDUB_LOG_FORMAT", "LIVEDUB_LOG_LEVEL"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(deployment: str) -> dict[str, Any]:
    (c,) = find("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def port_named(c: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return int(port)


@pytest.mark.parametrize("name_doc", manifests(), ids=lambda nd: f"{nd[0]}:{nd[1]['kind']}/{nd[1]['metadata']['name']}")
def test_manifest_is_valid_against_the_kubernetes_schema(name_doc: tuple[str, dict[str, Any]]) -> None:
    _, doc = name_doc
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError
    assert doc["metadata"]["namespace" if doc["kind"] != "Namespace" else "name"] == "livedub"


def test_the_schema_check_is_real() -> None:
    bad = find("Deployment", "livedub-sts")
    bad = {**bad, "spec": {**bad["spec"], "replica": 1}}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_expected_objects_exist() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in manifests()}
    assert {
        ("Deployment", "mediamtx"), ("Service", "mediamtx"), ("Deployment", "livedub-sts"),
        ("Service", "livedub-sts"), ("Deployment", "livedub-orchestrator"),
        ("Service", "livedub-orchestrator"), ("NetworkPolicy", "default-deny-ingress"),
    } <= kinds  # fmt: skip


def test_services_select_their_pods_and_named_ports() -> None:
    deployments = {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == "Deployment"}
    for _, svc in manifests():
        if svc["kind"] != "Service":
            continue
        selector = svc["spec"]["selector"]
        targets = [
            d for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert len(targets) == 1, svc["metadata"]["name"]
        (c,) = targets[0]["spec"]["template"]["spec"]["containers"]
        for port in svc["spec"]["ports"]:
            assert port_named(c, port["targetPort"]) == port["port"], (svc["metadata"]["name"], port)
    for d in deployments.values():
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_images_are_pinned_and_match_compose() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    assert container("mediamtx")["image"] == compose["mediamtx"]["image"]
    assert container("livedub-sts")["image"] == compose["echo-sts"]["image"]
    assert container("livedub-orchestrator")["image"] == compose["media-service"]["image"]


def test_commands_and_settings_are_real_and_wired_to_the_services() -> None:
    orch, sts = container("livedub-orchestrator"), container("livedub-sts")
    for c in (orch, sts):
        assert c["command"][0] == "livedub"
        args = build_parser().parse_args(c["command"][1:])
        assert args.host == "0.0.0.0" and args.port == port_named(c, "http")
    env = env_of(orch)
    known = {env_name(f.name) for f in fields_of(OrchestratorSettings)} | LOG_ENV
    assert set(env) <= known, set(env) - known
    mtx = container("mediamtx")
    assert env["ORCH_INPUT_BASE"] == f"rtsp://mediamtx:{port_named(mtx, 'rtsp')}"
    assert env["ORCH_OUTPUT_BASE"] == f"rtmp://mediamtx:{port_named(mtx, 'rtmp')}"
    assert env["ORCH_MEDIA_API_URL"] == f"http://mediamtx:{port_named(mtx, 'api')}"
    assert env["ORCH_STS_URL"] == f"http://livedub-sts:{port_named(sts, 'http')}"
    assert env_of(mtx)["ORCH_URL"] == f"http://livedub-orchestrator:{port_named(orch, 'http')}"
    for key, value in env.items():
        if key.startswith("ORCH_") and isinstance(value, str):
            OrchestratorSettings.load(environ={key: value})
    # Secrets come from the Secret, never as literal values; the hook secret is the same one.
    for c, key in ((orch, "ORCH_HOOK_SECRET"), (mtx, "ORCH_HOOK_SECRET"), (orch, "ORCH_MEDIA_API_CREDENTIALS")):
        ref = env_of(c)[key]["secretKeyRef"]
        assert ref["name"] == "livedub-secrets", key
    assert env_of(orch)["ORCH_HOOK_SECRET"] == env_of(mtx)["ORCH_HOOK_SECRET"]


def test_probes_use_health_and_the_stop_grace_outlasts_the_drain() -> None:
    for name in ("livedub-sts", "livedub-orchestrator"):
        c = container(name)
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/health", (name, probe)
    orch = find("Deployment", "livedub-orchestrator")["spec"]
    stop_timeout_s = float(env_of(container("livedub-orchestrator"))["ORCH_STOP_TIMEOUT_S"])
    assert orch["template"]["spec"]["terminationGracePeriodSeconds"] > stop_timeout_s > WorkerSettings().drain_s
    assert orch["strategy"]["type"] == "Recreate" and orch["replicas"] == 1


def test_mediamtx_mounts_the_config_and_hook_where_they_are_used() -> None:
    mtx = container("mediamtx")
    mounts = {m["mountPath"]: m["subPath"] for m in mtx["volumeMounts"]}
    conf = yaml.safe_load(MEDIAMTX.read_text())
    hook = next(v for v in conf["paths"].values() if v and "runOnReady" in v)["runOnReady"].split()[1]
    assert mounts == {"/mediamtx.yml": "mediamtx.yml", hook: "livedub-hook.sh"}
    (volume,) = find("Deployment", "mediamtx")["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == "mediamtx-config"


def _allowed_from(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [peer for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [])]


def test_network_policy_keeps_the_sts_and_the_hooks_internal() -> None:
    deny = find("NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    sts = find("NetworkPolicy", "livedub-sts")
    assert sts["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "livedub-sts"}
    assert _allowed_from(sts) == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "livedub-orchestrator"}}}]
    orch = find("NetworkPolicy", "livedub-orchestrator")
    peers = _allowed_from(orch)
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mediamtx"}}} in peers
    for peer in peers:  # never "anyone": every peer names its pods
        assert peer.get("podSelector", {}).get("matchLabels"), peer
    assert all(r.get("from") for r in orch["spec"]["ingress"])
    mtx = find("NetworkPolicy", "mediamtx")
    api_rules = [r for r in mtx["spec"]["ingress"] if any(p["port"] == 9997 for p in r["ports"])]
    assert api_rules and all(r.get("from") for r in api_rules)
    public = find("Service", "mediamtx-public")
    assert {p["port"] for p in public["spec"]["ports"]} == {8554, 1935}
    for name in ("livedub-sts", "livedub-orchestrator"):
        assert find("Service", name)["spec"]["type"] == "ClusterIP"
