"""deploy/ cannot run here (no Docker engine): check it refers to real commands, ports and env.

Every `livedub` command in the compose file must parse with the real CLI (`build_parser()`); a
subcommand not registered yet is checked against `PENDING_SUBCOMMANDS` and reported with a
warning, so the lead sees what the compose file still expects from it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from livedub.cli import build_parser
from livedub.exitcodes import ExitCode
from livedub.orchestrator.serve_cli import ENV_ONLY_FIELDS
from livedub.orchestrator.service import (
    INPUT_PATH_RE,
    NOT_READY_ROUTE,
    READY_ROUTE,
    SECRET_HEADER,
    OrchestratorService,
)
from livedub.orchestrator.settings import OrchestratorSettings, env_name
from livedub.typed import fields_of

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
MEDIAMTX = DEPLOY / "mediamtx.yml"
HOOK = DEPLOY / "mediamtx-hook.sh"
DOCKERFILE = DEPLOY / "Dockerfile"
ALERTS = DEPLOY / "alerts.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
OPERATIONS = REPO / "docs" / "operations.md"

#: Subcommands the deployment uses that may not be registered yet, with the flags it passes.
PENDING_SUBCOMMANDS: dict[str, set[str]] = {"sts": {"--host", "--port"}}

#: The worker's metric contract (all labelled stream_id); the dashboard must show each.
WORKER_METRICS = (
    "worker_audio_fragments_total",
    "worker_fallback_total",
    "worker_inflight_fragments",
    "worker_av_sync_delta_ms",
    "worker_sts_breaker_state",
    "worker_backpressure_events_total",
    "worker_reconnection_total",
    "worker_sts_rtt_ms",
    "worker_output_delay_ms",
    "worker_segments_total",
)

#: MediaMTX hook names that current releases no longer use.
OLD_HOOK_NAMES = {"runOnPublish", "runOnPublishRestart", "runOnUnpublish"}
LOG_ENV = {"LIVEDUB_LOG_FORMAT", "LIVEDUB_LOG_LEVEL"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = load_yaml(COMPOSE)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def mediamtx() -> dict[str, Any]:
    doc = load_yaml(MEDIAMTX)
    assert isinstance(doc, dict)
    return doc


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    svc = compose["services"][name]
    assert isinstance(svc, dict)
    return svc


def registered_subcommands() -> dict[str, Any]:
    parser = build_parser()
    choices: dict[str, Any] = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return choices


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def addr_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def health_url(svc: dict[str, Any]) -> str:
    test = " ".join(svc["healthcheck"]["test"])
    match = re.search(r"http://[^'\" ]+", test)
    assert match, test
    return match.group(0)


def published_container_ports(svc: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[1].split("/")[0]) for p in svc.get("ports", [])}


# --- compose: services, commands --------------------------------------------------------------------


def test_compose_has_its_services_with_health_checks(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"mediamtx", "media-service", "echo-sts", "prometheus", "grafana"}
    for name, svc in compose["services"].items():
        hc = svc.get("healthcheck")
        assert hc and hc["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries"):
            assert key in hc, (name, key)
        for dep in svc.get("depends_on", {}):
            assert dep in compose["services"], (name, dep)
            assert svc["depends_on"][dep]["condition"] == "service_healthy"


def test_livedub_commands_are_real_subcommands_and_flags(compose: dict[str, Any]) -> None:
    registered = registered_subcommands()
    seen = []
    for name, svc in compose["services"].items():
        command = svc.get("command")
        if not command or command[0] != "livedub":
            continue
        sub = command[1]
        seen.append(sub)
        if sub in registered:
            args = build_parser().parse_args(command[1:])  # exits (SystemExit) on a bad flag
            assert getattr(args, "func", None) is not None, name
            assert getattr(args, "host", None) == "0.0.0.0", name
        else:
            assert sub in PENDING_SUBCOMMANDS, f"{name}: unknown subcommand {sub!r}"
            flags = {a for a in command[2:] if a.startswith("--")}
            assert flags <= PENDING_SUBCOMMANDS[sub], (name, flags)
            assert flag_value(command, "--host") == "0.0.0.0"
            warnings.warn(
                f"compose service {name!r} runs `livedub {sub}`, not registered yet: "
                f"it must accept {sorted(PENDING_SUBCOMMANDS[sub])}",
                stacklevel=1,
            )
    assert sorted(seen) == ["serve", "sts"]


def test_media_service_env_names_are_real_settings(compose: dict[str, Any]) -> None:
    env = service(compose, "media-service")["environment"]
    known = {env_name(f.name) for f in fields_of(OrchestratorSettings)} | LOG_ENV
    assert set(env) <= known, set(env) - known
    for key, value in env.items():  # and every value is valid for its setting
        if key.startswith("ORCH_") and not value.startswith("${"):
            OrchestratorSettings.load(environ={key: value})


def test_ports_and_hosts_are_consistent(compose: dict[str, Any], mediamtx: dict[str, Any]) -> None:
    media = service(compose, "media-service")
    mtx = service(compose, "mediamtx")
    sts = service(compose, "echo-sts")
    # The orchestrator's port: flag, hook URL, health check and published port agree.
    serve_port = int(flag_value(media["command"], "--port") or 8000)
    hook_url = urlsplit(mtx["environment"]["ORCH_URL"])
    assert (hook_url.hostname, hook_url.port) == ("media-service", serve_port)
    assert urlsplit(health_url(media)).port == serve_port
    assert serve_port in published_container_ports(media)
    # Worker input/output point at MediaMTX's RTSP/RTMP listeners.
    env = media["environment"]
    rtsp = urlsplit(env["ORCH_INPUT_BASE"])
    rtmp = urlsplit(env["ORCH_OUTPUT_BASE"])
    assert (rtsp.scheme, rtsp.hostname, rtsp.port) == (
        "rtsp",
        "mediamtx",
        addr_port(mediamtx["rtspAddress"]),
    )
    assert (rtmp.scheme, rtmp.hostname, rtmp.port) == (
        "rtmp",
        "mediamtx",
        addr_port(mediamtx["rtmpAddress"]),
    )
    assert mediamtx["rtsp"] is True and mediamtx["rtmp"] is True
    assert published_container_ports(mtx) == {rtsp.port, rtmp.port}
    # The STS URL points at the echo STS's port.
    sts_url = urlsplit(env["ORCH_STS_URL"])
    sts_port = int(flag_value(sts["command"], "--port") or 8080)
    assert (sts_url.hostname, sts_url.port) == ("echo-sts", sts_port)
    assert urlsplit(health_url(sts)).port == sts_port
    assert sts_port in published_container_ports(sts)
    # MediaMTX's health check reaches its API where mediamtx.yml puts it.
    assert mediamtx["api"] is True
    api = urlsplit(health_url(mtx))
    assert api.port == addr_port(mediamtx["apiAddress"]) and api.path.startswith("/v3/")
    assert mtx["healthcheck"]["test"][1] == "wget"  # the -ffmpeg image has BusyBox wget


def test_secret_is_shared_between_mediamtx_and_the_orchestrator(compose: dict[str, Any]) -> None:
    media_env = service(compose, "media-service")["environment"]
    mtx_env = service(compose, "mediamtx")["environment"]
    assert media_env["ORCH_HOOK_SECRET"] == mtx_env["ORCH_HOOK_SECRET"]
    assert "serve" not in str(service(compose, "media-service")["command"]) or (
        "--hook-secret" not in service(compose, "media-service")["command"]
    )


# --- MediaMTX config and hook -------------------------------------------------------------------------


def path_configs(mediamtx: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: (v or {}) for k, v in mediamtx["paths"].items()}


def test_mediamtx_uses_current_hook_names_only_on_input_paths(mediamtx: dict[str, Any]) -> None:
    paths = path_configs(mediamtx)
    assert "all" not in paths  # the old name of all_others
    hooked = {k: v for k, v in paths.items() if "runOnReady" in v}
    (key,) = hooked
    conf = hooked[key]
    assert set(conf) == {"runOnReady", "runOnReadyRestart", "runOnNotReady"}
    assert conf["runOnReadyRestart"] is False
    for name, other in paths.items():
        assert not (set(other) & OLD_HOOK_NAMES), name
    for k in mediamtx:
        assert k not in OLD_HOOK_NAMES
    # The command lines carry no $VARIABLE: MediaMTX would substitute it unescaped.
    for hook in ("runOnReady", "runOnNotReady"):
        assert "$" not in conf[hook]
    assert shlex.split(conf["runOnReady"])[-1] == "ready"
    assert shlex.split(conf["runOnNotReady"])[-1] == "not-ready"


def test_mediamtx_path_regexes_match_exactly_what_the_orchestrator_accepts(
    mediamtx: dict[str, Any],
) -> None:
    paths = path_configs(mediamtx)
    in_key = next(k for k, v in paths.items() if "runOnReady" in v)
    out_key = next(k for k in paths if k != in_key)
    assert in_key.startswith("~") and out_key.startswith("~")
    in_re, out_re = re.compile(in_key[1:]), re.compile(out_key[1:])
    samples = [
        "live/a/in", "live/A_b-9/in", "live/" + "x" * 64 + "/in", "live/" + "x" * 65 + "/in",
        "live//in", "live/../in", "live/a/b/in", "live/a/out", "live/a/in/", "x/live/a/in",
        "live/a.b/in", "live/é/in", "other/a/in", "live/a/inx",
    ]  # fmt: skip
    for path in samples:
        ours = INPUT_PATH_RE.fullmatch(path) is not None
        assert (in_re.search(path) is not None) == ours, path
        for out in (path, path.removesuffix("/in") + "/out", path.removesuffix("/in") + "/orig"):
            stem, _, name = out.rpartition("/")
            expected = name in ("out", "orig") and INPUT_PATH_RE.fullmatch(stem + "/in") is not None
            assert (out_re.search(out) is not None) == expected, out


def test_hook_script_is_mounted_where_mediamtx_runs_it(
    compose: dict[str, Any], mediamtx: dict[str, Any]
) -> None:
    mounts = {}
    for volume in service(compose, "mediamtx")["volumes"]:
        src, dst, *_ = volume.split(":")
        assert (DEPLOY / src).is_file(), src
        mounts[dst] = (DEPLOY / src).resolve()
    assert mounts["/mediamtx.yml"] == MEDIAMTX.resolve()
    conf = next(v for v in path_configs(mediamtx).values() if "runOnReady" in v)
    for hook in ("runOnReady", "runOnNotReady"):
        shell, script, _event = shlex.split(conf[hook])
        assert shell == "sh" and mounts[script] == HOOK.resolve()


def test_hook_script_reads_the_mediamtx_env_and_posts_to_our_routes(
    compose: dict[str, Any],
) -> None:
    text = HOOK.read_text()
    for var in ("MTX_PATH", "MTX_SOURCE_TYPE", "MTX_SOURCE_ID", "MTX_QUERY"):
        assert "${" + var + ":-}" in text, var
    for key in ('"path"', '"sourceType"', '"sourceId"', '"query"'):
        assert key in text
    assert "/v1/mediamtx/events/${event}" in text
    assert READY_ROUTE == "/v1/mediamtx/events/ready"
    assert NOT_READY_ROUTE == "/v1/mediamtx/events/not-ready"
    assert f"{SECRET_HEADER}: " in text
    script_env = set(re.findall(r"\$\{(ORCH_[A-Z_]+)", text))
    assert script_env == {k for k in service(compose, "mediamtx")["environment"] if k.startswith("ORCH_")}
    for shell in ("sh", "dash"):
        done = subprocess.run([shell, "-n", str(HOOK)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


# --- Dockerfile -----------------------------------------------------------------------------------------


def test_dockerfile_builds_the_package_the_compose_file_runs(compose: dict[str, Any]) -> None:
    for name in ("media-service", "echo-sts"):
        build = service(compose, name)["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve()
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm" in text  # an exact version
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
    for path in ("pyproject.toml", "README.md", "src"):
        assert (REPO / path).exists()
        assert (
            f"COPY {path}" in text or f" {path} " in text or f"COPY pyproject.toml {path}" in text
        )
    assert "USER 10001" in text
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert cmd[0] == "livedub"
    build_parser().parse_args(cmd[1:])
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!src/"]


# --- alerts and dashboard -----------------------------------------------------------------------------


def orchestrator_metric_names() -> set[str]:
    import asyncio

    service_ = OrchestratorService(OrchestratorSettings())
    text = asyncio.run(service_.render_metrics()).decode()
    names = set()
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("orchestrator_"):
            names.add(fam.name + ("_total" if fam.type == "counter" else ""))
    return names


def metrics_in(expr: str) -> set[str]:
    found = set(re.findall(r"\b((?:worker|orchestrator)_[a-z0-9_]+)", expr))
    return {
        re.sub(r"_(bucket|count|sum)$", "", n) if n.startswith("worker_sts_rtt_ms") else n
        for n in found
    }


@pytest.fixture(scope="module")
def known_metrics() -> set[str]:
    return set(WORKER_METRICS) | orchestrator_metric_names()


def test_worker_metric_contract_matches_the_worker_module() -> None:
    try:
        from livedub.worker.metrics import METRIC_NAMES
    except ImportError:  # the worker is not built yet: the list above is the contract
        return
    assert set(WORKER_METRICS) <= set(METRIC_NAMES)


def test_alert_rules_are_well_formed_and_use_real_metrics(known_metrics: set[str]) -> None:
    doc = load_yaml(ALERTS)
    names = []
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            names.append(rule["alert"])
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")"), rule["alert"]
            used = metrics_in(expr)
            assert used or expr.startswith('up{job="livedub"}'), rule["alert"]
            assert used <= known_metrics, (rule["alert"], used - known_metrics)
            assert rule["labels"]["severity"] in ("info", "warning", "critical")
            assert rule["annotations"]["summary"]
            if "for" in rule:
                assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
    assert len(names) == len(set(names))
    assert {"orchestrator_worker_restarts_total", "orchestrator_worker_scrape_up"} <= known_metrics


def test_dashboard_shows_every_worker_metric(known_metrics: set[str]) -> None:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "stream_id"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
        for target in panel["targets"]:
            names = metrics_in(target["expr"])
            assert names <= known_metrics, (panel["title"], names - known_metrics)
            if any(n.startswith("worker_") for n in names):
                assert 'stream_id=~"$stream_id"' in target["expr"], panel["title"]
            used |= names
    assert set(WORKER_METRICS) <= used, set(WORKER_METRICS) - used


# --- docs ---------------------------------------------------------------------------------------------


def test_operations_doc_lists_every_setting_exit_code_port_and_alert() -> None:
    text = OPERATIONS.read_text()
    for field in (f.name for f in fields_of(OrchestratorSettings)):
        assert f"`{env_name(field)}`" in text, field
        if field not in ENV_ONLY_FIELDS:  # secrets have no flag
            assert f"`--{field.replace('_', '-')}`" in text, field
    for code in ExitCode:
        assert re.search(rf"\|\s*{int(code)}\s*\|\s*`{code.name}`", text), code.name
    for port in ("8000", "8554", "1935", "8080", "9100"):
        assert port in text
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] in text, rule["alert"]
    for metric in (*WORKER_METRICS, *orchestrator_metric_names()):
        assert metric in text, metric


# --- compose: schema, pinning, logs, limits, exposure (issue 17 item 11) ----------------------------------

DATA = REPO / "tests" / "data" / "deploy"
#: The Compose Specification's JSON schema, vendored from compose-spec/compose-spec
#: (schema/compose-spec.json, Apache-2.0, commit 170098ba07d9, 2026-06-23): no download at test time.
COMPOSE_SCHEMA = DATA / "compose-spec.json"
#: MediaMTX's configuration keys (see the file's "source"): top level, and of one path.
MEDIAMTX_KEYS = DATA / "mediamtx-keys.json"
PROMETHEUS = DEPLOY / "prometheus.yml"
GRAFANA = DEPLOY / "grafana" / "provisioning"
EXACT_TAG = re.compile(r"^[a-z0-9./_-]+:v?\d+\.\d+\.\d+(-[a-z0-9]+)?$")
LOOPBACK_BINDS = ("127.0.0.1", "${LIVEDUB_BIND_ADDRESS:-127.0.0.1}")


def test_compose_file_is_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The schema really checks: an unknown key is an error.
    bad = {**compose, "services": {**compose["services"], "x": {"image": "a:1.0.0", "bogus": 1}}}
    assert any("bogus" in e.message for e in validator.iter_errors(bad))


def test_compose_images_are_pinned_to_exact_versions(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert "latest" not in image and EXACT_TAG.fullmatch(image), (name, image)
    mtx_version = service(compose, "mediamtx")["image"].split(":")[1].removesuffix("-ffmpeg")
    assert mtx_version == json.loads(MEDIAMTX_KEYS.read_text())["version"]


def test_compose_rotates_logs_and_limits_resources(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        logging_ = svc["logging"]
        assert logging_["driver"] == "json-file", name
        assert re.fullmatch(r"\d+[km]", logging_["options"]["max-size"]), name
        assert int(logging_["options"]["max-file"]) >= 2, name
        limits = svc["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+[MG]", limits["memory"]), name


def test_compose_publishes_ports_on_loopback_by_default(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            host, _published, _target = str(port).rsplit(":", 2)
            assert host in LOOPBACK_BINDS, (name, port)


def test_compose_requires_the_hook_secret(compose: dict[str, Any]) -> None:
    for name in ("mediamtx", "media-service"):
        assert service(compose, name)["environment"]["ORCH_HOOK_SECRET"].startswith("${ORCH_HOOK_SECRET:?")


def test_compose_stop_grace_outlasts_the_workers_drain(compose: dict[str, Any]) -> None:
    from livedub.worker.config import WorkerSettings

    media = service(compose, "media-service")
    grace_s = int(str(media["stop_grace_period"]).removesuffix("s"))
    stop_timeout_s = float(media["environment"]["ORCH_STOP_TIMEOUT_S"])
    assert grace_s > stop_timeout_s > WorkerSettings().drain_s


def mounts_of(svc: dict[str, Any]) -> dict[str, Path]:
    """container path → host path of the service's bind mounts (named volumes left out)."""
    out = {}
    for volume in svc.get("volumes", []):
        src, dst, *_ = str(volume).split(":")
        if src.startswith("."):
            out[dst] = (DEPLOY / src).resolve()
    return out


def test_prometheus_scrapes_the_orchestrator_and_loads_the_alerts(compose: dict[str, Any]) -> None:
    prom = service(compose, "prometheus")
    mounts = mounts_of(prom)
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS.resolve()
    conf = load_yaml(PROMETHEUS)
    assert set(conf) <= {"global", "rule_files", "scrape_configs", "alerting", "remote_write"}
    for rule_file in conf["rule_files"]:
        assert mounts[rule_file] == ALERTS.resolve()
    (job,) = conf["scrape_configs"]
    assert job["job_name"] == "livedub"  # what alerts.yml selects on
    serve_port = int(flag_value(service(compose, "media-service")["command"], "--port") or 8000)
    assert job["static_configs"][0]["targets"] == [f"media-service:{serve_port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    for key in ("scrape_interval", "evaluation_interval"):
        assert re.fullmatch(r"\d+[smh]", conf["global"][key])
    assert f"--config.file={'/etc/prometheus/prometheus.yml'}" in prom["command"]


def test_grafana_is_provisioned_with_the_datasource_and_dashboard(compose: dict[str, Any]) -> None:
    graf = service(compose, "grafana")
    mounts = mounts_of(graf)
    assert mounts["/etc/grafana/provisioning"] == GRAFANA.resolve()
    (ds,) = load_yaml(GRAFANA / "datasources" / "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    prom_port = addr_port(urlsplit(health_url(service(compose, "prometheus"))).netloc)
    assert urlsplit(ds["url"]).hostname == "prometheus" and urlsplit(ds["url"]).port == prom_port
    assert ds["jsonData"]["manageAlerts"] is True  # the alerts.yml rules show in Grafana
    (provider,) = load_yaml(GRAFANA / "dashboards" / "livedub.yml")["providers"]
    assert provider["type"] == "file"
    dash_files = [dst for dst, src in mounts.items() if src == DASHBOARD.resolve()]
    assert len(dash_files) == 1 and Path(dash_files[0]).parent == Path(provider["options"]["path"])
    assert "${GRAFANA_ADMIN_PASSWORD:?" in graf["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


# --- MediaMTX keys, alert rules, PromQL, dashboard -----------------------------------------------------


def test_mediamtx_config_uses_only_documented_keys(mediamtx: dict[str, Any]) -> None:
    known = json.loads(MEDIAMTX_KEYS.read_text())
    unknown = set(mediamtx) - set(known["global"])
    assert not unknown, f"not MediaMTX {known['version']} settings: {unknown}"
    for section in ("pathDefaults",):
        assert set(mediamtx.get(section) or {}) <= set(known["path"]), section
    for name, conf in path_configs(mediamtx).items():
        bad = set(conf) - set(known["path"])
        assert not bad, (name, bad)
    # Settings overridden from the environment (MTX_<KEY>) are real keys too.
    # A list entry's field is MTX_<LIST>_<position>_<FIELD>: the position must exist in the file.
    lower = {k.lower(): k for k in known["global"]}
    for key in service(load_yaml(COMPOSE), "mediamtx")["environment"]:
        if key.startswith("MTX_"):
            name, *rest = key.removeprefix("MTX_").lower().split("_")
            assert name in lower, key
            if rest:
                index, field_name = int(rest[0]), "_".join(rest[1:])
                entries = mediamtx[lower[name]]
                assert isinstance(entries, list) and index < len(entries), key
                assert field_name in entries[index], key
    # And the check is real: a misspelt key is caught.
    assert "runOnReadyy" not in known["path"] and "apiAdress" not in known["global"]


def promql(expr: str) -> Any:
    """Parse PromQL (Grafana's $__ variables replaced by what they expand to)."""
    import promql_parser

    for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(var, value)
    return promql_parser.parse(expr)


def test_alert_rules_follow_the_prometheus_rule_schema_and_parse() -> None:
    doc = load_yaml(ALERTS)
    assert set(doc) == {"groups"}
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "labels", "query_offset"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            promql(rule["expr"])  # raises ValueError on a syntax error
            for key in ("labels", "annotations"):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in rule.get(key, {}).items())
    with pytest.raises(ValueError):
        promql("sum(rate(worker_fallback_total[5m])")


def test_dashboard_queries_parse_as_promql() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    for panel in dash["panels"]:
        for target in panel["targets"]:
            promql(target["expr"])


def test_reconcile_reaches_the_mediamtx_api(compose: dict[str, Any], mediamtx: dict[str, Any]) -> None:
    api_url = urlsplit(service(compose, "media-service")["environment"]["ORCH_MEDIA_API_URL"])
    override = service(compose, "mediamtx")["environment"]["MTX_APIADDRESS"]
    assert override.startswith(":")  # all interfaces of the container (the file keeps loopback)
    assert (api_url.hostname, api_url.port) == ("mediamtx", addr_port(override))
    assert addr_port(mediamtx["apiAddress"]) == addr_port(override)
    assert str(api_url.port) not in {str(p).rsplit(":", 1)[1] for p in service(compose, "mediamtx")["ports"]}


def test_compose_gives_the_closed_media_server_its_passwords_and_the_workers_theirs() -> None:
    compose = load_yaml(COMPOSE)
    mtx = service(compose, "mediamtx")["environment"]
    orch = service(compose, "media-service")["environment"]
    users = [u["user"] for u in load_yaml(DEPLOY / "mediamtx.yml")["authInternalUsers"]]
    assert (users[0], users[1], users[4]) == ("publisher", "worker", "orchestrator")
    for index, var in ((0, "LIVEDUB_PUBLISH_PASS"), (1, "LIVEDUB_WORKER_PASS"), (4, "LIVEDUB_API_PASS")):
        assert mtx[f"MTX_AUTHINTERNALUSERS_{index}_PASS"].startswith("${" + var + ":?"), "required, no default"
    assert orch["ORCH_OUTPUT_USER"] == users[1]
    assert orch["ORCH_OUTPUT_PASS"].startswith("${LIVEDUB_WORKER_PASS:?")
    assert orch["ORCH_MEDIA_API_CREDENTIALS"].startswith(users[4] + ":${LIVEDUB_API_PASS:?")
