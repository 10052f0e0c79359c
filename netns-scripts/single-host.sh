#!/usr/bin/env bash
# netns-scripts/single-host.sh: checks the README's single-host deployment recipe. Three namespaces
# stand in for a LAN host, the gateway host and the upstream router; in the gateway namespace both TUN
# devices are persistent (`ip tuntap add`), policy routing hands LAN traffic to ftpnat, and the public
# address is routed into the WAN TUN, exactly as the README says. Needs root; tears down on exit;
# exits non-zero when a check fails. MODE=proxyarp puts the public address in the uplink's subnet and
# answers ARP for it instead of having the upstream route it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/env.sh"
[[ $EUID -eq 0 ]] || ftpnat_die "needs root"
[[ -x "$FTPNAT_BIN" ]] || ftpnat_die "no ftpnat binary at $FTPNAT_BIN (cargo build --release)"

P="${FTPNAT_SH_PREFIX:-ftpnat-sh}"
GW="$P-gw" LANH="$P-lanhost" UP="$P-upstream"
MODE="${MODE:-routed}"
UPLINK_GW=203.0.113.1 UPSTREAM=203.0.113.2
if [[ $MODE == proxyarp ]]; then PUBLIC=203.0.113.5; else PUBLIC=198.51.100.1; fi
LAN_IP=10.0.0.254   # ftpnat's --lan-ip: an address the gateway host does not own
UPLINK_MTU=1400     # smaller than the LAN's 1500, as on PPPoE or tunnelled uplinks
LOG=$(mktemp /tmp/ftpnat-single.XXXXXX)
FPID=

cleanup() {
    [[ -z "$FPID" ]] || { kill -TERM "$FPID" 2>/dev/null || true; wait "$FPID" 2>/dev/null || true; }
    ftpnat_ns_gone "$GW" "$LANH" "$UP"
}
cleanup
trap 'cleanup; rm -f "$LOG" "$LOG.out"' EXIT

ftpnat_ns_fresh "$GW" "$LANH" "$UP"
# Distribution-like strict reverse-path filtering on the gateway.
ip netns exec "$GW" sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1
ip link add eth0 netns "$GW" type veth peer name eth0 netns "$LANH"
ip link add eth1 netns "$GW" type veth peer name eth0 netns "$UP"
ip -n "$LANH" addr add 10.0.0.2/24 dev eth0 && ip -n "$LANH" link set eth0 up
ip -n "$LANH" route add default via 10.0.0.1
ip -n "$UP" addr add "$UPSTREAM/24" dev eth0 && ip -n "$UP" link set eth0 mtu "$UPLINK_MTU" up

g() { ip -n "$GW" "$@"; }
# --- the README recipe, verbatim but for the namespace ---
g addr add 10.0.0.1/24 dev eth0 && g link set eth0 up
g addr add "$UPLINK_GW/24" dev eth1 && g link set eth1 mtu "$UPLINK_MTU" up
g route add default via "$UPSTREAM"
g tuntap add dev ftpnat-lan mode tun && g link set ftpnat-lan up
g tuntap add dev ftpnat-wan mode tun && g link set ftpnat-wan mtu "$UPLINK_MTU" up
ip netns exec "$GW" sysctl -qw net.ipv4.ip_forward=1
g rule add iif eth0 lookup 100
g route add default dev ftpnat-lan table 100
g route add "$PUBLIC/32" dev ftpnat-wan
if [[ $MODE == proxyarp ]]; then
    g neigh add proxy "$PUBLIC" dev eth1
else
    ip -n "$UP" route add "$PUBLIC/32" via "$UPLINK_GW"
fi
RUST_LOG="${RUST_LOG:-ftpnat=info}" ip netns exec "$GW" "$FTPNAT_BIN" run --lan-tun ftpnat-lan --wan-tun ftpnat-wan --inside 10.0.0.0/24 \
    --public-ip "$PUBLIC" --lan-ip "$LAN_IP" --wan-mtu "$UPLINK_MTU" >"$LOG.out" 2>"$LOG" </dev/null &
FPID=$!
ftpnat_wait_for 10 grep -q "ftpnat running" "$LOG" || { cat "$LOG"; ftpnat_die "ftpnat did not start"; }

fails=0
check() { # check NAME CMD...: CMD's last output line is the figure
    local name=$1 out; shift
    if out=$("$@" 2>&1); then echo "  OK    $name: $(tail -n1 <<<"$out")"
    else echo "  FAIL  $name: $(tail -n1 <<<"$out")"; fails=$((fails + 1)); fi
}
lanh() { ip netns exec "$LANH" "$@"; }
ip netns exec "$UP" python3 "$HERE/peer.py" tcp-server 8080 >/dev/null 2>&1 </dev/null &
ip netns exec "$UP" python3 "$HERE/peer.py" tcp-sink 9000 >/dev/null 2>&1 </dev/null &
ftpnat_wait_for 10 ftpnat_listening "$UP" tcp 8080 || ftpnat_die "upstream server did not start"
ftpnat_wait_for 10 ftpnat_listening "$UP" tcp 9000 || ftpnat_die "upstream sink did not start"

ping_ok() { lanh timeout 10 ping -n -c 3 -i 0.2 -W 2 "$UPSTREAM" | grep -q ' 3 received' && echo "3/3 replies"; }
tcp_public() {
    local a; a=$(lanh timeout 10 python3 "$HERE/peer.py" tcp-client "$UPSTREAM" 8080) || { echo "$a"; return 1; }
    echo "upstream saw \"$a\""; [[ $a == "peer $PUBLIC:"* ]]
}
# TTL 1 expires in the host kernel (eth0 -> ftpnat-lan), TTL 2 in ftpnat, which answers from --lan-ip.
hop() {
    local out from
    out=$(lanh timeout 10 ping -n -c 1 -W 2 -t "$1" "$UPSTREAM" || true)
    from=$(sed -n 's/^From \([0-9.]*\) .*Time to live exceeded.*/\1/p' <<<"$out" | head -n1)
    echo "time exceeded from ${from:-nobody} (want $2)"
    [[ "$from" == "$2" ]]
}
# ftpnat, not the kernel, must report the smaller uplink MTU (see the README for why).
pmtu() {
    local out
    out=$(lanh timeout 10 ping -n -c 1 -W 2 -M do -s 1450 "$UPSTREAM" || true)
    out=$(grep -m1 'Frag needed' <<<"$out" || true)
    echo "${out:-no fragmentation-needed}"
    [[ "$out" == "From $LAN_IP "*"mtu = $UPLINK_MTU"* ]]
}
upload() {
    local a; a=$(lanh timeout 30 python3 "$HERE/peer.py" tcp-send "$UPSTREAM" 9000 4000000) || { echo "$a"; return 1; }
    echo "$a"; [[ $a == "got 4000000 bytes from $PUBLIC:"* ]]
}
check "ping LAN host -> upstream" ping_ok
check "TCP LAN host -> upstream, seen as $PUBLIC" tcp_public
check "TTL 1: the host kernel" hop 1 10.0.0.1
check "TTL 2: ftpnat, from --lan-ip" hop 2 "$LAN_IP"
check "DF 1478-byte packet: fragmentation needed from ftpnat" pmtu
check "TCP upload 4 MB over the $UPLINK_MTU-byte uplink" upload
check "unsolicited upstream -> $PUBLIC:8080 dropped" bash -c \
    "! ip netns exec '$UP' timeout 10 python3 '$HERE/peer.py' tcp-client '$PUBLIC' 8080 --timeout 2"

kill -TERM "$FPID"; wait "$FPID" || true; FPID=
echo "ftpnat stop summary:"; sed "s/^/  /" "$LOG.out"; rm -f "$LOG.out"
[[ -z "${SHOW_LOG:-}" ]] || cat "$LOG"
((fails == 0)) || { echo "single-host ($MODE): $fails checks FAILED"; exit 1; }
echo "single-host ($MODE): all checks OK"
