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
# The secret never goes on a command line (any local user can read argv in /proc): it is written
# to a private temporary file that curl reads headers from (`-H @file`), or, without curl, to a
# wgetrc file GNU wget reads (`WGETRC`). BusyBox wget can do neither, so the script then exits 3
# rather than leak the secret: the MediaMTX image needs curl or GNU wget (`apk add curl`).
#
# Env: ORCH_URL (default http://media-service:8000), ORCH_HOOK_SECRET (sent as X-Hook-Secret
# when set), ORCH_HOOK_TIMEOUT_S (default 5). Exit: 0 sent, 2 usage, 3 no way to send the secret
# privately, else curl's / wget's failure code.
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

timeout_s="${ORCH_HOOK_TIMEOUT_S:-5}"
umask 077
private=$(mktemp)
trap 'rm -f "$private"' EXIT
if command -v curl >/dev/null 2>&1; then
    {
        echo "Content-Type: application/json"
        if [ -n "${ORCH_HOOK_SECRET:-}" ]; then echo "X-Hook-Secret: ${ORCH_HOOK_SECRET}"; fi
    } >"$private"
    curl -fsS -o /dev/null -m "$timeout_s" -H "@$private" --data-binary "$body" "$url"
elif wget --version 2>/dev/null | grep -q "GNU Wget"; then
    {
        echo "header = Content-Type: application/json"
        if [ -n "${ORCH_HOOK_SECRET:-}" ]; then echo "header = X-Hook-Secret: ${ORCH_HOOK_SECRET}"; fi
    } >"$private"
    WGETRC="$private" wget -q -O /dev/null -T "$timeout_s" --post-data "$body" "$url"
elif [ -z "${ORCH_HOOK_SECRET:-}" ]; then
    wget -q -O /dev/null -T "$timeout_s" --header "Content-Type: application/json" \
        --post-data "$body" "$url"
else
    echo "$0: needs curl or GNU wget to send the hook secret without putting it on argv" >&2
    exit 3
fi
