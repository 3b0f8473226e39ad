"""The live console in a real browser: headless Chromium (Debian package, DevTools protocol) on the
orchestrator's `GET /` while a stream is dubbed end to end — embedded media server, echo STS,
`livedub serve` with an operator token, a real worker, a publisher looping a fixture and an RTMP
recorder on the output.

The test signs in through the form, reads the rendered row (state, segment counts growing), presses
"Original only" and sees the worker's segments go out original (`worker_fallback_total{reason=
"original_only"}`) while the same worker keeps the output playing (the recorder never sees it
end), presses "Dub again" and sees dubbed segments again, presses "Restart" and sees a new worker
pid; it leaves a screenshot in its tmp dir. Every process is stopped by PID in a `finally`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livedub.media.analyze import analyze
from livedub.media.fixture import FixtureSpec, make_fixture
from livedub.media.publish import publish
from livedub.media.record import record
from livedub.orchestrator.media_server import MediaServer, Role
from livedub.sts.testing import free_port, free_port_range
from livedub.subproc import terminate
from tests.console_browser import Chromium, chromium_missing
from tests.integration.marks import needs_ffmpeg, needs_media_server

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing())),
]

LIVEDUB = [sys.executable, "-m", "livedub"]
SID = "console-it"
TOKEN = "console-test-token-3b9f1d2e7a"


def _get(url: str, token: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=3) as resp:
        body: bytes = resp.read()
        return body


def _wait(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = cond()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _fallbacks(orch: str, reason: str) -> float:
    text = _get(f"{orch}/metrics").decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "worker_fallback_total" and s.labels.get("reason") == reason
        and s.labels.get("stream_id") == SID
    )


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        self.stop_publish = threading.Event()
        self.media: MediaServer | None = None
        self.orch = ""

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed in close()
        self.logs.append(log)
        self.procs.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        )

    def close(self) -> None:
        self.stop_publish.set()
        for proc in reversed(self.procs):
            terminate(proc, 40)  # the orchestrator stops its worker (drain) first
        if self.media is not None:
            self.media.stop()
        for log in self.logs:
            log.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    st = Stack(tmp_path)
    try:
        yield st
    finally:
        st.close()


@needs_media_server
@needs_ffmpeg
async def test_console_rows_and_actions_in_a_real_browser(stack: Stack, tmp_path: Path) -> None:
    rtsp, rtmp, sts, orch_port, devtools = (free_port() for _ in range(5))
    low, high = free_port_range(4)
    orch = stack.orch = f"http://127.0.0.1:{orch_port}"
    hook_secret = "console-hook-secret-5c1a"
    fixture = tmp_path / "fixture.mp4"
    make_fixture(fixture, FixtureSpec(duration_s=8, width=320, height=240, segment_s=2))

    media = stack.media = MediaServer(
        rtsp_port=rtsp, rtmp_port=rtmp, streams=[SID], hook_url=orch, hook_secret=hook_secret,
        workdir=tmp_path / "media-server",
    )  # fmt: skip
    media.start()
    worker = media.credentials(Role.WORKER)
    assert worker is not None
    stack.spawn("sts", [*LIVEDUB, "sts", "--port", str(sts)])
    stack.spawn("orchestrator", [
        *LIVEDUB, "serve", "--port", str(orch_port), "--sts-url", f"http://127.0.0.1:{sts}",
        "--input-base", f"rtsp://127.0.0.1:{rtsp}", "--output-base", f"rtmp://127.0.0.1:{rtmp}",
        "--worker-metrics-port-min", str(low), "--worker-metrics-port-max", str(high),
        "--log-dir", str(tmp_path / "workers"), "--console-refresh-s", "0.5",
        "--worker-args", "--segment-s 2 --fragment-timeout-s 2",
    ], env={
        "ORCH_HOOK_SECRET": hook_secret, "ORCH_API_TOKEN": TOKEN,
        "ORCH_OUTPUT_USER": worker.user, "ORCH_OUTPUT_PASS": worker.password.get_secret_value(),
    })  # fmt: skip
    media.wait_ready(10)
    _wait(lambda: _get(f"http://127.0.0.1:{sts}/health"), 30, "the STS")
    _wait(lambda: _get(f"{orch}/health"), 30, "the orchestrator")
    rtsp_in = media.rtsp_url(f"live/{SID}/in", Role.PUBLISHER)
    threading.Thread(
        target=publish, args=(str(fixture), rtsp_in), kwargs={"loop": True, "stop": stack.stop_publish},
        daemon=True,
    ).start()  # fmt: skip
    recording = tmp_path / "out.mkv"
    recorder_done = threading.Event()

    def _record() -> None:
        try:
            record(f"rtmp://127.0.0.1:{rtmp}/live/{SID}/out", recording, wait_s=60, log=tmp_path / "recorder.log")
        finally:
            recorder_done.set()

    threading.Thread(target=_record, daemon=True).start()

    async with Chromium(devtools) as page:
        await page.sign_in(orch, TOKEN)
        row = f"document.querySelector('tr[data-stream-id=\"{SID}\"]')"
        field = f"(name) => {row}?.querySelector(`[data-field=\"${{name}}\"]`)?.textContent"

        async def cell(name: str) -> Any:
            return await page.evaluate(f"({field})({json.dumps(name)})")

        async def dataset(key: str) -> Any:
            return await page.evaluate(f"{row}?.dataset.{key}")

        async def press(action: str) -> None:
            await page.evaluate(f"{row}.querySelector('button[data-action=\"{action}\"]').click(); true")
            await page.wait_for(
                f"window.livedubConsole.actions.some(a => a.action === {json.dumps(action)} && a.status === 200)",
                10, f"{action} answered",
            )  # fmt: skip

        # the rendered row: running, segments dubbed and counting
        await page.wait_for(f"{row}?.dataset.dubbed >= 2", 60, "two dubbed segments in the row")
        assert await cell("state") == "running"
        assert await cell("language") == "es"  # the worker's target language (no `language` field yet)
        assert await cell("mode") == "dubbed"
        assert await cell("breaker") == "closed"
        assert (await cell("links")).startswith(f"rtmp://127.0.0.1:{rtmp}/live/{SID}/out")
        first = int(await dataset("dubbed"))
        await page.wait_for(f"{row}.dataset.dubbed > {first}", 20, "the dubbed count to grow")
        pid = await dataset("pid")
        assert pid and not recorder_done.is_set()

        # original only: the same worker, segments out original, the output still playing
        before = _fallbacks(orch, "original_only")
        switched_at = time.monotonic()
        await press("original_only")
        _wait(lambda: _fallbacks(orch, "original_only") >= before + 2, 30, "original-only segments")
        await page.wait_for(f"({field})('mode') === 'original only'", 10, "the mode cell")
        await page.wait_for(f"({field})('fallback_reasons').includes('original_only')", 10, "the reason")
        assert await dataset("pid") == pid
        assert not recorder_done.is_set(), "the output ended during the switch"

        # and back: dubbed segments again, same worker, output still playing
        await press("dubbed")
        dubbed_now = int(await dataset("dubbed"))
        await page.wait_for(f"{row}.dataset.dubbed >= {dubbed_now + 2}", 30, "dubbed segments again")
        await page.wait_for(f"({field})('mode') === 'dubbed'", 10, "the mode cell back")
        assert await dataset("pid") == pid
        assert not recorder_done.is_set(), "the output ended during the switch back"
        await page.screenshot(tmp_path / "console.png")

        # restart: a new worker process
        restarted_at = time.monotonic()
        await press("restart")
        new_pid = await page.wait_for(
            f"{row}?.dataset.pid && {row}.dataset.pid !== {json.dumps(pid)} && ({field})('state') === 'running'"
            f" && {row}.dataset.pid",
            60, "a new worker pid",
        )  # fmt: skip
        assert new_pid != pid
        info = json.loads(_get(f"{orch}/v1/streams/{SID}", TOKEN))
        assert str(info["pid"]) == str(new_pid) and info["restarts"] == 0  # not counted as a crash
    assert (tmp_path / "console.png").stat().st_size > 10_000
    # The old worker's output, recorded by one reader from before the switch until the restart
    # drained it: unbroken through both switches (a break ends the reader), markers in sync.
    _wait(recorder_done.is_set, 30, "the old worker's output to end")
    analysis = analyze(str(recording))
    assert analysis.duration_s >= restarted_at - switched_at, analysis.summary()
    assert analysis.markers and analysis.max_abs_offset_ms <= 33.0, analysis.summary()
