"""E2E environment configuration: URLs, ports and timings, overridable by env (E2E_*).

Defaults are MediaMTX's interface on 127.0.0.1 (RTSP 8554, RTMP 1935), the echo STS on 8080 and the
orchestrator (media service) on 8000 — the same ports the docker-compose file publishes.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from livedub.credentials import with_credentials


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


HOST = "127.0.0.1"
RTSP_PORT = _env_int("E2E_RTSP_PORT", 8554)
RTMP_PORT = _env_int("E2E_RTMP_PORT", 1935)
STS_PORT = _env_int("E2E_STS_PORT", 8080)
ORCHESTRATOR_PORT = _env_int("E2E_ORCHESTRATOR_PORT", 8000)
# Workers started directly by tests get metrics ports from this range (one per test).
WORKER_METRICS_PORT_BASE = _env_int("E2E_WORKER_METRICS_PORT_BASE", 18100)

RTSP_BASE = f"rtsp://{HOST}:{RTSP_PORT}"
RTMP_BASE = f"rtmp://{HOST}:{RTMP_PORT}"
STS_URL = f"http://{HOST}:{STS_PORT}"
ORCHESTRATOR_URL = f"http://{HOST}:{ORCHESTRATOR_PORT}"


# The media server is closed (issue 17 #1): the publisher's and the workers' credentials, one pair
# per run (set in the environment by the first import, so pytest-xdist workers share them).
PUBLISH_USER = "publisher"
PUBLISH_PASS = os.environ.setdefault("E2E_PUBLISH_PASS", secrets.token_urlsafe(16))
WORKER_USER = "worker"
WORKER_PASS = os.environ.setdefault("E2E_WORKER_PASS", secrets.token_urlsafe(16))


def rtsp_in(stream_id: str) -> str:
    """Where the publisher publishes (and a worker reads) `stream_id`: with the publisher's
    credentials."""
    return with_credentials(f"{RTSP_BASE}/live/{stream_id}/in", PUBLISH_USER, PUBLISH_PASS)


def rtmp_out(stream_id: str) -> str:
    """Where a worker publishes (and a recorder reads) the dubbed stream: with the workers'
    credentials."""
    return with_credentials(f"{RTMP_BASE}/live/{stream_id}/out", WORKER_USER, WORKER_PASS)


# Every stream id the suite uses, declared to the embedded media server at start (nginx-rtmp serves
# only ids it knows at start: see docs/media-server.md). Each test has its own id.
STREAM_IDS = [
    "e2e-pipeline",
    "e2e-sync",
    "e2e-sync-latency",
    "e2e-sync-drift",
    "e2e-cb-open",
    "e2e-cb-nonretry",
    "e2e-cb-log",
    "e2e-bp-pause",
    "e2e-bp-slow",
    "e2e-bp-metrics",
    "e2e-ft-max",
    "e2e-ft-timeout",
    "e2e-ft-corr",
    "e2e-rc-reconnect",
    "e2e-rc-exhaust",
    "e2e-rc-state",
    "e2e-smoke",
    "e2e-dub",
]

# Streams the orchestrator (media service) manages via the publish hook; tests start the others' workers.
ORCHESTRATED_STREAM_PATTERN = "e2e-pipeline"

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "test-streams"
FIXTURE_PATH = FIXTURE_DIR / "1-min-nfl.mp4"
FIXTURE_DURATION_S = 60.0
SEGMENT_S = 6.0
SEGMENTS = 10

# Spec timings (the seed verifies these): worker defaults, not shortened for the suite.
FRAGMENT_TIMEOUT_S = 8.0
BREAKER_COOLDOWN_S = 30.0
RECONNECT_SCHEDULE_S = (2.0, 4.0, 8.0, 16.0, 32.0)

# Budgets
TEST_BUDGET_S = 90.0
SERVICE_START_TIMEOUT_S = 20.0
