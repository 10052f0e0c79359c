#!/usr/bin/env bash
# netns-scripts/demo.sh: build ftpnat, bring up the lan/wan namespaces with ftpnat as the router
# between them, run real traffic through it, print a result table, and always tear down.
# Exit status: 0 when every row is OK, 1 otherwise; 130 (143) when interrupted by SIGINT/Ctrl-C (SIGTERM):
# it then stops at once, mid-row, and tears down. Needs root. FTPNAT_SKIP_BUILD=1 skips the build.
#
# Adding a row: write a check function that prints its figures (or why it failed) on its last line of
# output and returns 0 when the gateway behaved as it must, then call `row "what is checked" check_fn`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/env.sh"

[[ $EUID -eq 0 ]] || ftpnat_die "needs root (try: sudo $0)"
# The inside FTP server is reached from the wan through this forward (public port 2121 -> lan host :21;
# the ALG watches the inside port, 21, the default --ftp-port). Only the control port is forwarded:
# passive data connections get in through the pinholes the ALG opens for the rewritten 227/229.
FTP_FORWARD="tcp:2121=$FTPNAT_LAN_HOST:21"
[[ " $FTPNAT_FORWARDS " == *" $FTP_FORWARD "* ]] || FTPNAT_FORWARDS="$FTPNAT_FORWARDS $FTP_FORWARD"
export FTPNAT_FORWARDS
# NAT64 rows (README "NAT64"): the lan host also gets IPv6 in --inside6 and a route to the prefix
# (dual stack: the IPv4 rows are unchanged); the wan side stays IPv4-only.
: "${FTPNAT_NAT64_PREFIX:=64:ff9b:1::/96}"
export FTPNAT_NAT64_PREFIX
WAN_HOST6="${FTPNAT_NAT64_PREFIX%/*}$FTPNAT_WAN_HOST" # the wan host as DNS64 would answer (a /96 prefix)
for tool in ip ss curl python3 ping sha256sum timeout awk vsftpd; do
    command -v "$tool" >/dev/null || ftpnat_die "missing $tool: run netns-scripts/deps.sh"
done

if [[ -z "${FTPNAT_SKIP_BUILD:-}" ]]; then
    echo "demo: building (cargo build --release)"
    if [[ -n "${SUDO_USER:-}" ]] && ! command -v cargo >/dev/null; then
        # Build as the invoking user so target/ does not become root's.
        sudo -u "$SUDO_USER" -H bash -lc 'cd "$1" && cargo build --release --bin ftpnat' _ "$FTPNAT_REPO"
    else
        ftpnat_find_cargo
        (cd "$FTPNAT_REPO" && cargo build --release --bin ftpnat)
    fi
fi

WORK=$(mktemp -d /tmp/ftpnat-demo.XXXXXX)
BG_PIDS=()
ROW_NAMES=() ROW_RESULTS=() ROW_FIGURES=()
CHECK_PID= # the row being checked, run in the background so a signal is acted on at once
TORN_DOWN=
teardown() {
    [[ -z "$TORN_DOWN" ]] || return 0
    TORN_DOWN=1
    local p
    if [[ -n "$CHECK_PID" ]]; then
        # The check and what it started (`timeout` runs in a process group of its own, so a Ctrl-C at
        # the terminal never reaches it); whatever runs inside the namespaces goes with down.sh.
        pkill -TERM -P "$CHECK_PID" 2>/dev/null || true
        kill -TERM "$CHECK_PID" 2>/dev/null || true
    fi
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    "$HERE/down.sh" || true
    rm -rf "$WORK"
}
interrupted() {
    trap '' INT TERM # a second Ctrl-C must not cut the teardown short
    printf '\ndemo: interrupted by SIG%s after %d row(s); tearing down\n' "$1" "${#ROW_RESULTS[@]}" >&2
    exit "$2"
}
trap teardown EXIT
trap 'interrupted INT 130' INT
trap 'interrupted TERM 143' TERM

lan() { ip netns exec "$FTPNAT_NS_LAN" "$@"; }
wan() { ip netns exec "$FTPNAT_NS_WAN" "$@"; }
PEER="$HERE/peer.py"

# bg NS NAME CMD...: start a server in namespace NS, its output in $WORK/NAME.log; killed at teardown.
bg() {
    local ns=$1 name=$2; shift 2
    ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    BG_PIDS+=($!)
}

# ---- the table ------------------------------------------------------------------------------------
row() {
    local name=$1 out rc; shift
    # In the background and waited for: bash runs a trap only after a foreground command ends, but
    # interrupts `wait` at once. (A Ctrl-C also stops ftpnat, which shares the terminal's process group;
    # without this the script ran on, reporting every later row as FAIL.)
    # `set +e`: a check tests commands' statuses itself (as it did in the `$(...) && ... ||` this replaces).
    (set +e; "$@") >"$WORK/row.out" 2>&1 &
    CHECK_PID=$!
    wait "$CHECK_PID" && rc=0 || rc=$?
    # 130/143: `wait` was cut short by SIGINT/SIGTERM, or the check died of it (a Ctrl-C reaches the
    # whole process group). Act on it now: bash would run the trap only a few commands later, after
    # reporting this row as failed. (Checks themselves return 0 or 1.)
    case $rc in
        130) interrupted INT 130 ;;
        143) interrupted TERM 143 ;;
    esac
    CHECK_PID=
    out=$(cat "$WORK/row.out")
    local fig; fig=$(printf '%s\n' "$out" | awk 'NF { last = $0 } END { print last }')
    ROW_NAMES+=("$name"); ROW_FIGURES+=("$fig")
    if ((rc == 0)); then ROW_RESULTS+=(OK); else ROW_RESULTS+=(FAIL); fi
    printf '  %-4s %s: %s\n' "${ROW_RESULTS[-1]}" "$name" "$fig"
    if ((rc != 0)) && [[ -n "${FTPNAT_DEMO_VERBOSE:-}" ]]; then printf '%s\n' "$out" | sed 's/^/       | /'; fi
}
print_table() {
    local i w=5
    for i in "${!ROW_NAMES[@]}"; do ((${#ROW_NAMES[i]} > w)) && w=${#ROW_NAMES[i]}; done
    printf '\n %-3s %-*s  %-6s %s\n' '#' "$w" check result figures
    printf ' %s\n' "$(printf '%*s' $((w + 40)) '' | tr ' ' -)"
    for i in "${!ROW_NAMES[@]}"; do
        printf ' %-3s %-*s  %-6s %s\n' $((i + 1)) "$w" "${ROW_NAMES[i]}" "${ROW_RESULTS[i]}" "${ROW_FIGURES[i]}"
    done
}

# ---- checks ---------------------------------------------------------------------------------------
check_ping() {
    local out
    out=$(lan timeout 15 ping -n -c 5 -i 0.2 -W 2 "$FTPNAT_WAN_HOST") || { echo "$out"; echo "no replies"; return 1; }
    local rx avg
    rx=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
    avg=$(sed -n 's|^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*|\1|p' <<<"$out")
    echo "$rx/5 replies, rtt avg $avg ms"
    [[ "$rx" == 5 ]]
}

BLOB_BYTES=$((8 * 1024 * 1024))
check_http_transfer() {
    local w
    w=$(lan timeout 90 curl -sS --max-time 60 -o "$WORK/got.bin" \
        -w '%{size_download} %{speed_download} %{time_total}' "http://$FTPNAT_WAN_HOST:8000/blob.bin") ||
        { echo "curl failed"; return 1; }
    local size speed
    read -r size speed _ <<<"$w"
    local want got
    want=$(sha256sum <"$WORK/www/blob.bin" | cut -c1-16)
    got=$(sha256sum <"$WORK/got.bin" | cut -c1-16)
    local mbit; mbit=$(awk -v s="$speed" 'BEGIN { printf "%.1f", s * 8 / 1e6 }')
    if [[ "$want" != "$got" ]]; then echo "$size bytes, sha256 MISMATCH ($got != $want)"; return 1; fi
    echo "$size bytes, sha256 $got.. equal, $mbit Mbit/s"
    [[ "$size" == "$BLOB_BYTES" ]]
}

check_http_source() {
    # http.server logs "CLIENT-IP - - [date] "GET /blob.bin ..." 200 -" to stderr.
    local seen
    seen=$(awk '/GET \/blob.bin/ { ip = $1 } END { print ip }' "$WORK/http.log")
    echo "http.server saw client $seen (want $FTPNAT_PUBLIC_IP)"
    [[ "$seen" == "$FTPNAT_PUBLIC_IP" ]]
}

check_udp() {
    local out
    out=$(lan timeout 15 python3 "$PEER" udp-client "$FTPNAT_WAN_HOST" 5000 --timeout 2) ||
        { echo "no answer: $out"; return 1; }
    echo "answer \"$out\" (want $FTPNAT_PUBLIC_IP)"
    [[ "$out" == "peer $FTPNAT_PUBLIC_IP:"* ]]
}

check_unsolicited_public() {
    local out
    if out=$(wan timeout 15 python3 "$PEER" tcp-client "$FTPNAT_PUBLIC_IP" 8080 --timeout 3); then
        echo "CONNECTED to lan server through the public IP: \"$out\""; return 1
    fi
    echo "refused as it must be ($out)"
}

check_unsolicited_inside() {
    # An attacker on the wan link may route the inside prefix at the gateway; it must still drop.
    wan ip route replace "$FTPNAT_INSIDE" dev "$FTPNAT_WAN_TUN"
    local out rc=0
    out=$(wan timeout 15 python3 "$PEER" tcp-client "$FTPNAT_LAN_HOST" 8080 --timeout 3) && rc=1
    wan ip route del "$FTPNAT_INSIDE" dev "$FTPNAT_WAN_TUN" || true
    if ((rc)); then echo "CONNECTED to the inside address from wan: \"$out\""; return 1; fi
    echo "refused as it must be ($out)"
}

check_forward_tcp() {
    local out
    out=$(wan timeout 15 python3 "$PEER" tcp-client "$FTPNAT_PUBLIC_IP" 2080 --timeout 3) ||
        { echo "no connection: $out"; return 1; }
    echo "lan server answered \"$out\" (want the wan host $FTPNAT_WAN_HOST)"
    [[ "$out" == "peer $FTPNAT_WAN_HOST:"* ]]
}

check_forward_udp() {
    local out
    out=$(wan timeout 15 python3 "$PEER" udp-client "$FTPNAT_PUBLIC_IP" 2053 --timeout 2) ||
        { echo "no answer: $out"; return 1; }
    echo "lan server answered \"$out\" (want the wan host $FTPNAT_WAN_HOST)"
    [[ "$out" == "peer $FTPNAT_WAN_HOST:"* ]]
}

# ---- FTP: curl through the ALG against vsftpd (ftp-vsftpd.sh: it refuses a PORT/EPRT naming an address
# other than the control connection's peer, so active mode works only if the ALG rewrote it) -------------
FTP_BYTES=$((50 * 1024 * 1024))

ftp_curl_flags() {
    case $1 in
        PASV) echo "--ftp-pasv --disable-epsv --no-ftp-skip-pasv-ip" ;; # use the 227's (rewritten) address
        EPSV) echo "--ftp-pasv" ;;
        PORT) echo "-P - --disable-eprt" ;;
        EPRT) echo "-P -" ;;
    esac
}

# ftp_sums_equal ROOT UP: the RETR copy ($WORK/ftp-got.bin) and the STORed ROOT/UP are the blob (both
# removed after); prints the mismatch otherwise.
ftp_sums_equal() {
    local root=$1 up=$2 want_sum got_sum put_sum
    want_sum=$(sha256sum <"$WORK/ftp-blob.bin" | cut -c1-16)
    got_sum=$(sha256sum <"$WORK/ftp-got.bin" | cut -c1-16)
    put_sum=$(sha256sum <"$root/$up" | cut -c1-16)
    rm -f "$WORK/ftp-got.bin" "$root/$up"
    if [[ "$got_sum" != "$want_sum" || "$put_sum" != "$want_sum" ]]; then
        echo "sha256 MISMATCH (RETR $got_sum, STOR $put_sum, want $want_sum)"; return 1
    fi
}

# check_ftp MODE out|in: RETR and STOR of $FTP_BYTES in MODE; `out`: curl in lan, vsftpd in wan; `in`:
# curl in wan, vsftpd in lan behind the forward. Figures: bytes, rate, and the rewrites ftpnat logged.
check_ftp() {
    local mode=$1 where=$2 run base root want
    if [[ $where == out ]]; then
        run=lan base="ftp://$FTPNAT_WAN_HOST:21" root="$WORK/ftp-wan/root"
        case $mode in PORT) want=port ;; EPRT) want=eprt ;; *) want= ;; esac
    else
        run=wan base="ftp://$FTPNAT_PUBLIC_IP:2121" root="$WORK/ftp-lan/root"
        case $mode in PASV) want=227 ;; EPSV) want=229 ;; *) want= ;; esac
    fi
    local flags up="upload/up-$mode-$where.bin" mark t0 t1
    read -ra flags <<<"$(ftp_curl_flags "$mode")"
    mark=$(wc -l <"$FTPNAT_STATE_DIR/ftpnat.log")
    t0=$(date +%s.%N)
    $run timeout 150 curl -sS --max-time 120 --connect-timeout 10 "${flags[@]}" -u anonymous:demo@ \
        -o "$WORK/ftp-got.bin" "$base/blob.bin" || { echo "RETR failed"; return 1; }
    $run timeout 150 curl -sS --max-time 120 --connect-timeout 10 "${flags[@]}" -u anonymous:demo@ \
        -T "$WORK/ftp-blob.bin" "$base/$up" || { echo "STOR failed"; return 1; }
    t1=$(date +%s.%N)
    ftp_sums_equal "$root" "$up" || return 1
    # ftpnat logs each rewrite at info: `... ftpnat::alg: rewrite control=.. kind="port" old=.. new=.. delta=..`
    local rw n first
    rw=$(tail -n "+$((mark + 1))" "$FTPNAT_STATE_DIR/ftpnat.log" | grep 'ftpnat::alg: rewrite' |
        sed -n 's/.* kind="\{0,1\}\([^" ]*\)"\{0,1\} old=\([^ ]*\) new=\([^ ]*\) delta=\([^ ]*\).*/\1 \2 -> \3 (delta \4)/p')
    n=$(grep -c . <<<"$rw" || true)
    first=$(head -n 1 <<<"$rw")
    local rate
    rate=$(awk -v b=$((2 * FTP_BYTES)) -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", b * 8 / (e - s) / 1e6 }')
    local figs="RETR+STOR $((FTP_BYTES >> 20)) MiB each, sha256 equal, $rate Mbit/s"
    if [[ -z "$want" ]]; then
        echo "$figs; no rewrite needed (the announced address is already public): $n made"
        [[ "$n" == 0 ]]
    else
        echo "$figs; $n rewrites, e.g. $first"
        [[ "$n" == 2 && "$first" == "$want "* ]]
    fi
}

check_ping6() {
    local out rx
    out=$(lan timeout 15 ping -6 -n -c 5 -i 0.2 -W 2 "$WAN_HOST6") || { echo "$out"; echo "no replies"; return 1; }
    rx=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
    echo "$rx/5 replies from $WAN_HOST6 (IPv4 $FTPNAT_WAN_HOST)"
    [[ "$rx" == 5 ]]
}

# check_ftp64 EPSV|EPRT: the lan host over IPv6 to the IPv4-only vsftpd in wan, RETR and STOR of
# $FTP_BYTES; the server sees PASV/PORT (RFC 6384). Figures: bytes, rate, the NAT64 counters' lines.
check_ftp64() {
    local mode=$1 flags up="upload/up64-$1.bin" mark t0 t1
    case $mode in EPSV) flags=(--ftp-pasv) ;; EPRT) flags=(-P -) ;; esac
    mark=$(wc -l <"$FTPNAT_STATE_DIR/ftpnat.log")
    t0=$(date +%s.%N)
    lan timeout 150 curl -sS -g --max-time 120 --connect-timeout 10 "${flags[@]}" -u anonymous:demo@ \
        -o "$WORK/ftp-got.bin" "ftp://[$WAN_HOST6]/blob.bin" || { echo "RETR failed"; return 1; }
    lan timeout 150 curl -sS -g --max-time 120 --connect-timeout 10 "${flags[@]}" -u anonymous:demo@ \
        -T "$WORK/ftp-blob.bin" "ftp://[$WAN_HOST6]/$up" || { echo "STOR failed"; return 1; }
    t1=$(date +%s.%N)
    ftp_sums_equal "$WORK/ftp-wan/root" "$up" || return 1
    local n rate
    n=$(tail -n "+$((mark + 1))" "$FTPNAT_STATE_DIR/ftpnat.log" | grep -c 'ftpnat::alg: \(nat64 \)\{0,1\}rewrite' || true)
    rate=$(awk -v b=$((2 * FTP_BYTES)) -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", b * 8 / (e - s) / 1e6 }')
    echo "RETR+STOR $((FTP_BYTES >> 20)) MiB each, sha256 equal, $rate Mbit/s; $n ALG rewrites ($mode -> $([[ $mode == EPSV ]] && echo PASV || echo PORT))"
    ((n >= 2))
}

check_alive() {
    local pid
    pid=$(ftpnat_pid) || { echo "ftpnat is gone: $(tail -n 3 "$FTPNAT_STATE_DIR/ftpnat.log")"; return 1; }
    local errs; errs=$(grep -c 'write to device failed' "$FTPNAT_STATE_DIR/ftpnat.log" || true)
    echo "pid $pid running, $errs device write-error log lines"
    [[ "$errs" == 0 ]]
}

# ---- run ------------------------------------------------------------------------------------------
"$HERE/up.sh"

mkdir -p "$WORK/www"
head -c "$BLOB_BYTES" /dev/urandom >"$WORK/www/blob.bin"
bg "$FTPNAT_NS_WAN" http python3 -m http.server --bind "$FTPNAT_WAN_HOST" --directory "$WORK/www" 8000
bg "$FTPNAT_NS_WAN" udp5000 python3 "$PEER" udp-server 5000
bg "$FTPNAT_NS_LAN" tcp8080 python3 "$PEER" tcp-server 8080
bg "$FTPNAT_NS_LAN" udp5353 python3 "$PEER" udp-server 5353
ftpnat_wait_for 10 ftpnat_listening "$FTPNAT_NS_WAN" tcp 8000 || ftpnat_die "http.server did not start"
ftpnat_wait_for 10 ftpnat_listening "$FTPNAT_NS_WAN" udp 5000 || ftpnat_die "udp server did not start"
ftpnat_wait_for 10 ftpnat_listening "$FTPNAT_NS_LAN" tcp 8080 || ftpnat_die "tcp server did not start"
ftpnat_wait_for 10 ftpnat_listening "$FTPNAT_NS_LAN" udp 5353 || ftpnat_die "udp server did not start"

chmod 755 "$WORK" # vsftpd serves anonymous users from below it
head -c "$FTP_BYTES" /dev/urandom >"$WORK/ftp-blob.bin"
chmod 644 "$WORK/ftp-blob.bin" # vsftpd serves anonymous users only world-readable files
for side in wan lan; do
    mkdir -p "$WORK/ftp-$side/root/upload"
    ln "$WORK/ftp-blob.bin" "$WORK/ftp-$side/root/blob.bin" 2>/dev/null || cp "$WORK/ftp-blob.bin" "$WORK/ftp-$side/root/blob.bin"
done
bg "$FTPNAT_NS_WAN" vsftpd-wan bash "$HERE/ftp-vsftpd.sh" "$WORK/ftp-wan" "$FTPNAT_WAN_HOST" 21 30000 30099
bg "$FTPNAT_NS_LAN" vsftpd-lan bash "$HERE/ftp-vsftpd.sh" "$WORK/ftp-lan" "$FTPNAT_LAN_HOST" 21 30000 30099
ftpnat_wait_for 10 ftpnat_listening "$FTPNAT_NS_WAN" tcp 21 || ftpnat_die "vsftpd (wan) did not start: $(cat "$WORK/vsftpd-wan.log")"
ftpnat_wait_for 10 ftpnat_listening "$FTPNAT_NS_LAN" tcp 21 || ftpnat_die "vsftpd (lan) did not start: $(cat "$WORK/vsftpd-lan.log")"

echo "demo: running checks"
row "ping lan -> wan host" check_ping
row "TCP transfer lan -> wan (curl, 8 MiB)" check_http_transfer
row "wan server sees the public IP (TCP)" check_http_source
row "UDP exchange lan -> wan, seen as public IP" check_udp
row "unsolicited wan -> public IP:8080 dropped" check_unsolicited_public
row "wan -> inside address $FTPNAT_LAN_HOST:8080 dropped" check_unsolicited_inside
row "inbound --forward tcp:2080 -> lan:8080" check_forward_tcp
row "inbound --forward udp:2053 -> lan:5353" check_forward_udp
row "FTP PASV lan -> wan (curl -> vsftpd)" check_ftp PASV out
row "FTP EPSV lan -> wan (curl -> vsftpd)" check_ftp EPSV out
row "FTP PORT lan -> wan (curl -> vsftpd)" check_ftp PORT out
row "FTP EPRT lan -> wan (curl -> vsftpd)" check_ftp EPRT out
row "FTP PASV wan -> --forward tcp:2121 -> lan vsftpd" check_ftp PASV in
row "FTP EPSV wan -> --forward tcp:2121 -> lan vsftpd" check_ftp EPSV in
row "NAT64 ping IPv6 lan -> IPv4 wan host" check_ping6
row "NAT64 FTP EPSV IPv6 lan -> IPv4 vsftpd (curl)" check_ftp64 EPSV
row "NAT64 FTP EPRT IPv6 lan -> IPv4 vsftpd (curl)" check_ftp64 EPRT
row "ftpnat alive, no device errors" check_alive

teardown
echo
echo "ftpnat stop summary:"
sed 's/^/  /' "$FTPNAT_STATE_DIR/ftpnat.out" 2>/dev/null || echo "  (none)"
print_table
failed=0
for r in "${ROW_RESULTS[@]}"; do [[ $r == OK ]] || failed=$((failed + 1)); done
echo
if ((failed)); then echo "demo: $failed of ${#ROW_RESULTS[@]} rows FAILED"; exit 1; fi
echo "demo: all ${#ROW_RESULTS[@]} rows OK"
