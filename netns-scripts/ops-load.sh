#!/usr/bin/env bash
# netns-scripts/ops-load.sh: does operating the gateway stall forwarding? (issue 12, the operations side)
#
# Brings up its own lan/wan topology (unique names), fills ftpnat's table with FLOWS UDP flows (many
# inside addresses, many sockets each, every flow answered by an echo server outside), then runs a ping
# through the gateway twice in the same run:
#   quiet   PHASE seconds with nothing else asked of ftpnat;
#   loaded  PHASE seconds while `ftpnat show flows --json` and a metrics scrape each run in a loop.
# Prints ping RTT p50/p99/max of both phases side by side, ftpnat's RSS (sampled, and its peak), how
# many listings and scrapes completed, and the run loop's own figures from its metrics: the longest turn
# and the longest operations work in one turn, and the turn-duration histogram of the loaded phase.
#
#   sudo netns-scripts/ops-load.sh                 # FLOWS=250000 PHASE=20 INTERVAL=0.005 CLIENT_NICE=0
#   sudo FLOWS=100000 PHASE=10 netns-scripts/ops-load.sh
#   sudo CLIENT_NICE=19 netns-scripts/ops-load.sh  # the listing/scrape clients at low priority
#   sudo FTPNAT_BIN=/path/to/other/ftpnat netns-scripts/ops-load.sh   # another build, same load
#
# On a machine with few CPUs the loaded figures include the clients' own CPU use (printing a 250k-flow
# listing takes a CPU for seconds): CLIENT_NICE shows how much of the difference is theirs.
#
# A measurement, not a test: nothing here passes or fails on a figure (tests/ops_netns.rs checks the
# same setup for correctness only). Bounded: every loop ends with its phase; the fill sends 2 x FLOWS
# datagrams; the topology is removed on exit. Needs root, iproute2, ping, curl, python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export FTPNAT_NS_LAN="ftpnat-load$$-lan" FTPNAT_NS_WAN="ftpnat-load$$-wan"
export FTPNAT_LAN_TUN="fl$$l" FTPNAT_WAN_TUN="fl$$w"
export FTPNAT_STATE_DIR="${TMPDIR:-/tmp}/ftpnat-load-$$"
export FTPNAT_FORWARDS=""
source "$here/env.sh"
[[ $EUID -eq 0 ]] || ftpnat_die "needs root (network namespaces)"

FLOWS="${FLOWS:-250000}"
PHASE="${PHASE:-20}"
INTERVAL="${INTERVAL:-0.005}"
CLIENT_NICE="${CLIENT_NICE:-0}"
HOSTS=16                      # inside addresses 10.0.0.10 ... (per-host limits stay far away)
SOCKETS=50                    # sockets per address: 800 NAT mappings in all
PORTS=$(( (FLOWS + HOSTS * SOCKETS - 1) / (HOSTS * SOCKETS) ))   # destinations per socket
sock="$FTPNAT_STATE_DIR/control.sock"
mkdir -p "$FTPNAT_STATE_DIR"
export FTPNAT_EXTRA_ARGS="--max-flows $((FLOWS + 50000)) --udp-timeout 1h --control-socket $sock --metrics-listen 127.0.0.1:0"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$here/down.sh" >/dev/null 2>&1 || true
    rm -rf "$FTPNAT_STATE_DIR"
}
trap cleanup EXIT

"$here/up.sh" >/dev/null
pid="$(ftpnat_pid)"
ftpnat_wait_for 10 test -S "$sock" || ftpnat_die "no control socket"
metrics="$(grep -o 'metrics=[0-9.]*:[0-9]*' "$FTPNAT_STATE_DIR/ftpnat.log" | head -1 | cut -d= -f2)"
[[ -n "$metrics" ]] || ftpnat_die "no metrics address in the log"
for i in $(seq 0 $((HOSTS - 1))); do
    ip -n "$FTPNAT_NS_LAN" addr add "10.0.0.$((10 + i))/24" dev "$FTPNAT_LAN_TUN"
done
# The fill comes in bursts; a device queue of 500 loses some whenever ftpnat is off the CPU a moment.
ip -n "$FTPNAT_NS_LAN" link set dev "$FTPNAT_LAN_TUN" txqueuelen 20000
ip -n "$FTPNAT_NS_WAN" link set dev "$FTPNAT_WAN_TUN" txqueuelen 20000
stat_of() { "$FTPNAT_BIN" show stats --json --control-socket "$sock" | python3 -c "import json,sys; print(json.load(sys.stdin)['stats']['$1'])"; }

echo "ops-load: filling $FLOWS flows ($HOSTS hosts x $SOCKETS sockets x $PORTS ports) ..."
ip netns exec "$FTPNAT_NS_WAN" timeout $((PHASE * 2 + 600)) python3 "$here/udp-flows.py" echo \
    --ports "30000-$((30000 + PORTS - 1))" --seconds $((PHASE * 2 + 600)) >"$FTPNAT_STATE_DIR/echo.log" 2>&1 &
pids+=($!)
sleep 1
t0=$SECONDS
ip netns exec "$FTPNAT_NS_LAN" timeout 300 python3 "$here/udp-flows.py" fill \
    --hosts "10.0.0.10-10.0.0.$((10 + HOSTS - 1))" --sockets "$SOCKETS" --to "$FTPNAT_WAN_HOST" \
    --ports "30000-$((30000 + PORTS - 1))" 2>/dev/null
active="$(stat_of flows.active)"
echo "ops-load: $active flows in the table after $((SECONDS - t0)) s; ftpnat RSS $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status)"

rss_sampler() {  # rss_sampler FILE: VmRSS in kB every 0.2 s until killed
    while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/{print $2}' "/proc/$pid/status" >>"$1"; sleep 0.2; done
}
scrape() { curl -s --max-time 30 "http://$metrics/metrics"; }

run_ping() {  # run_ping NAME: PHASE seconds of pings every INTERVAL, output to $FTPNAT_STATE_DIR/NAME.ping
    ip netns exec "$FTPNAT_NS_LAN" timeout $((PHASE + 10)) ping -n -i "$INTERVAL" -w "$PHASE" -W 2 \
        "$FTPNAT_WAN_HOST" >"$FTPNAT_STATE_DIR/$1.ping" 2>&1 || true
}

echo "ops-load: quiet phase ($PHASE s, ping every $INTERVAL s) ..."
rss_sampler "$FTPNAT_STATE_DIR/quiet.rss" & rs=$!; pids+=($rs)
run_ping quiet
kill "$rs"
scrape >"$FTPNAT_STATE_DIR/before.prom"

echo "ops-load: loaded phase ($PHASE s: show flows --json and /metrics in loops, clients at nice $CLIENT_NICE) ..."
end=$((SECONDS + PHASE + 1))
(
    n=0
    while ((SECONDS < end)); do
        s=$(date +%s.%N)
        nice -n "$CLIENT_NICE" "$FTPNAT_BIN" show flows --json --control-socket "$sock" |
            wc -c >"$FTPNAT_STATE_DIR/show.bytes"
        echo "$(date +%s.%N) $s" >>"$FTPNAT_STATE_DIR/show.times"
    done
) & shows=$!; pids+=($shows)
(
    while ((SECONDS < end)); do nice -n "$CLIENT_NICE" curl -s --max-time 30 "http://$metrics/metrics" |
        wc -c >>"$FTPNAT_STATE_DIR/scrape.bytes"; done
) & scrapes=$!; pids+=($scrapes)
rss_sampler "$FTPNAT_STATE_DIR/loaded.rss" & rs=$!; pids+=($rs)
run_ping loaded
kill "$rs"
wait "$shows" "$scrapes" 2>/dev/null || true
scrape >"$FTPNAT_STATE_DIR/after.prom"

python3 - "$FTPNAT_STATE_DIR" "$FLOWS" "$(awk '/VmHWM/{print $2}' /proc/$pid/status)" <<'EOF'
import re, sys, os
d, flows, hwm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rtts(name):
    text = open(os.path.join(d, name + ".ping")).read()
    v = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", text))
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    return v, (int(sent.group(1)), int(sent.group(2))) if sent else (0, 0)
def pct(v, p):
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
def rss(name):
    try:
        v = [int(x) for x in open(os.path.join(d, name + ".rss")).read().split()]
    except FileNotFoundError:
        v = []
    return max(v) / 1024 if v else float("nan")
def prom(name):
    out = {}
    for line in open(os.path.join(d, name + ".prom")):
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        out[k] = float(v)
    return out
q, (qs, qr) = rtts("quiet")
l, (ls, lr) = rtts("loaded")
print()
print(f"ping RTT through ftpnat with {flows} flows in the table (ms)")
print(f"{'':28}{'quiet':>12}{'loaded':>12}")
for label, p in [("p50", 50), ("p99", 99), ("p99.9", 99.9)]:
    print(f"{label:28}{pct(q, p):12.3f}{pct(l, p):12.3f}")
print(f"{'max':28}{(q[-1] if q else float('nan')):12.3f}{(l[-1] if l else float('nan')):12.3f}")
print(f"{'replies/sent':28}{f'{qr}/{qs}':>12}{f'{lr}/{ls}':>12}")
print(f"{'ftpnat RSS max (MiB)':28}{rss('quiet'):12.1f}{rss('loaded'):12.1f}")
times = []
try:
    for line in open(os.path.join(d, "show.times")):
        e, s = map(float, line.split())
        times.append(e - s)
except FileNotFoundError:
    pass
scrapes = open(os.path.join(d, "scrape.bytes")).read().split() if os.path.exists(os.path.join(d, "scrape.bytes")) else []
shown = open(os.path.join(d, "show.bytes")).read().strip() if os.path.exists(os.path.join(d, "show.bytes")) else "?"
print(f"ftpnat peak RSS (VmHWM): {hwm / 1024:.1f} MiB")
if times:
    print(f"show flows --json: {len(times)} complete in the loaded phase, {min(times):.2f}-{max(times):.2f} s each, {shown} bytes of output")
print(f"metrics scrapes: {len(scrapes)} complete, {min(map(int, scrapes)) if scrapes else 0} bytes or more each")
b, a = prom("before"), prom("after")
print(f"loop: longest turn {a.get('ftpnat_loop_turn_max_seconds', 0) * 1e3:.3f} ms since start (fill included); "
      f"longest operations work in one turn {a.get('ftpnat_loop_ops_max_seconds', 0) * 1e3:.3f} ms wall, "
      f"{a.get('ftpnat_loop_ops_cpu_max_seconds', 0) * 1e3:.3f} ms CPU")
for fam in ["ftpnat_loop_turn_seconds", "ftpnat_loop_ops_seconds", "ftpnat_loop_ops_cpu_seconds"]:
    rows = []
    for k, v in a.items():
        m = re.match(fam + r'_bucket\{le="([^"]+)"\}', k)
        if m:
            rows.append((m.group(1), v - b.get(k, 0)))
    total = a.get(fam + "_count", 0) - b.get(fam + "_count", 0)
    print(f"{fam} in the loaded phase: {int(total)} turns, cumulative by upper bound (s):")
    print("  " + "  ".join(f"<={le}:{int(n)}" for le, n in rows))
EOF
