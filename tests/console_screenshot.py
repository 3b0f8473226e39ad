"""`make console-screenshot`: run `livedub demo`, open its live console in headless Chromium while
the programme plays, and write a screenshot (default docs/console.png).

It signs in with the token the demo wrote to `<workdir>/console-token`, waits until the stream's row
shows dubbed segments and a translation line, takes the screenshot and lets the demo finish (its
exit code is reported, the screenshot is kept either way). Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from livedub.orchestrator.demo import CONSOLE_TOKEN_FILE
from livedub.subproc import terminate
from tests.console_browser import Chromium, chromium_missing

REPO = Path(__file__).resolve().parents[1]


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def shoot(args: argparse.Namespace, demo: subprocess.Popen[bytes]) -> Path:
    orch = f"http://127.0.0.1:{args.orchestrator_port}"
    token_file = Path(args.workdir) / CONSOLE_TOKEN_FILE
    deadline = time.monotonic() + args.timeout_s
    while not (token_file.exists() and _up(f"{orch}/health")):
        if demo.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the demo's console never came up (see {args.workdir}/logs)")
        await asyncio.sleep(0.2)
    token = token_file.read_text().strip()
    async with Chromium(args.devtools_port, width=1680, height=420) as page:
        await page.sign_in(orch, token)
        await page.wait_for(
            f"(() => {{ const r = document.querySelector('tr[data-stream-id]');"
            f" return r && r.dataset.dubbed >= {args.min_dubbed}"
            " && r.querySelector('[data-field=last_translation]').textContent !== '–'; })()",
            max(1.0, deadline - time.monotonic()),
            "a row with dubbed segments and a translation",
        )
        return await page.screenshot(Path(args.out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "docs" / "console.png"))
    p.add_argument("--workdir", default="var/console-screenshot")
    p.add_argument("--backend", choices=["dub", "echo"], default="dub")
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--min-dubbed", type=int, default=3, help="dubbed segments shown before the shot")
    p.add_argument("--rtsp-port", type=int, default=8554)
    p.add_argument("--rtmp-port", type=int, default=1935)
    p.add_argument("--sts-port", type=int, default=8080)
    p.add_argument("--orchestrator-port", type=int, default=8000)
    p.add_argument("--devtools-port", type=int, default=9222, help="Chromium's DevTools port (127.0.0.1)")
    p.add_argument("--timeout-s", type=float, default=180.0)
    args = p.parse_args(argv)
    if (missing := chromium_missing()) is not None:
        sys.stderr.write(f"{missing}\n")
        return 2
    (Path(args.workdir) / CONSOLE_TOKEN_FILE).unlink(missing_ok=True)  # never a previous run's
    demo = subprocess.Popen([
        sys.executable, "-m", "livedub", "demo", "--workdir", args.workdir, "--backend", args.backend,
        "--duration-s", str(args.duration_s), "--rtsp-port", str(args.rtsp_port),
        "--rtmp-port", str(args.rtmp_port), "--sts-port", str(args.sts_port),
        "--orchestrator-port", str(args.orchestrator_port),
    ])  # fmt: skip
    try:
        shot = asyncio.run(shoot(args, demo))
        sys.stdout.write(f"console screenshot: {shot}\n")
        code = demo.wait(timeout=args.timeout_s)
        sys.stdout.write(f"demo exited {code}\n")
        return 0
    except (RuntimeError, AssertionError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"console screenshot failed: {exc}\n")
        return 1
    finally:
        terminate(demo, 60)


if __name__ == "__main__":
    sys.exit(main())
