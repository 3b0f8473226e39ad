#!/bin/sh
# MediaMTX → livedub orchestrator hook. mediamtx.yml runs it as
#   runOnReady:    sh /hooks/livedub-hook.sh ready
#   runOnNotReady: sh /hooks/livedub-hook.sh not-ready
# and it POSTs {"path","sourceType","sourceId","query"} to $ORCH_URL/v1/mediamtx/events/<event>.
#
# The values come from the environment MediaMTX gives the command (MTX_PATH, MTX_SOURCE_TYPE,
# MTX_SOURCE_ID, MTX_QUERY), never from the command line: MediaMTX substitutes $VARS into a
# command line textually, so a publisher's query string placed there could inject arguments.
# Here each value is JSON-escaped (backslash, quote; control characters dropped) before it is
# sent, and the orchestrator refuses duplicate keys, so a crafted query cannot change "path".
# POSIX sh + wget only (BusyBox in bluenviron/mediamtx:*-ffmpeg; GNU wget works too).
#
# Env: ORCH_URL (default http://media-service:8000), ORCH_HOOK_SECRET (sent as X-Hook-Secret
# when set), ORCH_HOOK_TIMEOUT_S (default 5). Exit: 0 sent, 2 usage, else wget's failure code.
set -eu

event="${1:-}"
case "$event" in
ready | not-ready) ;;
*)
    echo "usage: $0 ready|not-ready" >&2
    exit 2
    ;;
esac

json_escape() {
    printf '%s' "$1" | tr -d '\000-\037' | sed 's/[\\"]/\\&/g'
}

body=$(printf '{"path":"%s","sourceType":"%s","sourceId":"%s","query":"%s"}' \
    "$(json_escape "${MTX_PATH:-}")" \
    "$(json_escape "${MTX_SOURCE_TYPE:-}")" \
    "$(json_escape "${MTX_SOURCE_ID:-}")" \
    "$(json_escape "${MTX_QUERY:-}")")

url="${ORCH_URL:-http://media-service:8000}/v1/mediamtx/events/${event}"

set -- -q -O /dev/null -T "${ORCH_HOOK_TIMEOUT_S:-5}" \
    --header "Content-Type: application/json" --post-data "$body"
if [ -n "${ORCH_HOOK_SECRET:-}" ]; then
    set -- "$@" --header "X-Hook-Secret: ${ORCH_HOOK_SECRET}"
fi
exec wget "$@" "$url"
