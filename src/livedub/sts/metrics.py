"""Prometheus metrics of the Echo STS service, on a registry of its own.

Metric names (all prefixed `sts_`) are listed here once. Each server instance owns one
`StsMetrics`, so several in-process servers (tests) never share counters. Never does I/O itself;
`render()` returns the exposition text for `GET /metrics`.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PROCESSING_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


class StsMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.connections = Gauge("sts_connections", "open Socket.IO connections", registry=r)
        self.sessions_active = Gauge("sts_sessions_active", "sessions (after stream:ready)", registry=r)
        self.sessions = Counter("sts_sessions", "sessions started", registry=r)
        self.fragments = Counter(
            "sts_fragments", "fragments by status: received, rejected, success, partial, failed", ["status"], registry=r
        )
        self.processing = Histogram(
            "sts_fragment_processing_seconds", "fragment:data received -> fragment:processed sent",
            buckets=PROCESSING_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "sts_errors", "errors sent (error events and failed fragments) by code", ["code"], registry=r
        )
        self.simulations_active = Gauge(
            "sts_simulations_active", "active test-control settings by kind", ["kind"], registry=r
        )
        self.controls = Counter(
            "sts_controls", "test-control requests by name and status", ["name", "status"], registry=r
        )
        self.connections_refused = Counter(
            "sts_connections_refused", "connections refused at connect, by code", ["code"], registry=r
        )
        self.backpressure = Counter(
            "sts_backpressure_events", "backpressure events sent by action", ["action"], registry=r
        )
        # dub backend (docs/dubbing.md)
        self.dub_stage_seconds = Histogram(
            "sts_dub_stage_seconds",
            "dub backend processing seconds per stage: decode, vad, asr, translation, tts, fit, mix, encode",
            ["stage"], buckets=PROCESSING_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.dub_queue_depth = Gauge(
            "sts_dub_queue_depth", "dub backend: fragments waiting for or in the worker pool", registry=r
        )
        self.dub_fragments = Counter(
            "sts_dub_fragments",
            "dub backend fragments by outcome: dubbed, original_no_speech, original_no_words, "
            "original_too_short, failed",
            ["outcome"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
