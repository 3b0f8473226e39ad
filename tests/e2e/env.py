"""`make e2e-up` / `make e2e-down`: start the E2E services by hand (for debugging), stop them.

`python -m tests.e2e.env up` starts them like the suite does and records their PIDs in
`var/e2e-env.json`; `down` stops exactly those PIDs (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from tests.e2e.helpers.docker_manager import ServiceManager

STATE = Path("var/e2e-env.json")


def up() -> int:
    workdir = Path("var/e2e-env").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    manager = ServiceManager(workdir)
    manager.start()
    pids = {name: p.pid for name, p in manager.processes.items()}
    STATE.write_text(json.dumps({"mode": manager.mode, "pids": pids, "workdir": str(workdir)}))
    sys.stdout.write(f"E2E services up ({manager.mode}): {pids}; logs in {workdir}\n")
    return 0


def down() -> int:
    if not STATE.exists():
        sys.stdout.write("no E2E services recorded as running\n")
        return 0
    state = json.loads(STATE.read_text())
    if state.get("mode") == "docker":
        ServiceManager(Path(state["workdir"]), mode="docker").stop()
    for name, pid in state["pids"].items():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        sys.stdout.write(f"stopped {name} (pid {pid})\n")
    STATE.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(up() if sys.argv[1:] == ["up"] else down() if sys.argv[1:] == ["down"] else 2)
