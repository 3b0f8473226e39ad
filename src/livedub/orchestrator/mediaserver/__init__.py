"""Helper programs of the embedded media server (see `livedub.orchestrator.media_server`).

`rtsp_relay.py` runs under the system Python (`/usr/bin/python3`) because it needs Debian's
PyGObject; it is started as a child process and is never imported by livedub code.
"""

from __future__ import annotations

from pathlib import Path

RTSP_RELAY_SCRIPT = Path(__file__).with_name("rtsp_relay.py")
