"""Unit tests of the echo service's test-control state (`livedub.sts.simulation`)."""

from __future__ import annotations

import uuid

from livedub.clock import FakeClock
from livedub.protocol import (
    BackpressureConfig,
    ErrorCode,
    ErrorSimulationConfig,
    LatencyConfig,
)
from livedub.sts.simulation import Simulations, ThresholdState


def _fid() -> str:
    return str(uuid.uuid4())


def test_rules_by_trigger_and_first_match_wins() -> None:
    sims = Simulations(FakeClock())
    target_fid = _fid()
    sims.set_error_simulation(
        ErrorSimulationConfig.parse(
            {
                "stream_id": "s",
                "rules": [
                    {"trigger": "sequence_number", "value": 2, "error_code": "TIMEOUT"},
                    {
                        "trigger": "fragment_id",
                        "value": target_fid.upper(),
                        "error_code": "GPU_OOM",
                    },
                    {"trigger": "sequence_number", "value": 2, "error_code": "MODEL_ERROR"},
                ],
            }
        )
    )
    assert sims.error_for("s", _fid(), 0) is None
    rule = sims.error_for("s", _fid(), 2)
    assert rule is not None and rule.error_code is ErrorCode.TIMEOUT
    rule = sims.error_for("s", target_fid, 7)
    assert rule is not None and rule.error_code is ErrorCode.GPU_OOM
    assert sims.error_for("other", _fid(), 2) is None  # targeted at stream s only


def test_count_fails_next_n_and_nth_fails_every_nth() -> None:
    sims = Simulations(FakeClock())
    sims.set_error_simulation(
        ErrorSimulationConfig.parse(
            {"rules": [{"trigger": "count", "value": 2, "error_code": "QUEUE_FULL"}]}
        )
    )
    hits = [sims.error_for("s", _fid(), i) is not None for i in range(5)]
    assert hits == [True, True, False, False, False]
    assert sims.error_for("t", _fid(), 0) is not None  # global rule: counted per stream

    sims.set_error_simulation(
        ErrorSimulationConfig.parse(
            {"stream_id": "s", "rules": [{"trigger": "nth_fragment", "value": 3}]}
        )
    )
    hits = [sims.error_for("s", _fid(), i) is not None for i in range(9)]
    assert hits == [False, False, True] * 3


def test_stream_setting_overrides_global_and_disabled_exempts() -> None:
    sims = Simulations(FakeClock())
    sims.set_error_simulation(
        ErrorSimulationConfig.parse({"rules": [{"trigger": "nth_fragment", "value": 1}]})
    )
    sims.set_error_simulation(ErrorSimulationConfig(stream_id="quiet", enabled=False))
    assert sims.error_for("noisy", _fid(), 0) is not None
    assert sims.error_for("quiet", _fid(), 0) is None
    sims.reset("quiet")
    assert sims.error_for("quiet", _fid(), 0) is not None
    sims.reset(None)
    assert sims.error_for("noisy", _fid(), 0) is None


def test_latency_fixed_and_seeded_uniform() -> None:
    sims = Simulations(FakeClock())
    assert sims.delay_ms_for("s") == 0
    sims.set_latency(LatencyConfig(delay_ms=250))
    assert sims.delay_ms_for("s") == 250
    sims.set_latency(LatencyConfig(stream_id="s", min_delay_ms=10, max_delay_ms=90, seed=42))
    first = [sims.delay_ms_for("s") for _ in range(20)]
    assert all(10 <= d <= 90 for d in first) and len(set(first)) > 1
    sims.set_latency(LatencyConfig(stream_id="s", min_delay_ms=10, max_delay_ms=90, seed=42))
    assert [sims.delay_ms_for("s") for _ in range(20)] == first  # same seed, same delays
    assert sims.delay_ms_for("other") == 250


def test_backpressure_threshold_levels() -> None:
    t = ThresholdState()
    assert [t.level(x) for x in (0.0, 0.49, 0.5, 0.69, 0.7, 0.89, 0.9, 1.5)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    sims = Simulations(FakeClock())
    assert sims.thresholds_for("s") is None
    assert not sims.set_backpressure(
        BackpressureConfig.parse({"emit": {"severity": "low", "action": "none"}})
    )
    assert sims.set_backpressure(BackpressureConfig(stream_id="s", enabled=True))
    assert sims.thresholds_for("s") == ThresholdState()
    sims.set_backpressure(
        BackpressureConfig.parse(
            {"stream_id": "s", "thresholds": {"low": 0.2, "medium": 0.4, "high": 0.6}}
        )
    )
    state = sims.thresholds_for("s")
    assert state is not None and state.high == 0.6
    sims.set_backpressure(BackpressureConfig(stream_id="s", enabled=False))
    assert sims.thresholds_for("s") is None


def test_refusal_window_expires_with_the_clock() -> None:
    clock = FakeClock()
    sims = Simulations(clock)
    sims.refuse("s", 1500)
    assert sims.refused_ms("s") == 1500
    assert sims.refused_ms("t") == 0
    assert sims.refused_ms(None) == 0
    clock.advance(1.0)
    assert 499 <= sims.refused_ms("s") <= 500
    assert sims.active_counts()["refuse_reconnect"] == 1
    clock.advance(0.6)
    assert sims.refused_ms("s") == 0
    sims.refuse(None, 100)  # global: every stream
    assert sims.refused_ms("t") > 0 and sims.refused_ms(None) > 0
