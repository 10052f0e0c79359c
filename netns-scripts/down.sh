#!/usr/bin/env bash
# netns-scripts/down.sh: stop ftpnat (SIGTERM, so it prints its stop summary), then delete the two
# namespaces. Idempotent: whatever is already gone is skipped. Logs stay in $FTPNAT_STATE_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

[[ $EUID -eq 0 ]] || ftpnat_die "needs root"

if pid=$(ftpnat_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    if ! ftpnat_wait_for 5 test -s "$FTPNAT_STATE_DIR/ftpnat.status"; then
        echo "down.sh: ftpnat (pid $pid) ignored SIGTERM for 5 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        ftpnat_wait_for 2 test -s "$FTPNAT_STATE_DIR/ftpnat.status" || true
    fi
    echo "down.sh: ftpnat exited with status $(cat "$FTPNAT_STATE_DIR/ftpnat.status" 2>/dev/null || echo '?')"
fi

# Processes left in the namespaces (servers of an interrupted demo) would keep them alive.
for ns in "$FTPNAT_NS_LAN" "$FTPNAT_NS_WAN"; do
    if ftpnat_ns_exists "$ns"; then
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
        ip netns del "$ns"
    fi
done
# Devices ftpnat created vanish with it; a device of these names still here is someone else's: leave it.
