"""Languages per stream (issue 18), real parts: the embedded media server (closed, with its hook),
an in-process STS (the echo, told to dub only en->es and en->ca), the orchestrator's service
in-process and real `livedub worker` processes, one PyAV publisher (RTMP) asking
`?lang=es,ca&lang=fr`.

Checked: `fr` is refused (unsupported: logged, counted, in the hook's answer) and es + ca start,
one worker each; `live/<id>/es` (the first language's mirror), `live/<id>/out` (its alias) and
`live/<id>/ca` are all readable, dubbed, with every A/V marker in sync; captions per language
(one transcript, one translation file per language, each with its own language's texts); the
`ca` worker killed by its pid from GET /v1/streams → only `ca` restarts (new pid, restarts 1)
while `es` keeps its pid, its restarts count (0) and its output plays on without a gap. Every
wait is on an observed condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livedub.media.analyze import Analysis, analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.publish import publish
from livedub.orchestrator.media_server import MediaServer, Role
from livedub.orchestrator.service import OrchestratorService
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.protocol import LanguagePair, LanguagesInfo, StreamConfig
from livedub.sts.backend import EchoBackend
from livedub.sts.server import run_sts
from livedub.sts.settings import StsSettings
from livedub.sts.testing import free_port, free_port_range
from tests.integration.marks import needs_media_server
from tests.integration.test_orchestrator import alive, metric_sum, until

pytestmark = [pytest.mark.timeout(300), needs_media_server]

STREAM = "lg"
SECRET = "languages-secret-1"
SEGMENT_S = 2.0
PROGRAMME_S = 90.0
SYNC_MS = 40.0  # the relay's 21 ms AAC-priming offset (docs/media-server.md) plus a frame


class EsCaEcho(EchoBackend):
    """The echo, dubbing only en->es and en->ca (what a dub backend with two Apertium pairs says)."""

    PAIRS = (("en", "es"), ("en", "ca"))

    def languages(self) -> LanguagesInfo:
        return LanguagesInfo(backend="echo-es-ca", pairs=[LanguagePair(source=s, target=t) for s, t in self.PAIRS])

    async def check_config(self, config: StreamConfig) -> str | None:
        if (config.source_language, config.target_language) in self.PAIRS:
            return None
        return f"{config.source_language}->{config.target_language} not dubbed here"


@pytest.fixture
async def sts() -> AsyncIterator[Any]:
    async with run_sts(StsSettings(port=0, close_delay_s=0.2), backend=EsCaEcho()) as server:
        yield server


def watch(url: str, seconds: float) -> tuple[threading.Thread, list[Analysis]]:
    """Analyse `seconds` of a live URL in a thread (a reader that stays connected)."""
    found: list[Analysis] = []
    thread = threading.Thread(
        target=lambda: found.append(analyze(url, max_duration_s=seconds, timeout_s=15)), daemon=True
    )
    thread.start()
    return thread, found


def in_sync(a: Analysis, seconds: float) -> None:
    assert a.video is not None and a.audio is not None, a.summary()
    assert a.codecs == ("h264", "aac"), a.summary()
    assert a.duration_s >= seconds - 1.0, a.summary()
    assert len(a.markers) >= seconds / SEGMENT_S - 2, a.summary()
    assert a.max_abs_offset_ms <= SYNC_MS, a.summary()
    assert a.frame_counter_errors == 0, a.summary()


@dataclass
class Stack:
    """The media server, the orchestrator's service (its workers real) and one publisher."""

    ms: MediaServer
    service: OrchestratorService
    http: aiohttp.ClientSession
    base: str
    captions: Path
    logs: Path

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as resp:
            return await resp.json() if resp.status == 200 else None

    async def metrics(self) -> str:
        async with self.http.get(self.base + "/metrics") as resp:
            return await resp.text()

    def url(self, name: str) -> str:
        return self.ms.rtmp_url(f"live/{STREAM}/{name}", Role.ANONYMOUS)

    def published(self, *names: str) -> bool:
        live = {item["name"] for item in self.ms.paths_list()["items"]}
        return all(f"live/{STREAM}/{n}" in live for n in names)


@asynccontextmanager
async def stack(
    sts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, rtmp_query: str | None, **orch: Any
) -> AsyncIterator[Stack]:
    """Everything running, the publisher publishing: by RTMP with `rtmp_query` appended (the
    query travels in nginx-rtmp's publish notification; the embedded RTSP relay cannot take a
    query on a publish URL: libav appends its track paths after it), else by RTSP."""
    src = tmp_path / "fx.mp4"
    # Long enough for the whole test without looping: a loop restarts the frame counter, which
    # the analysis would count as a discontinuity.
    make_fixture(src, FixtureSpec(duration_s=PROGRAMME_S, width=320, height=240, segment_s=SEGMENT_S))
    orch_port = free_port()
    ms = MediaServer(
        rtsp_port=free_port(), rtmp_port=free_port(), streams=[STREAM],
        hook_url=f"http://127.0.0.1:{orch_port}", hook_secret=SECRET, workdir=tmp_path / "ms",
    )  # fmt: skip
    worker = ms.credentials(Role.WORKER)
    assert worker is not None
    low, high = free_port_range(6)
    captions = tmp_path / "captions" / STREAM
    monkeypatch.setenv("WORKER_CAPTIONS", str(captions))  # every worker inherits it
    monkeypatch.setenv("ORCH_OUTPUT_PASS", worker.password.get_secret_value())
    monkeypatch.setenv("ORCH_HOOK_SECRET", SECRET)
    for name in [n for n in os.environ if n.startswith("ORCH_LANG")]:
        monkeypatch.delenv(name)
    rtmp = rtmp_query is not None
    input_base = f"rtmp://127.0.0.1:{ms.rtmp_port}" if rtmp else f"rtsp://127.0.0.1:{ms.rtsp_port}"
    settings = OrchestratorSettings.load(  # these, else the ORCH_* env set above
        dict(
            port=orch_port,
            input_base=input_base,
            output_base=f"rtmp://127.0.0.1:{ms.rtmp_port}",
            output_user=worker.user,
            sts_url=sts.url,
            worker_args=f"--segment-s {SEGMENT_S} --output-delay-s 4 --fragment-timeout-s 2",
            worker_metrics_port_min=low,
            worker_metrics_port_max=high,
            backoff_initial_s=0.5,
            stop_timeout_s=20,
            log_dir=tmp_path / "logs",
            **orch,
        )
    )
    service = OrchestratorService(settings)
    stop_publishing = threading.Event()
    target = ms.rtmp_url(f"live/{STREAM}/in") + f"&{rtmp_query}" if rtmp else ms.rtsp_url(f"live/{STREAM}/in")
    publisher = threading.Thread(
        target=publish, args=(str(src), target), kwargs={"stop": stop_publishing}, daemon=True
    )
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    try:
        await asyncio.to_thread(ms.start)
        await ms.wait_ready_async(10)
        await service.start()
        publisher.start()  # the hook plans the languages and starts one worker each
        yield Stack(ms, service, http, f"http://127.0.0.1:{orch_port}", captions, tmp_path / "logs")
    finally:
        stop_publishing.set()
        await service.stop()
        await http.close()
        publisher.join(10) if publisher.is_alive() else None
        await asyncio.to_thread(ms.stop)


async def dubbing(st: Stack, *languages: str, segments: int = 2) -> bool:
    text = await st.metrics()
    return all(
        metric_sum(text, "worker_segments_total", stream_id=STREAM, language=lang, source="dubbed") >= segments
        for lang in languages
    )


async def test_two_languages_from_the_query_both_dubbed_in_sync_and_supervised_apart(
    sts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(sts, tmp_path, monkeypatch, rtmp_query="lang=es,ca&lang=fr") as st:
        get, metrics, url, published, captions = st.get, st.metrics, st.url, st.published, st.captions
        await until(lambda: dubbing(st, "es", "ca"), 90, "both languages dubbed")
        rows = {r["language"]: r for r in (await get("/v1/streams"))["streams"]}
        assert set(rows) == {"es", "ca"}, rows
        assert rows["es"]["outputs"] == [f"live/{STREAM}/out", f"live/{STREAM}/es"]
        assert rows["ca"]["outputs"] == [f"live/{STREAM}/ca"]
        assert all(r["state"] == "running" and r["restarts"] == 0 for r in rows.values()), rows
        assert (await get(f"/v1/streams/{STREAM}"))["language"] == "es"  # the first language
        assert (await get(f"/v1/streams/{STREAM}/ca"))["pid"] == rows["ca"]["pid"]
        text = await metrics()
        assert metric_sum(text, "orchestrator_languages_refused_total", reason="unsupported") == 1
        assert metric_sum(text, "worker_fallback_total", stream_id=STREAM) == 0
        for lang in ("es", "ca"):
            assert metric_sum(text, "orchestrator_worker_scrape_up", stream_id=STREAM, language=lang) == 1

        # Every output readable and in sync: the first language's mirror, its alias, the other one.
        # the mirror starts at the first keyframe after `out` connected (its lead: 3 s)
        await until(lambda: published("out", "es", "ca"), 20, "out, es and ca published")
        watched = {name: watch(url(name), 8.0) for name in ("es", "out", "ca")}
        for name, (thread, found) in watched.items():
            await asyncio.to_thread(thread.join, 40)
            assert found, f"{name}: nothing analysed"
            in_sync(found[0], 8.0)

        # Captions per language: one transcript (the first language's worker), one file each.
        for lang in ("es", "ca"):
            vtt = Path(f"{captions}.{lang}.vtt")
            await until(lambda vtt=vtt: vtt.exists() and vtt.read_text().count(" --> ") >= 2, 20, vtt.name)
            text_ = vtt.read_text()
            assert f"[echo translation {lang}]" in text_
            assert "[echo translation" not in text_.replace(f"[echo translation {lang}]", "")
        assert "[echo transcript en]" in Path(f"{captions}.en.vtt").read_text()
        assert not Path(f"{captions}.fr.vtt").exists()

        # Kill the ca worker by its pid: only ca restarts; es plays on, same pid, no restart.
        es_pid, ca_pid = rows["es"]["pid"], rows["ca"]["pid"]
        es_thread, es_seen = watch(url("es"), 10.0)
        out_thread, out_seen = watch(url("out"), 10.0)
        await asyncio.sleep(0)  # the readers start while es runs; the kill comes next
        os.kill(ca_pid, signal.SIGKILL)

        async def ca_back() -> dict[str, Any] | None:
            row = await get(f"/v1/streams/{STREAM}/ca")
            ok = row and row["state"] == "running" and row["pid"] not in (None, ca_pid)
            return row if ok else None

        ca_row = await until(ca_back, 30, "ca restarted")
        await until(lambda: published("ca"), 20, "ca published again")
        assert ca_row["restarts"] == 1 and ca_row["last_exit_code"] == -signal.SIGKILL
        es_row = await get(f"/v1/streams/{STREAM}/es")
        assert es_row["pid"] == es_pid and es_row["restarts"] == 0 and es_row["state"] == "running"
        assert alive(es_pid) and not alive(ca_pid)
        for thread, seen in ((es_thread, es_seen), (out_thread, out_seen)):
            await asyncio.to_thread(thread.join, 40)
            assert seen, "es output not analysed across the kill"
            in_sync(seen[0], 10.0)  # no gap, no counter jump: it never noticed
            assert seen[0].silences == [], seen[0].summary()
        ca_thread, ca_seen = watch(url("ca"), 4.0)  # the restarted ca is readable again
        await asyncio.to_thread(ca_thread.join, 40)
        assert ca_seen and ca_seen[0].video is not None and ca_seen[0].audio is not None
        text = await metrics()
        assert metric_sum(text, "orchestrator_worker_restarts_total") == 1
        assert metric_sum(text, "worker_segments_total", stream_id=STREAM, language="ca", source="dubbed") >= 1
        logs = {p.name for p in st.logs.iterdir()}
        assert logs == {f"{STREAM}.es.log", f"{STREAM}.ca.log"}, logs
        ca_log = (tmp_path / "logs" / f"{STREAM}.ca.log").read_text()
        assert ca_log.count("worker starting") == 2
        assert (tmp_path / "logs" / f"{STREAM}.es.log").read_text().count("worker starting") == 1
        assert "mirror output opened" in (tmp_path / "logs" / f"{STREAM}.es.log").read_text()


class EsOnlyUnreportedEcho(EchoBackend):
    """An STS that cannot say what it dubs (no GET /v1/languages: 404) and dubs only en->es."""

    async def check_config(self, config: StreamConfig) -> str | None:
        return None if config.target_language == "es" else f"{config.target_language} not dubbed here"

    languages = None  # type: ignore[assignment]  # not a ReportsLanguages backend


async def test_configured_languages_one_refused_by_the_sts_never_touches_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH_LANGUAGES=ca,es, RTSP publish, an STS that cannot tell its pairs: both workers start;
    ca's stream:init is refused (INVALID_CONFIG), so ca goes out original (config_refused) and
    is still published as live/<id>/out + live/<id>/ca, while es is dubbed untouched."""
    async with run_sts(StsSettings(port=0, close_delay_s=0.2), backend=EsOnlyUnreportedEcho()) as sts:
        async with stack(sts, tmp_path, monkeypatch, rtmp_query=None, languages="ca,es") as st:
            await until(lambda: dubbing(st, "es"), 90, "es dubbed")

            async def ca_original() -> bool:
                text = await st.metrics()
                return metric_sum(
                    text, "worker_fallback_total", stream_id=STREAM, language="ca", reason="config_refused"
                ) >= 2

            await until(ca_original, 30, "ca out original (config_refused)")
            text = await st.metrics()
            assert metric_sum(text, "worker_fallback_total", stream_id=STREAM, language="es") == 0
            assert metric_sum(text, "worker_segments_total", stream_id=STREAM, language="ca", source="dubbed") == 0
            assert metric_sum(text, "orchestrator_languages_refused_total") == 0  # nothing known to refuse
            rows = {r["language"]: r for r in (await st.get("/v1/streams"))["streams"]}
            assert rows["ca"]["outputs"] == [f"live/{STREAM}/out", f"live/{STREAM}/ca"]  # the first
            assert all(r["state"] == "running" and r["restarts"] == 0 for r in rows.values()), rows
            await until(lambda: st.published("out", "ca", "es"), 20, "out, ca and es published")
            watched = {name: watch(st.url(name), 6.0) for name in ("out", "es")}
            for name, (thread, found) in watched.items():
                await asyncio.to_thread(thread.join, 40)
                assert found, f"{name}: nothing analysed"
                in_sync(found[0], 6.0)
            health = (await st.get(f"/v1/streams/{STREAM}/ca"))["metrics_port"]
            async with st.http.get(f"http://127.0.0.1:{health}/health") as resp:
                doc = await resp.json()
            assert doc["sts"] == "config_refused" and doc["mirror"] == "writing", doc
