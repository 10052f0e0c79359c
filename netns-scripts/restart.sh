#!/usr/bin/env bash
# netns-scripts/restart.sh: issue 15 item 1, "hitless restart", end to end. ftpnat is stopped with
# SIGTERM and started again with the same flags and `--state-file` while real FTP clients are in the
# middle of a 200 MiB transfer and between two transfers of one control connection; every file must
# arrive sha256-equal over the one control connection it started on, and the command after the
# restart on that control connection must work.
#
# The topology is single-host.sh's (routed mode): a gateway namespace with persistent TUN devices
# (`ip tuntap add`, `multi_queue` when FTPNAT_WORKERS > 1) that outlive the ftpnat process, policy
# routing handing the LAN's traffic to ftpnat, a LAN host namespace (the clients) and an upstream
# namespace (vsftpd, netns-scripts/ftp-vsftpd.sh, strict: no foreign PORT/PASV addresses).
#
#   SCENARIO=restart (default)  the sessions below, four restarts, a table, and a last line
#                               `restart: N/M transfers survived`; exit 1 unless M/M.
#   STATE=off                   the same without `--state-file` (the proof that the test can fail:
#                               it must report failures and exit 1).
#   SCENARIO=badfiles           corrupt, truncated, foreign-version, foreign-program, empty, unreadable
#                               (a directory) and mismatched (other --public-ip, other --inside) state
#                               files: each must give the warning `state file ignored` with its
#                               reason, PATH.rejected, an empty start that forwards FTP, and exit
#                               status 0 on SIGTERM. Last line `badfiles: N/M cases OK`.
#
# Sessions (SCENARIO=restart), all started together in the LAN host, each ONE control connection:
#   curl-mid-{PORT,EPRT,PASV,EPSV}  s1, big (200 MiB, --limit-rate), s2, LIST; restart 1 lands in big
#   curl-gap-{PORT,EPRT,PASV,EPSV}  s1, s2, LIST, `--rate 3/m` (20 s between transfer starts); restart 1
#                                   lands between s1 and s2, restart 2 between s2 and LIST
#   lftp-{PORT,PASV,EPSV}           get s1, get big (net:limit-rate; restart 1), wait for restart 3,
#                                   get s2, quote PWD, ls (lftp speaks EPRT only over IPv6)
#   ftplib-PORT                     (Python) s1; then PORT for s2 before restart 1 and RETR after
#                                   restart 3: the server's data connection needs the restored pinhole
#   raw-PORT-held                   (Python, a raw socket) half a PORT line, restart 4, the other half:
#                                   the ALG's held bytes must come back; then RETR s1 and PWD
# Restart 1 comes once every big transfer is under way (>= 16 MiB), restart 2 once the curl-gap
# sessions have s2 (before their LIST, 40 s in), restart 3 once the lftp sessions wait after big,
# restart 4 as soon as raw-PORT-held has sent half its line;
# each is checked to have landed where it should (the table's notes; curl's --trace-time for curl-gap).
# "Survived" means: the file arrived whole and sha256-equal, and the client used one control
# connection for the whole session (curl: one connect to port 21, every later URL "Re-using existing
# connection"; lftp: one "Connecting to ... port 21" in its debug log, no retries allowed) and never
# got a 4xx/5xx reply on it (curl would fall back from a mangled EPRT to PORT and carry on).
#
# Needs root; tears down on exit; every wait is bounded. Environment: FTPNAT_BIN, FTPNAT_WORKERS (1),
# RESTART_PREFIX (namespace names), RESTART_DIR (keep the work directory: logs, received files are
# removed), RESTART_RATE (per-transfer rate limit, 10M), SHOW_LOG=1 (print ftpnat's logs in any case).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/env.sh"
[[ $EUID -eq 0 ]] || ftpnat_die "needs root"
[[ -x "$FTPNAT_BIN" ]] || ftpnat_die "no ftpnat binary at $FTPNAT_BIN (cargo build --release)"
for tool in vsftpd curl lftp sha256sum ip; do
    command -v "$tool" >/dev/null || ftpnat_die "missing $tool: run netns-scripts/deps.sh"
done

SCENARIO="${SCENARIO:-restart}"
STATE="${STATE:-on}"
[[ $SCENARIO == restart || $SCENARIO == badfiles ]] || ftpnat_die "SCENARIO: restart or badfiles"
[[ $STATE == on || $STATE == off ]] || ftpnat_die "STATE: on or off"
P="${RESTART_PREFIX:-ftpnat-rs}"
GW="$P-gw" LANH="$P-lan" UP="$P-up"
UPLINK_GW=203.0.113.1 UPSTREAM=203.0.113.2
PUBLIC=198.51.100.1 PUBLIC_B=198.51.100.9
LAN_IP=10.0.0.254
WORKERS="${FTPNAT_WORKERS:-1}"
[[ -n "$WORKERS" ]] || WORKERS=1
RATE="${RESTART_RATE:-10M}"
BIG_BYTES=$((200 << 20))
SMALL_BYTES=$(((1 << 20) + 77))
WORK="${RESTART_DIR:-}"
KEEP=1
if [[ -z "$WORK" ]]; then WORK=$(mktemp -d /tmp/ftpnat-restart.XXXXXX); KEEP=; fi
mkdir -p "$WORK"
STATE_FILE="$WORK/ftpnat.state"
FPID= FLOG= RUN=0 VPID=
CLIENT_PIDS=()

log() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
    local p
    for p in "${CLIENT_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    [[ -z "$FPID" ]] || { kill -TERM "$FPID" 2>/dev/null || true; sleep 0.5; kill -KILL "$FPID" 2>/dev/null || true; }
    ftpnat_ns_gone "$GW" "$LANH" "$UP"
    # The received and served files are big; the logs are what is worth keeping.
    rm -rf "$WORK/srv/root" "$WORK/c"/*/*.bin 2>/dev/null || true
    [[ -n "$KEEP" ]] || rm -rf "$WORK"
}
ftpnat_ns_gone "$GW" "$LANH" "$UP"
trap cleanup EXIT
trap 'exit 143' TERM INT # so that a timeout(1) around the script still tears it down

# ---- topology (single-host.sh, routed) ------------------------------------------------------------
ftpnat_ns_fresh "$GW" "$LANH" "$UP"
ip netns exec "$GW" sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1
ip link add eth0 netns "$GW" type veth peer name eth0 netns "$LANH"
ip link add eth1 netns "$GW" type veth peer name eth0 netns "$UP"
ip -n "$LANH" addr add 10.0.0.2/24 dev eth0 && ip -n "$LANH" link set eth0 up
ip -n "$LANH" route add default via 10.0.0.1
# raw-PORT-held's own address, whose route has a 1.5 s minimum retransmission timeout: with Linux's
# 200 ms, its unacknowledged half line (the ALG holds it) is retransmitted during the restart and the
# socket, in loss recovery, sends the rest only once the first half is acknowledged, which is after the
# hold ran out (2 s): released unrewritten. That is the ALG's hold, restart or not; not what is tested.
ip -n "$LANH" addr add 10.0.0.3/24 dev eth0
ip -n "$LANH" rule add from 10.0.0.3 lookup 200
ip -n "$LANH" route add default via 10.0.0.1 dev eth0 table 200 rto_min 1500ms
ip -n "$UP" addr add "$UPSTREAM/24" dev eth0 && ip -n "$UP" link set eth0 up
g() { ip -n "$GW" "$@"; }
g addr add 10.0.0.1/24 dev eth0 && g link set eth0 up
g addr add "$UPLINK_GW/24" dev eth1 && g link set eth1 up
g route add default via "$UPSTREAM"
# Persistent devices: they stay when ftpnat stops, so the next ftpnat attaches to the same ones.
mq=()
((WORKERS <= 1)) || mq=(multi_queue)
g tuntap add dev ftpnat-lan mode tun "${mq[@]}" && g link set ftpnat-lan up
g tuntap add dev ftpnat-wan mode tun "${mq[@]}" && g link set ftpnat-wan up
ip netns exec "$GW" sysctl -qw net.ipv4.ip_forward=1
g rule add iif eth0 lookup 100
g route add default dev ftpnat-lan table 100
g route add "$PUBLIC/32" dev ftpnat-wan
g route add "$PUBLIC_B/32" dev ftpnat-wan
ip -n "$UP" route add "$PUBLIC/32" via "$UPLINK_GW"
ip -n "$UP" route add "$PUBLIC_B/32" via "$UPLINK_GW"

# ---- the FTP server and its files --------------------------------------------------------------
rm -rf "$WORK/c" "$WORK/go3" "$WORK/arm4" "$WORK/go4" "$WORK"/ftpnat-*
mkdir -p "$WORK/srv/root" "$WORK/c"
head -c "$BIG_BYTES" /dev/urandom >"$WORK/srv/root/big.bin"
for f in s1 s2; do head -c "$SMALL_BYTES" /dev/urandom >"$WORK/srv/root/$f.bin"; done
chmod 644 "$WORK/srv/root"/*.bin
declare -A SUM SIZE
for f in big s1 s2; do
    SUM[$f]=$(sha256sum "$WORK/srv/root/$f.bin" | cut -d' ' -f1)
    SIZE[$f]=$(stat -c %s "$WORK/srv/root/$f.bin")
done
ip netns exec "$UP" "$HERE/ftp-vsftpd.sh" "$WORK/srv" "$UPSTREAM" 21 30000 30999 >"$WORK/vsftpd.out" 2>&1 </dev/null &
VPID=$!
disown "$VPID"
ftpnat_wait_for 10 ftpnat_listening "$UP" tcp 21 || { cat "$WORK/vsftpd.out" >&2; ftpnat_die "vsftpd did not start"; }

# ---- ftpnat -------------------------------------------------------------------------------------
BASE=(run --lan-tun ftpnat-lan --wan-tun ftpnat-wan --lan-ip "$LAN_IP" --workers "$WORKERS")

fails=0
GWCHECKS=()
gwcheck() { # gwcheck OK|FAIL TEXT
    GWCHECKS+=("$(printf '  %-5s %s' "$1" "$2")")
    [[ $1 == OK ]] || fails=$((fails + 1))
}

# start_ftpnat [FLAGS...]: with `--inside $INSIDE` (10.0.0.0/24) and FLAGS; run N's log is
# $WORK/ftpnat-N.log (stderr), its stop summary $WORK/ftpnat-N.out.
start_ftpnat() {
    RUN=$((RUN + 1))
    FLOG="$WORK/ftpnat-$RUN.log"
    : >"$FLOG" # now, not when the background job gets to it (a kept RESTART_DIR has an old one)
    RUST_LOG="${RUST_LOG:-ftpnat=info}" ip netns exec "$GW" "$FTPNAT_BIN" "${BASE[@]}" --inside "${INSIDE:-10.0.0.0/24}" "$@" \
        >"$WORK/ftpnat-$RUN.out" 2>"$FLOG" </dev/null &
    FPID=$!
    echo "--inside ${INSIDE:-10.0.0.0/24} $*" >"$WORK/ftpnat-$RUN.flags"
    # The whole line (it may reach the file in more than one write): `version` is its last field.
    if ! ftpnat_wait_for 15 grep -q "ftpnat running.* version=" "$FLOG"; then
        cat "$FLOG" >&2
        ftpnat_die "ftpnat run $RUN did not start"
    fi
    # Never fewer workers than asked (a device that cannot be multi-queue means one, with a warning).
    grep -q "ftpnat running.* workers=$WORKERS " "$FLOG" \
        || gwcheck FAIL "run $RUN: not running $WORKERS workers: $(grep -m1 'ftpnat running' "$FLOG")"
}

# stop_ftpnat: SIGTERM, wait (bounded: 20 s, then SIGKILL); sets FSTATUS (137: had to be killed).
stop_ftpnat() {
    local i
    kill -TERM "$FPID" 2>/dev/null || log "ftpnat run $RUN had already ended"
    for ((i = 0; i < 200; i++)); do kill -0 "$FPID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$FPID" 2>/dev/null && { log "ftpnat run $RUN ignored SIGTERM for 20 s: SIGKILL"; kill -KILL "$FPID"; }
    FSTATUS=0
    wait "$FPID" || FSTATUS=$?
    FPID=
}

print_logs() {
    local f
    for f in "$WORK"/ftpnat-*.log; do
        [[ -e "$f" ]] || continue
        echo "---- $f (flags: $(cat "${f%.log}.flags" 2>/dev/null)) ----"
        cat "$f"
        echo "---- stop summary ----"
        cat "${f%.log}.out" 2>/dev/null || true
    done
}

# A log line's field value: `field=value` (tracing's text format; strings may be quoted).
field() { sed -n "s/.*[[:space:]]$1=\"\{0,1\}\([^\" ]*\).*/\1/p" <<<"$2" | head -n1; }

# ================================================================================================
if [[ $SCENARIO == badfiles ]]; then
    CASES=()
    okcases=0 ncases=0
    curl_small() { # curl_small OUT: one PASV download of s1 through the gateway, sha-checked
        ip netns exec "$LANH" timeout -k 2 30 curl -sS --connect-timeout 5 --max-time 25 \
            --disable-epsv --no-ftp-skip-pasv-ip -u anonymous:x -o "$1" "ftp://$UPSTREAM/s1.bin" 2>>"$WORK/bad-curl.log" \
            && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "${SUM[s1]}" ]]
    }
    # a good file first: a missing file is a plain empty start (info, no warning); SIGTERM saves.
    rm -rf "$STATE_FILE" "$STATE_FILE.rejected"
    start_ftpnat --public-ip "$PUBLIC" --state-file "$STATE_FILE"
    mkdir -p "$WORK/c/bad"
    okgood=OK
    curl_small "$WORK/c/bad/s1-good.bin" || okgood=FAIL
    grep -q "state file ignored" "$FLOG" && okgood=FAIL
    grep -q "INFO.*no state file" "$FLOG" || okgood=FAIL
    stop_ftpnat
    ((FSTATUS == 0)) || okgood=FAIL
    grep -q "state saved" "$FLOG" || okgood=FAIL
    [[ -s "$STATE_FILE" ]] || okgood=FAIL
    CASES+=("$(printf '  %-5s %-16s %s' "$okgood" "missing (first)" "run $RUN: $(grep -o 'no state file: an empty start' "$FLOG" | head -n1 || true), no warning, FTP forwarded, exit $FSTATUS, $(grep -o 'state saved.*' "$FLOG" | head -n1)")")
    ncases=$((ncases + 1)); [[ $okgood == OK ]] && okcases=$((okcases + 1))
    [[ -s "$STATE_FILE" ]] || { print_logs >&2; ftpnat_die "no state file saved on SIGTERM: nothing to spoil"; }
    cp "$STATE_FILE" "$WORK/good.state"
    GOOD="$WORK/good.state"
    gsize=$(stat -c %s "$GOOD")

    # craft NAME: writes the spoiled file to $STATE_FILE
    craft() {
        rm -rf "$STATE_FILE" "$STATE_FILE.rejected"
        case $1 in
            corrupt)
                cp "$GOOD" "$STATE_FILE"
                # 16 bytes in the middle, each inverted
                python3 - "$STATE_FILE" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
mid = len(b) // 2
for i in range(max(10, mid - 8), min(len(b), mid + 8)):
    b[i] ^= 0xFF
open(p, 'wb').write(bytes(b))
PY
                ;;
            truncated) head -c $((gsize / 2)) "$GOOD" >"$STATE_FILE" ;;
            version)
                { printf 'FTPNATSF\xff\xff'; tail -c +11 "$GOOD"; } >"$STATE_FILE" ;;
            foreign)
                # another program's file: not ours at all
                head -c 4096 "$FTPNAT_BIN" >"$STATE_FILE" ;;
            empty) : >"$STATE_FILE" ;;
            unreadable) mkdir "$STATE_FILE" ;; # root reads any file; a directory it cannot read as one
            mismatch-ip|mismatch-inside) cp "$GOOD" "$STATE_FILE" ;;
        esac
    }
    # case NAME WANT_REASONS FLAGS...
    badcase() {
        local name=$1 want=$2 ok=OK why=() reason line; shift 2
        craft "$name"
        start_ftpnat "$@" --state-file "$STATE_FILE"
        line=$(grep -m1 "state file ignored" "$FLOG" || true)
        reason=$(field reason "$line")
        [[ -n "$line" ]] || { ok=FAIL; why+=("no 'state file ignored' warning"); }
        [[ -z "$line" || $line == *WARN* ]] || { ok=FAIL; why+=("not a warning"); }
        [[ "|$want|" == *"|$reason|"* ]] || { ok=FAIL; why+=("reason '$reason', want $want"); }
        grep -q "state loaded" "$FLOG" && { ok=FAIL; why+=("it was loaded"); }
        # Every rejected file is moved aside, the unreadable directory too (else the next save fails).
        [[ -e "$STATE_FILE.rejected" ]] || { ok=FAIL; why+=("no PATH.rejected"); }
        [[ ! -e "$STATE_FILE" ]] || { ok=FAIL; why+=("PATH still there"); }
        [[ -z "$line" || $line == *"kept as $STATE_FILE.rejected"* ]] || { ok=FAIL; why+=("the warning does not say where the file went"); }
        curl_small "$WORK/c/bad/s1-$name.bin" || { ok=FAIL; why+=("FTP through the empty gateway failed"); }
        stop_ftpnat
        ((FSTATUS == 0)) || { ok=FAIL; why+=("exit $FSTATUS"); }
        ncases=$((ncases + 1)); [[ $ok == OK ]] && okcases=$((okcases + 1))
        CASES+=("$(printf '  %-5s %-16s run %d: reason=%s, rejected file %s, FTP after empty start %s, exit %s%s' \
            "$ok" "$name" "$RUN" "${reason:-none}" "$([[ -e $STATE_FILE.rejected ]] && echo kept || echo missing)" \
            "$([[ -s $WORK/c/bad/s1-$name.bin ]] && echo ok || echo FAILED)" "$FSTATUS" \
            "${why[*]:+ -- ${why[*]}}")")
    }
    badcase corrupt corrupt --public-ip "$PUBLIC"
    badcase truncated truncated --public-ip "$PUBLIC"
    badcase version version --public-ip "$PUBLIC"
    badcase foreign foreign --public-ip "$PUBLIC"
    badcase empty truncated --public-ip "$PUBLIC"
    badcase unreadable unreadable --public-ip "$PUBLIC"
    badcase mismatch-ip mismatch --public-ip "$PUBLIC_B"
    INSIDE=10.0.0.0/16 badcase mismatch-inside mismatch --public-ip "$PUBLIC"
    echo "bad state files (ftpnat --state-file, workers $WORKERS):"
    printf '%s\n' "${CASES[@]}"
    if ((okcases != ncases)) || [[ -n "${SHOW_LOG:-}" ]]; then print_logs; fi
    echo "badfiles: $okcases/$ncases cases OK"
    ((okcases == ncases))
    exit
fi

# ================================================================================================
# SCENARIO=restart
SF=()
[[ $STATE == off ]] || SF=(--state-file "$STATE_FILE")
rm -rf "$STATE_FILE" "$STATE_FILE.rejected"
start_ftpnat --public-ip "$PUBLIC" "${SF[@]}"

URL="ftp://$UPSTREAM"
CURL=(curl -sS -v --trace-time --connect-timeout 10 --speed-limit 1 --speed-time 10 --max-time 150 -u anonymous:x)
mode_curl() {
    case $1 in
        PORT) echo "-P - --disable-eprt" ;;
        EPRT) echo "-P -" ;;
        PASV) echo "--ftp-pasv --disable-epsv --no-ftp-skip-pasv-ip" ;;
        EPSV) echo "--ftp-pasv" ;;
    esac
}
declare -A KIND MODE FILES CLIENT PID
SESSIONS=()
now0=$SECONDS
launch() { # launch NAME: in the LAN host, in the background, bounded by timeout(1)
    local s=$1 d="$WORK/c/$1"; shift
    mkdir -p "$d"
    ip netns exec "$LANH" timeout -k 5 170 "$@" >"$d/stdout" 2>"$d/stderr" </dev/null &
    PID[$s]=$!
    CLIENT_PIDS+=("$!")
    SESSIONS+=("$s")
}
for m in PORT EPRT PASV EPSV; do
    s=curl-mid-$m d="$WORK/c/$s"
    KIND[$s]=mid MODE[$s]=$m CLIENT[$s]=curl FILES[$s]="s1 big s2"
    # shellcheck disable=SC2046
    launch "$s" "${CURL[@]}" $(mode_curl "$m") --limit-rate "$RATE" \
        -o "$d/s1.bin" "$URL/s1.bin" -o "$d/big.bin" "$URL/big.bin" -o "$d/s2.bin" "$URL/s2.bin" -o "$d/list.txt" "$URL/"
done
for m in PORT EPRT PASV EPSV; do
    s=curl-gap-$m d="$WORK/c/$s"
    KIND[$s]=gap MODE[$s]=$m CLIENT[$s]=curl FILES[$s]="s1 s2"
    # shellcheck disable=SC2046
    launch "$s" "${CURL[@]}" $(mode_curl "$m") --rate 3/m \
        -o "$d/s1.bin" "$URL/s1.bin" -o "$d/s2.bin" "$URL/s2.bin" -o "$d/list.txt" "$URL/"
done
for m in PORT PASV EPSV; do
    s=lftp-$m d="$WORK/c/$s"
    KIND[$s]=lftp MODE[$s]=$m CLIENT[$s]=lftp FILES[$s]="s1 big s2"
    case $m in PORT) pasv=off epsv=no ;; PASV) pasv=on epsv=no ;; EPSV) pasv=on epsv=yes ;; esac
    mkdir -p "$d"
    cat >"$d/script.lftp" <<LFTP
debug -o $d/debug.log -t 9
set cmd:fail-exit yes
set ftp:ssl-allow no
set ftp:fix-pasv-address no
set ftp:prefer-epsv $epsv
set ftp:passive-mode $pasv
set net:max-retries 1
set net:persist-retries 0
set net:timeout 10
set xfer:clobber on
set cache:enable no
set net:limit-rate $RATE
open -u anonymous,x $UPSTREAM
get s1.bin -o $d/s1.bin
get big.bin -o $d/big.bin
!touch $d/ready; i=0; while [ ! -e $WORK/go3 ] && [ \$i -lt 1200 ]; do sleep 0.1; i=\$((i+1)); done
get s2.bin -o $d/s2.bin
quote PWD
ls
LFTP
    launch "$s" lftp -f "$d/script.lftp"
done

# ftplib-PORT: a PORT whose pinhole outlives both restarts. s1 in active mode; then PORT for s2 (the
# gateway now holds a pinhole for the server's data connection), `ready`; after restart 3 (`go3`) RETR:
# vsftpd connects to the public address, which only the restored pinhole maps to the client; then PWD.
cat >"$WORK/pinhole.py" <<'PY'
import ftplib, os, sys, time
host, d, go = sys.argv[1:4]
ftp = ftplib.FTP()
ftp.connect(host, 21, timeout=30)
ftp.login("anonymous", "x")
ftp.set_pasv(False)
with open(os.path.join(d, "s1.bin"), "wb") as f:
    ftp.retrbinary("RETR s1.bin", f.write)
ftp.voidcmd("TYPE I")
sock = ftp.makeport()  # sends PORT, reads 200: the pinhole is open from here on
print("PORT sent:", sock.getsockname(), flush=True)
open(os.path.join(d, "ready"), "w").close()
for _ in range(1200):
    if os.path.exists(go):
        break
    time.sleep(0.1)
sock.settimeout(30)
print(ftp.sendcmd("RETR s2.bin"), flush=True)
conn, peer = sock.accept()
print("data connection from", peer, flush=True)
with open(os.path.join(d, "s2.bin"), "wb") as f:
    while True:
        b = conn.recv(65536)
        if not b:
            break
        f.write(b)
conn.close()
print(ftp.voidresp(), flush=True)
print(ftp.sendcmd("PWD"), flush=True)
ftp.quit()
PY
s=ftplib-PORT
KIND[$s]=pin MODE[$s]=PORT CLIENT[$s]=ftplib FILES[$s]="s1 s2"
launch "$s" python3 "$WORK/pinhole.py" "$UPSTREAM" "$WORK/c/$s" "$WORK/go3"

# raw-PORT-held: half a PORT line held by the ALG across a restart. A raw control connection logs in,
# waits for `arm` (after restart 3), sends the first half of its PORT line (TCP_NODELAY) and says
# `ready`; restart 4 follows at once (the ALG holds an unfinished line for 2 s of engine time, and the
# engine's clock does not run while ftpnat is down); after `go4` the rest of the line. The PORT must
# reach vsftpd rewritten (it refuses a foreign address), then RETR s1 through its pinhole, then PWD.
cat >"$WORK/held.py" <<'PY'
import os, socket, sys, time
host, d, arm, go = sys.argv[1:5]
def wait(path):
    for _ in range(7500):  # 150 s
        if os.path.exists(path):
            return
        time.sleep(0.02)
    raise SystemExit("no " + path)
c = socket.create_connection((host, 21), timeout=30, source_address=("10.0.0.3", 0))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = c.makefile("rb")
def reply(want):
    line = f.readline().decode().rstrip("\r\n")
    while len(line) < 4 or line[3] == "-" or not line[:3].isdigit():
        line = f.readline().decode().rstrip("\r\n")
    print(line, flush=True)
    if not line.startswith(want):
        raise SystemExit("wanted %s, got %r" % (want, line))
def cmd(text, want):
    c.sendall((text + "\r\n").encode())
    reply(want)
reply("220")
cmd("USER anonymous", "331")
cmd("PASS x", "230")
cmd("TYPE I", "200")
ls = socket.socket()
ls.bind((c.getsockname()[0], 0))
ls.listen(1)
ls.settimeout(30)
p = ls.getsockname()[1]
line = "PORT %s,%d,%d\r\n" % (c.getsockname()[0].replace(".", ","), p >> 8, p & 255)
half = len(line) // 2
wait(arm)
c.sendall(line[:half].encode())
print("PORT half sent:", repr(line[:half]), flush=True)
open(os.path.join(d, "ready"), "w").close()
wait(go)
c.sendall(line[half:].encode())
print("PORT rest sent:", repr(line[half:]), flush=True)
reply("200")
c.sendall(b"RETR s1.bin\r\n")
reply("150")
conn, peer = ls.accept()
with open(os.path.join(d, "s1.bin"), "wb") as out:
    while True:
        b = conn.recv(65536)
        if not b:
            break
        out.write(b)
conn.close()
reply("226")
cmd("PWD", "257")
cmd("QUIT", "221")
PY
s=raw-PORT-held
KIND[$s]=held MODE[$s]=PORT CLIENT[$s]=raw FILES[$s]="s1"
launch "$s" python3 "$WORK/held.py" "$UPSTREAM" "$WORK/c/$s" "$WORK/arm4" "$WORK/go4"

size() { stat -c %s "$1" 2>/dev/null || echo 0; }
alive() { kill -0 "${PID[$1]}" 2>/dev/null; }
mib() { echo "$(($1 >> 20)) MiB"; }
declare -A NOTE

# restart N: stop (SIGTERM), check the save, start with the same flags, check the load.
restart() {
    local n=$1 t0 line
    # NO_RESTART=1 (debugging the test itself): the same schedule with ftpnat left running.
    if [[ -n "${NO_RESTART:-}" ]]; then
        R_UP[$n]=$(date +%H:%M:%S.%6N | tod)
        log "restart $n skipped (NO_RESTART)"
        return
    fi
    t0=$(date +%s%N)
    stop_ftpnat
    local prev=$FLOG prevrun=$RUN
    ((FSTATUS == 0)) && gwcheck OK "restart $n: run $prevrun exited 0 on SIGTERM" \
        || gwcheck FAIL "restart $n: run $prevrun exit status $FSTATUS on SIGTERM"
    if [[ $STATE == on ]]; then
        line=$(grep -m1 "state saved" "$prev" || true)
        if [[ -n "$line" && -s "$STATE_FILE" && "$(field flows "$line")" =~ ^[1-9] ]]; then
            gwcheck OK "restart $n: state saved: flows=$(field flows "$line") bytes=$(field bytes "$line")"
        else gwcheck FAIL "restart $n: no 'state saved' with flows > 0 (${line:-no line}; file $(size "$STATE_FILE") bytes)"; fi
    fi
    start_ftpnat --public-ip "$PUBLIC" "${SF[@]}"
    R_UP[$n]=$(date +%H:%M:%S.%6N | tod)
    local ms=$((($(date +%s%N) - t0) / 1000000))
    RESTART_GAP[$n]=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
    if [[ $STATE == on ]]; then
        line=$(grep -m1 "state loaded" "$FLOG" || true)
        if [[ -n "$line" && ! -e "$STATE_FILE" && "$(field flows "$line")" =~ ^[1-9] ]]; then
            gwcheck OK "restart $n: state loaded: flows=$(field flows "$line") pinholes=$(field pinholes "$line") age_secs=$(field age_secs "$line")"
        else gwcheck FAIL "restart $n: no 'state loaded' with flows > 0, file deleted (${line:-no line})"; fi
        # ftplib-PORT holds a pinhole (PORT sent, RETR not yet) across restarts 1 to 3.
        local ph
        ph=$(field pinholes "$line")
        if ((n > 3)); then :
        elif [[ "$ph" =~ ^[1-9] ]]; then gwcheck OK "restart $n: pinholes restored: $ph"
        else gwcheck FAIL "restart $n: no pinhole restored (pinholes=${ph:-?}), ftplib-PORT has one open"; fi
        if grep -q "state file ignored" "$FLOG"; then
            gwcheck FAIL "restart $n: $(grep -m1 'state file ignored' "$FLOG")"
        fi
    fi
    log "restart $n: ftpnat down and up again in ${RESTART_GAP[$n]} s"
}
declare -A RESTART_GAP R_UP PRE
# tod: HH:MM:SS.ffffff (curl's --trace-time) on stdin -> microseconds since midnight
tod() { awk -F'[:.]' 'NF >= 4 { printf "%.0f\n", ($1 * 3600 + $2 * 60 + $3) * 1000000 + substr($4 "000000", 1, 6) }'; }

# ---- restart 1: every big transfer under way, every curl-gap session between s1 and s2 ----------
mid_ready() {
    local s d
    for s in "${SESSIONS[@]}"; do
        d="$WORK/c/$s"
        case ${KIND[$s]} in
            mid | lftp) alive "$s" || continue; (($(size "$d/big.bin") >= 16 << 20)) || return 1 ;;
            gap) alive "$s" || continue; (($(size "$d/s1.bin") == SIZE[s1])) || return 1 ;;
            pin) alive "$s" || continue; [[ -e "$d/ready" ]] || return 1 ;;
        esac
    done
}
ftpnat_wait_for 60 mid_ready || log "restart 1: not every session got where it should within 60 s"
r1=$((SECONDS - now0))
for s in "${SESSIONS[@]}"; do
    d="$WORK/c/$s"
    case ${KIND[$s]} in
        mid | lftp)
            b=$(size "$d/big.bin")
            if alive "$s" && ((b > 0 && b < BIG_BYTES)); then NOTE[$s]="restart 1 at $(mib "$b") of big"
            else NOTE[$s]="restart 1 NOT during big ($(mib "$b"), client $(alive "$s" && echo running || echo ended))"; fi ;;
        gap) if alive "$s" && (($(size "$d/s1.bin") == SIZE[s1])); then PRE[$s]=1; else PRE[$s]=0; fi ;;
        pin) if alive "$s" && [[ -e "$d/ready" && ! -e "$d/s2.bin" ]]; then NOTE[$s]="PORT sent before restart 1"
             else NOTE[$s]="PORT NOT sent before restart 1"; fi ;;
    esac
done
restart 1
for s in "${SESSIONS[@]}"; do # still where they were once ftpnat is back?
    d="$WORK/c/$s"
    case ${KIND[$s]} in
        mid | lftp) if (($(size "$d/big.bin") >= BIG_BYTES)); then NOTE[$s]="${NOTE[$s]/restart 1 at/restart 1 NOT during big, at}"; fi ;;
    esac
done

# ---- restart 2: curl-gap sessions between s2 and LIST --------------------------------------------
gap_ready() {
    local s
    for s in "${SESSIONS[@]}"; do
        [[ ${KIND[$s]} == gap ]] || continue
        alive "$s" || continue
        (($(size "$WORK/c/$s/s2.bin") == SIZE[s2])) || return 1
    done
}
# curl-gap sessions start LIST 40 s after they began (--rate 3/m): restart 2 comes before that, ready or not.
r2wait=$((36 - (SECONDS - now0)))
((r2wait > 1)) || r2wait=1
ftpnat_wait_for "$r2wait" gap_ready || log "restart 2: not every curl-gap session got its s2 in time"
r2=$((SECONDS - now0))
for s in "${SESSIONS[@]}"; do
    [[ ${KIND[$s]} == gap ]] || continue
    if alive "$s" && (($(size "$WORK/c/$s/s2.bin") == SIZE[s2])); then PRE[$s]+=1; else PRE[$s]+=0; fi
done
restart 2

# ---- restart 3: lftp sessions waiting after big, ftplib's pinhole still unused ------------------
lftp_ready() {
    local s
    for s in "${SESSIONS[@]}"; do
        [[ ${KIND[$s]} == lftp ]] || continue
        alive "$s" || continue
        [[ -e "$WORK/c/$s/ready" ]] || return 1
    done
}
ftpnat_wait_for 120 lftp_ready || log "restart 3: not every lftp session finished big within 120 s"
r3=$((SECONDS - now0))
for s in "${SESSIONS[@]}"; do
    d="$WORK/c/$s"
    case ${KIND[$s]} in
        lftp) if alive "$s" && [[ -e "$d/ready" ]]; then NOTE[$s]+=", restart 3 between big and s2"
              else NOTE[$s]+=", restart 3 NOT between big and s2"; fi ;;
        pin) if alive "$s" && [[ ! -e "$d/s2.bin" ]]; then NOTE[$s]+=", RETR after restart 3"
             else NOTE[$s]+=", RETR NOT after restart 3"; fi ;;
    esac
done
restart 3
touch "$WORK/go3"

# ---- restart 4: half a PORT line held by the ALG (raw-PORT-held) ---------------------------------
touch "$WORK/arm4"
s=raw-PORT-held
held_ready() { [[ -e "$WORK/c/raw-PORT-held/ready" ]] || ! alive raw-PORT-held; }
ftpnat_wait_for 30 held_ready || true
if [[ -e "$WORK/c/$s/ready" ]] && alive "$s"; then
    NOTE[$s]="restart 4 with half its PORT line held"
else
    NOTE[$s]="restart 4 NOT with half its PORT line held"
fi
r4=$((SECONDS - now0))
restart 4
touch "$WORK/go4"

# ---- every client ends (each is bounded by timeout(1) as well) ----------------------------------
declare -A RC
for s in "${SESSIONS[@]}"; do
    RC[$s]=0
    wait "${PID[$s]}" || RC[$s]=$?
done
CLIENT_PIDS=()
tend=$((SECONDS - now0))
# curl-gap: "between" means the previous file was whole before ftpnat stopped (PRE) and the next
# transfer began (curl's "Re-using existing connection", --trace-time) after ftpnat was back.
for s in "${SESSIONS[@]}"; do
    [[ ${KIND[$s]} == gap ]] || continue
    for k in 1 2; do
        prev=s$k next=$([[ $k == 1 ]] && echo s2 || echo LIST)
        t=$(grep "Re-using existing connection" "$WORK/c/$s/stderr" | sed -n "${k}p" | cut -d' ' -f1 | tod)
        if [[ ${PRE[$s]:$((k - 1)):1} == 1 && -n "$t" && -n "${R_UP[$k]:-}" ]] && ((t > R_UP[$k])); then
            NOTE[$s]+="${NOTE[$s]:+, }restart $k between $prev and $next"
        else
            NOTE[$s]+="${NOTE[$s]:+, }restart $k NOT between $prev and $next"
        fi
    done
done
stop_ftpnat
((FSTATUS == 0)) && gwcheck OK "final stop: run $RUN exited 0 on SIGTERM" || gwcheck FAIL "final stop: run $RUN exit status $FSTATUS"
# A hold that ran out releases the line unrewritten: it must not have happened (restart 4 is quick).
if grep -q "hold_timeout" "$WORK"/ftpnat-*.out; then
    gwcheck FAIL "an ALG hold ran out: $(grep -h hold_timeout "$WORK"/ftpnat-*.out | tr -s ' ' | head -n1)"
fi

# ---- the table ----------------------------------------------------------------------------------
survived=0 total=0
ROWS=()
for s in "${SESSIONS[@]}"; do
    d="$WORK/c/$s" m=${MODE[$s]} sessok=OK
    if [[ ${CLIENT[$s]} == curl ]]; then
        conns=$(grep -c "Trying $UPSTREAM:21\.\.\." "$d/stderr" || true)
        reuse=$(grep -c "Re-using existing connection" "$d/stderr" || true)
        want_reuse=$(($(wc -w <<<"${FILES[$s]}") ))   # every URL after the first (the files + LIST - 1)
        [[ $conns == 1 && $reuse == "$want_reuse" ]] || sessok=FAIL
        ctl="$conns connect, $reuse/$want_reuse re-used"
        nextok=FAIL; grep -q "s1.bin" "$d/list.txt" 2>/dev/null && nextok=OK
        modeok=FAIL; grep -q "> $m" "$d/stderr" && modeok=OK
    elif [[ ${CLIENT[$s]} == raw ]]; then
        ctl="1 connect (one socket)"
        nextok=FAIL; grep -q '^257 ' "$d/stdout" && nextok=OK
        modeok=FAIL; grep -q "^PORT rest sent" "$d/stdout" && grep -q '^200 PORT' "$d/stdout" && modeok=OK
    elif [[ ${CLIENT[$s]} == ftplib ]]; then
        ctl="1 connect (ftplib never reconnects)"
        nextok=FAIL; grep -q '^257 ' "$d/stdout" && nextok=OK
        modeok=FAIL; grep -q "^PORT sent" "$d/stdout" && modeok=OK
    else
        conns=$(grep -c -- "---- Connecting to $UPSTREAM .*port 21" "$d/debug.log" 2>/dev/null || true)
        [[ $conns == 1 ]] || sessok=FAIL
        ctl="$conns connect"
        nextok=FAIL; grep -q '^257 ' "$d/stdout" && grep -q "s1.bin" "$d/stdout" && nextok=OK
        modeok=FAIL; grep -q -- "---> $m" "$d/debug.log" 2>/dev/null && modeok=OK
    fi
    # No 4xx/5xx reply on the control connection: a mangled command answered "500 Unknown command" and
    # retried another way (curl falls back from EPRT to PORT) is not a session that survived.
    bad=$(cat "$d/stderr" "$d/debug.log" "$d/stdout" 2>/dev/null | grep -E -m1 '^[0-9:.]+ < [45][0-9][0-9] |<--- [45][0-9][0-9] |^[45][0-9][0-9] ' || true)
    [[ -z "$bad" ]] || { sessok=FAIL; ctl+="; error reply: ${bad#* }"; }
    [[ ${NOTE[$s]} != *NOT* ]] || sessok=FAIL
    [[ $modeok == OK ]] || sessok=FAIL
    for f in ${FILES[$s]}; do
        total=$((total + 1))
        got=$(size "$d/$f.bin")
        sum=$(sha256sum "$d/$f.bin" 2>/dev/null | cut -d' ' -f1 || true)
        ok=FAIL
        [[ "$sum" == "${SUM[$f]}" && $sessok == OK ]] && { ok=OK; survived=$((survived + 1)); }
        ROWS+=("$(printf '%-14s %-4s %-4s %10d/%-10d %-6s %-4s' "$s" "$m" "$f" "$got" "${SIZE[$f]}" \
            "$([[ "$sum" == "${SUM[$f]}" ]] && echo equal || echo DIFF)" "$ok")")
    done
    # the command after the restarts on the same control connection: a listing
    total=$((total + 1))
    nok=FAIL; [[ $nextok == OK && $sessok == OK ]] && { nok=OK; survived=$((survived + 1)); }
    ROWS+=("$(printf '%-14s %-4s %-4s %-21s %-6s %-4s   client exit %s; control: %s; %s%s' "$s" "$m" "next" \
        "$(case ${CLIENT[$s]} in curl) echo LIST ;; lftp) echo PWD+ls ;; *) echo PWD ;; esac)" "$nextok" "$nok" "${RC[$s]}" "$ctl" "${NOTE[$s]}" \
        "$([[ $modeok == OK ]] || echo "; $m NEVER SENT")")")
done
rm -f "$WORK/c"/*/*.bin

echo "hitless restart (state file: $STATE, workers $WORKERS, rate $RATE): restarts at ${r1}s, ${r2}s, ${r3}s and ${r4}s, clients done at ${tend}s"
printf '%-14s %-4s %-4s %-21s %-6s %-4s\n' session mode file "bytes got/want" sha256 ok
printf '%s\n' "${ROWS[@]}"
echo "gateway:"
printf '%s\n' "${GWCHECKS[@]}"
if ((survived != total || fails > 0)) || [[ -n "${SHOW_LOG:-}" ]]; then
    if [[ $STATE == on || -n "${SHOW_LOG:-}" ]]; then print_logs; fi
    for s in "${SESSIONS[@]}"; do
        if [[ $STATE == on || -n "${SHOW_LOG:-}" ]]; then
            echo "---- $s client output (tail) ----"
            tail -n 15 "$WORK/c/$s/stderr" "$WORK/c/$s/stdout" 2>/dev/null || true
        fi
    done
fi
echo "restart: $survived/$total transfers survived"
((survived == total && fails == 0))
