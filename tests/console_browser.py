"""Headless Chromium (the Debian package) driven over the DevTools protocol, for the console.

Nothing is downloaded at run time: `chromium --headless --remote-debugging-port=P` on 127.0.0.1
(a port from the caller's test range) and a small CDP client over aiohttp's websocket client.
Used by tests/integration/test_console.py and by `make console-screenshot`
(tests/console_screenshot.py). The browser is stopped by its PID (SIGTERM ends its children).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from livedub.subproc import terminate

CHROMIUM = os.environ.get("LIVEDUB_CHROMIUM", "/usr/bin/chromium")


def chromium_missing() -> str | None:
    """Why the browser cannot run here (None: it can)."""
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} not installed (apt chromium; make setup)"
    return None


class CdpError(RuntimeError):
    pass


class Page:
    """One page target: navigate, evaluate JavaScript, wait for a condition, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        mine = self._id
        await self._ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            msg = await self._ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise CdpError(f"devtools connection closed ({msg.type})")
            doc = json.loads(msg.data)
            if doc.get("id") != mine:
                continue  # an event, or an answer to nobody
            if "error" in doc:
                raise CdpError(f"{method}: {doc['error']}")
            result: dict[str, Any] = doc.get("result", {})
            return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        """Evaluate until the value is truthy; AssertionError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.evaluate(expression)
            except CdpError as exc:  # e.g. during a navigation
                last = exc
            if last and not isinstance(last, CdpError):
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    async def navigate(self, url: str, timeout_s: float = 15.0) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            timeout_s,
            f"{url} to load",
        )

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def sign_in(self, base_url: str, token: str, timeout_s: float = 15.0) -> None:
        """The console's sign-in form, filled and submitted as an operator would."""
        await self.navigate(f"{base_url}/login", timeout_s)
        await self.evaluate(
            f"document.getElementById('token').value = {json.dumps(token)};"
            "document.getElementById('login').submit(); true"
        )
        await self.wait_for(
            "location.pathname === '/' && document.readyState === 'complete'"
            " && !!document.querySelector('#streams')",
            timeout_s,
            "the console after sign-in",
        )


class Chromium:
    """`async with Chromium(port) as page:` a headless browser with one page, stopped at exit."""

    def __init__(self, port: int, *, width: int = 1680, height: int = 720, timeout_s: float = 30.0) -> None:
        self.port = port
        self.size = (width, height)
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    def _argv(self, profile: str) -> list[str]:
        argv = [
            CHROMIUM, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.port}",
            f"--window-size={self.size[0]},{self.size[1]}", "about:blank",
        ]  # fmt: skip
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
        return argv

    async def __aenter__(self) -> Page:
        self._profile = tempfile.TemporaryDirectory(prefix="livedub-chromium-")
        self._proc = subprocess.Popen(
            self._argv(self._profile.name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        deadline = time.monotonic() + self.timeout_s
        ws_url: str | None = None
        while ws_url is None:
            if self._proc.poll() is not None:
                raise CdpError(f"chromium exited with {self._proc.returncode}")
            try:
                async with self._http.get(f"http://127.0.0.1:{self.port}/json/list") as resp:
                    targets = await resp.json()
                ws_url = next(
                    (t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None
                )
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            if ws_url is None:
                if time.monotonic() > deadline:
                    raise CdpError("chromium's devtools endpoint never answered")
                await asyncio.sleep(0.1)
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024)
        page = Page(self._ws)
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        return page

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            await asyncio.to_thread(terminate, self._proc, 10)
        if self._profile is not None:
            self._profile.cleanup()
