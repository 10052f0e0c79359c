#!/usr/bin/env bash
# netns-scripts/soak.sh: loop real FTP transfers through ftpnat in all four modes (EPSV, PASV, PORT, EPRT)
# for a given time, then report transfers done / failed, bytes moved, ftpnat's RSS (start, end, max) and
# its stop summary. Not a CI test: a long run that shows nothing leaks or wedges over thousands of
# control + data connections, pinholes and ALG rewrites. Needs root; always tears down.
#
#   sudo netns-scripts/soak.sh [DURATION_SECONDS]        (default 600)
#
# Environment: FTPNAT_SOAK_MAX (max transfers, default 100000), FTPNAT_SOAK_MIB (file size, default 4),
# FTPNAT_SKIP_BUILD=1 (use $FTPNAT_BIN as it is). The topology uses its own names (`*-soak-*`) so a
# demo or CI run with the default names can go on beside it; any env.sh name may still be overridden.
# Exit status: 0 when every transfer succeeded with equal sha256 and ftpnat exited 0 on SIGTERM.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

DURATION=${1:-600}
[[ "$DURATION" =~ ^[0-9]+$ ]] || { echo "usage: ${0##*/} [DURATION_SECONDS]" >&2; exit 2; }
MAX=${FTPNAT_SOAK_MAX:-100000}
MIB=${FTPNAT_SOAK_MIB:-4}

: "${FTPNAT_NS_LAN:=ftpnat-soak-lan}"
: "${FTPNAT_NS_WAN:=ftpnat-soak-wan}"
: "${FTPNAT_LAN_TUN:=ftpnat-soak-l}"
: "${FTPNAT_WAN_TUN:=ftpnat-soak-w}"
# No forwards: the soak is lan -> wan only (the wan vsftpd), so nothing to publish.
: "${FTPNAT_FORWARDS=}"
export FTPNAT_NS_LAN FTPNAT_NS_WAN FTPNAT_LAN_TUN FTPNAT_WAN_TUN FTPNAT_FORWARDS
source "$HERE/env.sh"

[[ $EUID -eq 0 ]] || ftpnat_die "needs root (try: sudo $0)"
for tool in ip ss curl sha256sum timeout awk vsftpd; do
    command -v "$tool" >/dev/null || ftpnat_die "missing $tool: run netns-scripts/deps.sh"
done

if [[ -z "${FTPNAT_SKIP_BUILD:-}" ]]; then
    echo "soak: building (cargo build --release)"
    if [[ -n "${SUDO_USER:-}" ]] && ! command -v cargo >/dev/null; then
        sudo -u "$SUDO_USER" -H bash -lc 'cd "$1" && cargo build --release --bin ftpnat' _ "$FTPNAT_REPO"
    else
        ftpnat_find_cargo
        (cd "$FTPNAT_REPO" && cargo build --release --bin ftpnat)
    fi
fi

WORK=$(mktemp -d /tmp/ftpnat-soak.XXXXXX)
VSFTPD_PID=
TORN_DOWN=
teardown() {
    [[ -z "$TORN_DOWN" ]] || return 0
    TORN_DOWN=1
    [[ -z "$VSFTPD_PID" ]] || kill "$VSFTPD_PID" 2>/dev/null || true
    "$HERE/down.sh" || true
    rm -rf "$WORK"
}
trap teardown EXIT
trap 'exit 130' INT TERM

lan() { ip netns exec "$FTPNAT_NS_LAN" "$@"; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

"$HERE/up.sh"
PID=$(ftpnat_pid) || ftpnat_die "ftpnat is not running after up.sh"

chmod 755 "$WORK" # vsftpd serves anonymous users from below it
ROOT="$WORK/ftp-wan/root"
mkdir -p "$ROOT/upload"
head -c $((MIB << 20)) /dev/urandom >"$WORK/blob.bin"
chmod 644 "$WORK/blob.bin" # anonymous users get only world-readable files
ln "$WORK/blob.bin" "$ROOT/blob.bin" 2>/dev/null || cp "$WORK/blob.bin" "$ROOT/blob.bin"
WANT=$(sha256sum <"$WORK/blob.bin" | cut -d' ' -f1)
ip netns exec "$FTPNAT_NS_WAN" bash "$HERE/ftp-vsftpd.sh" "$WORK/ftp-wan" "$FTPNAT_WAN_HOST" 21 30000 30999 \
    >"$WORK/vsftpd.out" 2>&1 </dev/null &
VSFTPD_PID=$!
ftpnat_wait_for 10 ftpnat_listening "$FTPNAT_NS_WAN" tcp 21 ||
    ftpnat_die "vsftpd did not start: $(cat "$WORK/vsftpd.out")"

MODES=(EPSV PASV PORT EPRT)
declare -A FLAGS=(
    [EPSV]="--ftp-pasv"
    [PASV]="--ftp-pasv --disable-epsv --no-ftp-skip-pasv-ip" # use the 227's address
    [PORT]="-P - --disable-eprt"
    [EPRT]="-P -"
)
declare -A OK_RETR OK_STOR FAILED
for m in "${MODES[@]}"; do OK_RETR[$m]=0 OK_STOR[$m]=0 FAILED[$m]=0; done
FAIL_LINES=()
BYTES=0
RSS_START=$(rss_kb "$PID")
RSS_MAX=$RSS_START
BASE="ftp://$FTPNAT_WAN_HOST:21"

# one MODE RETR|STOR N: one transfer; prints the bytes moved, or why it failed.
one() {
    local mode=$1 op=$2 n=$3 flags w got down up
    read -ra flags <<<"${FLAGS[$mode]}"
    local curl=(timeout 90 curl -sS --max-time 60 --connect-timeout 10 "${flags[@]}" -u anonymous:soak@
        -w '%{size_download} %{size_upload}')
    if [[ $op == RETR ]]; then
        w=$(lan "${curl[@]}" -o "$WORK/got.bin" "$BASE/blob.bin" 2>&1) || { echo "curl: $w"; return 1; }
        got=$(sha256sum <"$WORK/got.bin" | cut -d' ' -f1)
        rm -f "$WORK/got.bin"
    else
        w=$(lan "${curl[@]}" -T "$WORK/blob.bin" "$BASE/upload/soak-$n.bin" 2>&1) || { echo "curl: $w"; return 1; }
        got=$(sha256sum <"$ROOT/upload/soak-$n.bin" 2>/dev/null | cut -d' ' -f1)
        rm -f "$ROOT/upload/soak-$n.bin"
    fi
    [[ "$got" == "$WANT" ]] || { echo "sha256 mismatch (${got:0:16} != ${WANT:0:16}; curl: $w)"; return 1; }
    read -r down up <<<"$w"
    echo $((down + up))
}

echo "soak: ${DURATION} s (at most $MAX transfers) of RETR/STOR of $MIB MiB in ${MODES[*]}; ftpnat pid $PID"
START=$SECONDS
END=$((SECONDS + DURATION))
N=0 NEXT_TICK=$((SECONDS + 60)) DIED=
while ((SECONDS < END && N < MAX)); do
    mode=${MODES[N % 4]}
    op=RETR; (((N / 4) % 2)) && op=STOR
    if msg=$(one "$mode" "$op" "$N"); then
        BYTES=$((BYTES + msg))
        if [[ $op == RETR ]]; then OK_RETR[$mode]=$((OK_RETR[$mode] + 1)); else OK_STOR[$mode]=$((OK_STOR[$mode] + 1)); fi
    else
        FAILED[$mode]=$((FAILED[$mode] + 1))
        FAIL_LINES+=("#$N $mode $op at $((SECONDS - START)) s: $msg")
        echo "soak: FAIL ${FAIL_LINES[-1]}" >&2
    fi
    N=$((N + 1))
    if ! kill -0 "$PID" 2>/dev/null; then DIED=1; echo "soak: ftpnat died" >&2; break; fi
    r=$(rss_kb "$PID") && ((r > RSS_MAX)) && RSS_MAX=$r
    if ((SECONDS >= NEXT_TICK)); then
        echo "soak: $((SECONDS - START)) s, $N transfers, RSS ${r:-?} kB"
        NEXT_TICK=$((SECONDS + 60))
    fi
done
ELAPSED=$((SECONDS - START))
RSS_END=$(rss_kb "$PID" || echo gone)
LOG_WARN=$(grep -cE ' (WARN|ERROR) ' "$FTPNAT_STATE_DIR/ftpnat.log" || true)
REWRITES=$(grep -c 'ftpnat::alg: rewrite' "$FTPNAT_STATE_DIR/ftpnat.log" || true)

teardown # SIGTERM: ftpnat writes its stop summary to $FTPNAT_STATE_DIR/ftpnat.out
STATUS=$(cat "$FTPNAT_STATE_DIR/ftpnat.status" 2>/dev/null || echo '?')

TOTAL_FAILED=0
echo
echo "soak report"
printf '  %-18s %s s (requested %s), %s transfers of %s MiB\n' duration "$ELAPSED" "$DURATION" "$N" "$MIB"
for m in "${MODES[@]}"; do
    printf '  %-18s done %5d (RETR %d, STOR %d), failed %d\n' "$m" $((OK_RETR[$m] + OK_STOR[$m])) \
        "${OK_RETR[$m]}" "${OK_STOR[$m]}" "${FAILED[$m]}"
    TOTAL_FAILED=$((TOTAL_FAILED + FAILED[$m]))
done
printf '  %-18s %s bytes (%s GiB), sha256 checked on every transfer\n' "bytes moved" "$BYTES" \
    "$(awk -v b="$BYTES" 'BEGIN { printf "%.2f", b / 2^30 }')"
printf '  %-18s start %s kB, end %s kB, max %s kB\n' "ftpnat RSS" "$RSS_START" "$RSS_END" "$RSS_MAX"
printf '  %-18s %s ALG rewrites logged, %s WARN/ERROR log lines\n' "ftpnat log" "$REWRITES" "$LOG_WARN"
printf '  %-18s %s after SIGTERM\n' "ftpnat exit" "status $STATUS"
for l in "${FAIL_LINES[@]:0:10}"; do echo "  failure: $l"; done
echo "  ftpnat stop summary:"
sed 's/^/    /' "$FTPNAT_STATE_DIR/ftpnat.out" 2>/dev/null || echo "    (none)"
if ((TOTAL_FAILED)) || [[ -n "$DIED" || "$STATUS" != 0 ]]; then
    echo "soak: FAIL ($TOTAL_FAILED transfers failed${DIED:+, ftpnat died}, exit status $STATUS)"
    exit 1
fi
echo "soak: PASS"
