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
# wgetrc file GNU wget reads (`WGETRC`). BusyBox (the MediaMTX `-ffmpeg` image) has neither: there
# the request is written by the shell's builtin printf into `nc` (http:// only). With none of these
# the script exits 3 rather than put the secret on argv.
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
trap 'rm -f "$private" "$private.fifo" "$private.out"' EXIT
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
elif command -v nc >/dev/null 2>&1 && [ "${url#http://}" != "$url" ]; then
    hostport=${url#http://}
    hostport=${hostport%%/*}
    path=/${url#http://*/}
    host=${hostport%:*}
    port=${hostport##*:}
    if [ "$port" = "$hostport" ]; then port=80; fi
    length=$(printf '%s' "$body" | wc -c | tr -d ' ')
    {
        printf 'POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\n' "$path" "$hostport"
        printf 'Content-Length: %s\r\n' "$length"
        if [ -n "${ORCH_HOOK_SECRET:-}" ]; then printf 'X-Hook-Secret: %s\r\n' "$ORCH_HOOK_SECRET"; fi
        printf '\r\n%s' "$body"
    } >"$private"
    # nc must not see the end of its input before the answer (it would half-close the
    # connection, and the server may drop the request): its input is a FIFO held open until nc
    # ends, which it does when the server closes the connection after answering (HTTP/1.0).
    mkfifo "$private.fifo"
    nc -w "$timeout_s" "$host" "$port" <"$private.fifo" >"$private.out" &
    nc_pid=$!
    exec 3>"$private.fifo"
    cat "$private" >&3
    wait "$nc_pid" || true
    exec 3>&-
    status=$(head -n 1 "$private.out")
    case "$status" in
    "HTTP/1."?" 2"*) ;;
    *)
        echo "$0: hook failed: ${status:-no answer}" >&2
        exit 1
        ;;
    esac
elif [ -z "${ORCH_HOOK_SECRET:-}" ]; then
    wget -q -O /dev/null -T "$timeout_s" --header "Content-Type: application/json" \
        --post-data "$body" "$url"
else
    echo "$0: needs curl or GNU wget to send the hook secret without putting it on argv" >&2
    exit 3
fi
