#!/usr/bin/env bash
# Side-by-side transports phase (make bench-quick) of an older commit and this tree, alternated so
# that drift of the machine hits both sides: bash bench/ab.sh <old-commit> [pairs, default 2].
# The old tree is a detached worktree under var/ab/ and runs with this tree's venv (PYTHONPATH).
set -euo pipefail
old=${1:?usage: bench/ab.sh <old-commit> [pairs]}
pairs=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv/bin/python"
wt="$root/var/ab/$(git -C "$root" rev-parse --short "$old")"
[ -d "$wt" ] || git -C "$root" worktree add -q --detach "$wt" "$old"
for i in $(seq 1 "$pairs"); do
  for side in old new; do
    if [ "$side" = old ]; then dir=$wt; pp="$wt/src:$wt"; else dir=$root; pp=""; fi
    echo "=== $side ($(git -C "$dir" log --oneline -1 | cut -c1-8)) run $i $(date -u +%T)"
    (cd "$root" && "$py" -S -m bench.cold_libs "$root/.venv")  # RSS: libraries read back, not just written
    (cd "$dir" && PYTHONPATH=$pp "$py" -m bench.run --only transports --quiet-wait-s 20 --quiet-total-s 20 \
      --budget-s 200 --workdir "$root/var/ab/out-$side-$i" 2>&1 | grep -A8 "^transports vs the relay")
  done
done
