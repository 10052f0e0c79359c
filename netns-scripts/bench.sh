#!/usr/bin/env bash
# netns-scripts/bench.sh: ftpnat side by side with the kernel's NAT, in one run on one topology.
#
# Builds lan ─veth─ router ─veth─ wan in three namespaces (bench-topo.sh) and measures, with the router
# namespace holding in turn (a) the kernel's nftables masquerade with the FTP conntrack helper,
# (b) ftpnat between two TUN devices, (c) ftpnat --forward-only (same I/O path, no translation),
# (d) ftpnat --workers 2 (BENCH_WORKERS; two queues per TUN, two engines):
#   iperf3 TCP, 1 and 4 streams, lan->wan and wan->lan (reverse); 4 streams from 4 inside hosts at once
#   (one iperf3 each: ftpnat --workers N keeps an inside host's flows on one worker, so only several
#   hosts can use several workers);
#   an FTP download of a sparse file (default 1 GiB) from vsftpd with curl, passive and active (PORT);
#   the rate of 64-byte UDP datagrams (examples/udpflood.rs, sendmmsg batches) that reach the wan host;
#   new TCP connections per second (examples/connrate.rs);
#   ftpnat's resident memory with 1 M tracked UDP flows (its own run, --max-flows raised).
# The three routers take turns, round after round (BENCH_ROUNDS, default 3), and each figure is the
# best of its rounds: load from elsewhere on the machine then hits all three alike. Prints a table
# with ftpnat/kernel and ftpnat/forward-only ratios. The machine's load is read first: a busy machine
# gets a warning, because only ratios from one quiet run mean much.
#
# Usage: sudo netns-scripts/bench.sh [--quick]   (--quick: 1 round, 2 s per test, 256 MiB, 200 k flows)
# Environment: BENCH_SECS (per throughput test, default 5), BENCH_ROUNDS (default 3), BENCH_FTP_MIB
#   (default 1024), BENCH_FLOWS (default 1000000), BENCH_OUT (also write the table to this file),
#   FTPNAT_BIN.
# Needs root; installs nothing itself except through deps.sh. All traffic stays inside the three
# namespaces it creates; every process it starts is bounded by `timeout` and stopped by pid on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
source "$here/bench-topo.sh"

[[ $EUID -eq 0 ]] || ftpnat_die "needs root (network namespaces, TUN devices, nftables)"
SECS="${BENCH_SECS:-5}"
FTP_MIB="${BENCH_FTP_MIB:-1024}"
FLOWS="${BENCH_FLOWS:-1000000}"
ROUNDS="${BENCH_ROUNDS:-3}"
WORKERS="${BENCH_WORKERS:-2}"
if [[ ${1:-} == --quick ]]; then SECS=2; FTP_MIB=256; FLOWS=200000; ROUNDS=1; fi
[[ $SECS =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ && $FTP_MIB =~ ^[0-9]+$ && $FLOWS =~ ^[0-9]+$ ]] ||
    ftpnat_die "BENCH_SECS, BENCH_ROUNDS, BENCH_FTP_MIB and BENCH_FLOWS are whole numbers"
((SECS >= 1 && SECS <= 60 && ROUNDS >= 1 && ROUNDS <= 10 && FLOWS <= 4000000)) ||
    ftpnat_die "out of range: 1 <= BENCH_SECS <= 60, 1 <= BENCH_ROUNDS <= 10, BENCH_FLOWS <= 4000000"

"$here/deps.sh" >/dev/null
ftpnat_find_cargo
echo "bench.sh: building ftpnat and the load generators (release)" >&2
(cd "$FTPNAT_REPO" && cargo build --release --quiet --bin ftpnat --example udpflood --example connrate)
UDPFLOOD="$FTPNAT_REPO/target/release/examples/udpflood"
CONNRATE="$FTPNAT_REPO/target/release/examples/connrate"

work="$(mktemp -d /tmp/ftpnat-bench.XXXXXX)"
FB_RUN_DIR="$work/run"
pids=()
cleanup() {
    local p
    fb_mode_ftpnat_off 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    fb_topo_down
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- machine load -------------------------------------------------------------------------------
cpus=$(nproc)
read -r l1 l5 l15 _ </proc/loadavg
load_note="ok"
if awk -v l="$l1" -v c="$cpus" 'BEGIN { exit !(l > 0.5 * c) }'; then
    load_note="BUSY: 1-min load $l1 on $cpus CPUs; figures will be noisy, ratios less so"
    echo "bench.sh: warning: machine is busy (load $l1 $l5 $l15 on $cpus CPUs)" >&2
fi

# --- servers in the wan namespace ----------------------------------------------------------------
fb_topo_up
mkdir -p "$work/ftp/root" "$work/ftp/empty" "$FB_RUN_DIR"
chmod 755 "$work/ftp" "$work/ftp/root"
truncate -s "${FTP_MIB}M" "$work/ftp/root/big.bin"   # sparse: read from memory, not disk
cat >"$work/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=$FB_WAN_HOST
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=$work/ftp/root
local_enable=NO
write_enable=NO
pasv_enable=YES
port_enable=YES
connect_from_port_20=NO
seccomp_sandbox=NO
secure_chroot_dir=$work/ftp/empty
xferlog_enable=NO
dirmessage_enable=NO
use_sendfile=YES
pasv_min_port=30000
pasv_max_port=30999
EOF
limit=$(((SECS * 40 + 200) * ROUNDS + 600))   # every server outlives the whole run, and no longer
ip netns exec "$FB_NS_WAN" timeout "$limit" vsftpd "$work/vsftpd.conf" </dev/null >/dev/null 2>&1 &
pids+=($!)
ip netns exec "$FB_NS_WAN" timeout "$limit" iperf3 -s -B "$FB_WAN_HOST" </dev/null >/dev/null 2>&1 &
pids+=($!)
# One more server per extra inside host (an iperf3 server runs one test at a time).
hosts=($FB_LAN_HOSTS)
for ((i = 0; i < ${#hosts[@]}; i++)); do
    ip netns exec "$FB_NS_WAN" timeout "$limit" iperf3 -s -B "$FB_WAN_HOST" -p $((5301 + i)) </dev/null >/dev/null 2>&1 &
    pids+=($!)
done
pids+=($!)
# One connection-rate server port per measurement: the server holds every connection's TIME_WAIT for
# 60 s, and a router that maps a new connection to a public port another one used there moments ago
# (another mode's NAT, a different inside port) has its SYN refused by TIME_WAIT's timestamp check
# and retried a second later. Each mode measured on a fresh port starts as the first one did.
for ((i = 0; i < 4 * ROUNDS; i++)); do
    ip netns exec "$FB_NS_WAN" timeout "$limit" "$CONNRATE" serve "$FB_WAN_HOST:$((9100 + i))" --secs "$limit" \
        </dev/null >/dev/null 2>&1 &
    pids+=($!)
done
CONN_PORT=9100
ftpnat_wait_for 10 ftpnat_listening "$FB_NS_WAN" tcp 21 || ftpnat_die "vsftpd did not start"
ftpnat_wait_for 10 ftpnat_listening "$FB_NS_WAN" tcp 5201 || ftpnat_die "iperf3 did not start"
ftpnat_wait_for 10 ftpnat_listening "$FB_NS_WAN" tcp 9100 || ftpnat_die "connrate did not start"

# --- one measurement each -----------------------------------------------------------------------
declare -A R   # R[mode,test] = best value over the rounds, or "fail" if none succeeded

keep() {  # keep MODE KEY VALUE: remember VALUE if it beats what the earlier rounds got
    local old=${R[$1,$2]:-fail}
    if [[ $3 != fail ]] && { [[ $old == fail ]] || awk -v a="$3" -v b="$old" 'BEGIN { exit !(a > b) }'; }; then
        R[$1,$2]=$3
    else
        R[$1,$2]=$old
    fi
}

iperf() {  # iperf MODE KEY STREAMS [-R]: Gbit/s received
    local out
    out=$(fb_lan timeout $((SECS + 20)) iperf3 -c "$FB_WAN_HOST" -t "$SECS" -P "$3" ${4:-} -J 2>/dev/null) || true
    keep "$1" "$2" "$(python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception: print("fail")' <<<"$out")"
}

iperf_hosts() {  # iperf_hosts MODE KEY [-R]: Gbit/s received, summed over one stream from each inside host
    local i sum clients=()
    for ((i = 0; i < ${#hosts[@]}; i++)); do
        fb_lan timeout $((SECS + 20)) iperf3 -c "$FB_WAN_HOST" -p $((5301 + i)) -B "${hosts[i]}" -t "$SECS" \
            ${3:-} -J >"$work/iperf-$i.json" 2>/dev/null &
        clients+=($!)
    done
    for i in "${clients[@]}"; do wait "$i" 2>/dev/null || true; done
    sum=$(python3 -c 'import json,sys
t = 0.0
try:
    for f in sys.argv[1:]:
        t += json.load(open(f))["end"]["sum_received"]["bits_per_second"]
    print("%.2f" % (t / 1e9))
except Exception: print("fail")' "$work"/iperf-*.json)
    rm -f "$work"/iperf-*.json
    keep "$1" "$2" "$sum"
}

ftp_get() {  # ftp_get MODE KEY [curl flags]: Gbit/s of a complete download
    local mode=$1 key=$2 out speed size; shift 2
    out=$(fb_lan timeout 300 curl -s -o /dev/null "$@" -w '%{speed_download} %{size_download}' \
        "ftp://$FB_WAN_HOST/big.bin" 2>/dev/null) || true
    read -r speed size <<<"${out:-0 0}"
    if [[ $size == $((FTP_MIB * 1024 * 1024)) ]]; then
        keep "$mode" "$key" "$(awk -v s="$speed" 'BEGIN { printf "%.2f", s * 8 / 1e9 }')"
    else
        keep "$mode" "$key" fail
    fi
}

udp_rate() {  # udp_rate MODE: Mpps of 64-byte datagrams received on the wan host
    local out
    ip netns exec "$FB_NS_WAN" timeout $((SECS + 15)) "$UDPFLOOD" recv "$FB_WAN_HOST:9000" --secs $((SECS + 10)) --idle 1 \
        >"$work/udp.out" 2>/dev/null &
    local rx=$!
    pids+=("$rx")
    ftpnat_wait_for 5 ftpnat_listening "$FB_NS_WAN" udp 9000 || true
    fb_lan timeout $((SECS + 10)) "$UDPFLOOD" send "$FB_WAN_HOST:9000" --size 64 --secs "$SECS" --batch 64 \
        >"$work/udp.tx" 2>/dev/null || true
    wait "$rx" 2>/dev/null || true
    out=$(cat "$work/udp.out" 2>/dev/null)
    keep "$1" udp "$(awk '/^received/ { printf "%.3f", $6 / 1e6; f = 1 } END { if (!f) print "fail" }' <<<"$out")"
    keep "$1" udp_tx "$(awk '/^sent/ { printf "%.3f", $6 / 1e6; f = 1 } END { if (!f) print "fail" }' "$work/udp.tx")"
}

conn_rate() {  # conn_rate MODE: new TCP connections per second (thousands)
    local out
    out=$(fb_lan timeout 30 "$CONNRATE" connect "$FB_WAN_HOST:$CONN_PORT" --secs 3 --count 40000 --threads 4 \
        2>/dev/null) || true
    CONN_PORT=$((CONN_PORT + 1))
    keep "$1" conn "$(awk '/^connections/ { printf "%.1f", $6 / 1e3; f = 1 } END { if (!f) print "fail" }' <<<"$out")"
}

run_suite() {  # run_suite MODE
    echo "bench.sh: round $round/$ROUNDS [$1] iperf3" >&2
    iperf "$1" tcp1_up 1
    iperf "$1" tcp4_up 4
    iperf "$1" tcp1_down 1 -R
    iperf "$1" tcp4_down 4 -R
    iperf_hosts "$1" tcp4h_up
    iperf_hosts "$1" tcp4h_down -R
    echo "bench.sh: [$1] FTP ${FTP_MIB} MiB passive, active" >&2
    ftp_get "$1" ftp_pasv
    ftp_get "$1" ftp_actv -P - --disable-eprt
    echo "bench.sh: [$1] 64-byte UDP, TCP connection rate" >&2
    udp_rate "$1"
    conn_rate "$1"
}

# Servers run under `ip netns exec` directly (it execs), so each $! above is the process to stop.

for ((round = 1; round <= ROUNDS; round++)); do
    # (a) the kernel
    fb_mode_kernel
    run_suite kernel
    fb_mode_kernel_off
    # (b) ftpnat
    fb_mode_ftpnat
    run_suite ftpnat
    fb_mode_ftpnat_off
    # (c) ftpnat --forward-only
    fb_mode_ftpnat --forward-only
    run_suite fwd
    fb_mode_ftpnat_off
    # (d) ftpnat --workers N
    fb_mode_ftpnat --workers "$WORKERS"
    if grep -q "running one worker" "$FB_RUN_DIR/ftpnat.log" 2>/dev/null; then
        echo "bench.sh: ftpnat --workers $WORKERS fell back to one worker: $(grep -m1 WARN "$FB_RUN_DIR/ftpnat.log")" >&2
    fi
    run_suite wN
    fb_mode_ftpnat_off
done

# RSS with many tracked flows: a fresh ftpnat whose table takes them all.
echo "bench.sh: [ftpnat] RSS with $FLOWS UDP flows" >&2
fb_mode_ftpnat --max-flows $((FLOWS + 100000)) --max-flows-per-host $((FLOWS + 100000))
# A longer TUN queue rides out the moments ftpnat is descheduled; only this test, where every
# datagram counts, gets it.
ip -n "$FB_NS_RTR" link set dev "$FB_TUN_LAN" txqueuelen 20000
sleep 0.5
rss0=$(fb_rss_kib "$FB_FTPNAT_PID")
# Three paced passes over the flows: a datagram lost to a full TUN queue in one pass still gets
# its flow created in a later one.
fb_lan timeout 200 "$UDPFLOOD" send "$FB_WAN_HOST:1" --size 64 --flows "$FLOWS" --count $((FLOWS * 3)) \
    --secs 180 --batch 64 --sport 20000 --pps "${BENCH_FLOW_PPS:-50000}" >"$work/flows.tx" 2>/dev/null || true
sleep 1
rss1=$(fb_rss_kib "$FB_FTPNAT_PID")
fb_mode_ftpnat_off
tracked=$(awk '$1 == "flows.active" { print $2 }' "$FB_RUN_DIR/ftpnat.out" 2>/dev/null)
tracked=${tracked:-0}
if ((tracked > 0)); then
    R[ftpnat,rss]=$(awk -v a="$rss0" -v b="$rss1" -v n="$tracked" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
    R[ftpnat,rss_mib]=$(awk -v b="$rss1" 'BEGIN { printf "%.0f", b / 1024 }')
else
    R[ftpnat,rss]=fail
    R[ftpnat,rss_mib]=fail
fi

# --- the table ----------------------------------------------------------------------------------
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'
}
row() {  # row LABEL KEY
    local k=${R[kernel,$2]:--} f=${R[ftpnat,$2]:--} w=${R[fwd,$2]:--} n=${R[wN,$2]:--}
    printf '| %-36s | %10s | %10s | %12s | %13s | %15s | %10s | %13s |\n' "$1" "$k" "$f" "$w" "$(ratio "$f" "$k")" \
        "$(ratio "$f" "$w")" "$n" "$(ratio "$n" "$k")"
}
table() {
    echo "ftpnat bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $cpus CPUs, kernel $(uname -r)"
    echo "load at start: $l1 $l5 $l15 ($load_note)"
    echo "best of $ROUNDS interleaved rounds; $SECS s per throughput test; FTP file $FTP_MIB MiB"
    echo
    printf '| %-36s | %10s | %10s | %12s | %13s | %15s | %10s | %13s |\n' test "kernel NAT" ftpnat forward-only \
        ftpnat/kernel ftpnat/fwd-only "ftpnat -w$WORKERS" "-w$WORKERS/kernel"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..38})" "$(printf -- '-%.0s' {1..12})" \
        "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..15})" \
        "$(printf -- '-%.0s' {1..17})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..15})"
    row "TCP 1 stream lan->wan (Gbit/s)" tcp1_up
    row "TCP 4 streams lan->wan (Gbit/s)" tcp4_up
    row "TCP 1 stream wan->lan (Gbit/s)" tcp1_down
    row "TCP 4 streams wan->lan (Gbit/s)" tcp4_down
    row "TCP 4 hosts x 1 stream lan->wan" tcp4h_up
    row "TCP 4 hosts x 1 stream wan->lan" tcp4h_down
    row "FTP passive download (Gbit/s)" ftp_pasv
    row "FTP active (PORT) download (Gbit/s)" ftp_actv
    row "UDP 64 B received (Mpps)" udp
    row "UDP 64 B offered by sender (Mpps)" udp_tx
    row "new TCP connections (k/s)" conn
    printf '| %-36s | %10s | %10s | %12s | %13s | %15s | %10s | %13s |\n' "ftpnat RSS per tracked flow (B)" \
        "n/a" "${R[ftpnat,rss]}" "n/a" "-" "-" "-" "-"
    printf '| %-36s | %10s | %10s | %12s | %13s | %15s | %10s | %13s |\n' "ftpnat RSS, $tracked flows (MiB)" \
        "n/a" "${R[ftpnat,rss_mib]}" "n/a" "-" "-" "-" "-"
}
table | tee "${BENCH_OUT:-/dev/null}"
