#!/bin/bash
# Per-thread CPU of ONE worker, alone: embedded media server + echo STS + a real-time ffmpeg
# publisher (RTSP) → `livedub worker` → RTMP output (or a file with OUT=file). Prints ms of CPU
# per second for each worker thread over a 20 s steady-state window (from /proc; thread names from
# py-spy dump). Run it alone on the machine: `bash bench/thread_cpu.sh m4a` (or flac, wav).
# Used for docs/performance.md, "Where the time goes".
set -eu
T=${1:-m4a}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.venv/bin
W=$(mktemp -d /tmp/livedub-threadcpu.XXXXXX)
free_port() { $B/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(free_port); M=$(free_port); S=$(free_port)
$B/livedub make-fixture "$W/fx.mp4" --duration-s 50 > /dev/null
# Loopback only, a local measurement: open publishing (the media server is closed by default).
$B/livedub media-server --rtsp-port "$P" --rtmp-port "$M" --streams w --insecure-open-publish --workdir "$W/ms" > "$W/ms.log" 2>&1 & MS=$!
$B/livedub sts --port "$S" > "$W/sts.log" 2>&1 & STS=$!
trap 'kill $WK $PUB $STS $MS 2>/dev/null || true' EXIT
WK=; PUB=
until grep -q "media-server ready" "$W/ms.log"; do sleep 0.2; done
until curl -sf "http://127.0.0.1:$S/health" > /dev/null; do sleep 0.2; done
ffmpeg -hide_banner -loglevel error -nostdin -re -i "$W/fx.mp4" -c copy -f rtsp -rtsp_transport tcp "rtsp://127.0.0.1:$P/live/w/in" & PUB=$!
OUTURL="rtmp://127.0.0.1:$M/live/w/out"; [ "${OUT:-rtmp}" = file ] && OUTURL="$W/out.flv"
sleep 1
$B/livedub worker --input "rtsp://127.0.0.1:$P/live/w/in" --output "$OUTURL" --sts-url "http://127.0.0.1:$S" \
  --metrics-port 0 --stream-id w --segment-s 6 --output-delay-s 7 --transport-format "$T" > "$W/worker.log" 2>&1 & WK=$!
sleep 14  # start-up and the first segments: outside the window
$B/py-spy dump -p "$WK" 2>/dev/null | grep '^Thread' > "$W/names.txt" || true
snap() { for t in /proc/$WK/task/*; do echo "$(basename "$t") $(awk '{print $14+$15}' "$t/stat")"; done; }
snap > "$W/s0.txt"; sleep 20; snap > "$W/s1.txt"
$B/python - "$W" "$T" <<'PY'
import os, re, sys
w, t = sys.argv[1], sys.argv[2]
hz = os.sysconf("SC_CLK_TCK")
names = {}
for line in open(f"{w}/names.txt"):
    m = re.match(r'Thread (\S+) \(\w+\): "([^"]+)"', line)
    if m:
        names[str(int(m.group(1), 0))] = m.group(2)
a = dict(l.split() for l in open(f"{w}/s0.txt"))
b = dict(l.split() for l in open(f"{w}/s1.txt"))
total = 0.0
print(f"worker, {t} transport: ms of CPU per second, per thread (20 s window)")
for tid, ticks in b.items():
    ms = (int(ticks) - int(a.get(tid, 0))) * 1000 / hz / 20
    total += ms
    if ms > 0:
        print(f"  {names.get(tid, tid):16s} {ms:6.1f}")
print(f"  {'total':16s} {total:6.1f}")
PY
