#!/usr/bin/env bash
# netns-scripts/up.sh: create the lan/wan namespaces, start ftpnat as the router between them, move
# its TUN devices into the namespaces and address them. Idempotent: a topology that is already up is
# left as it is; a half-built one is torn down and rebuilt. Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

[[ $EUID -eq 0 ]] || ftpnat_die "needs root (network namespaces and TUN devices)"
[[ -x "$FTPNAT_BIN" ]] || ftpnat_die "no ftpnat binary at $FTPNAT_BIN (cargo build --release, or set FTPNAT_BIN)"

complete() {
    ftpnat_pid >/dev/null &&
        ip -n "$FTPNAT_NS_LAN" link show dev "$FTPNAT_LAN_TUN" >/dev/null 2>&1 &&
        ip -n "$FTPNAT_NS_WAN" link show dev "$FTPNAT_WAN_TUN" >/dev/null 2>&1
}
if complete; then
    echo "up.sh: already up (ftpnat pid $(ftpnat_pid), namespaces $FTPNAT_NS_LAN / $FTPNAT_NS_WAN)"
    exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/down.sh" >/dev/null

# ftpnat would attach to an existing device of the same name instead of creating its own.
for dev in "$FTPNAT_LAN_TUN" "$FTPNAT_WAN_TUN"; do
    if ip link show dev "$dev" >/dev/null 2>&1; then
        ftpnat_die "an interface named $dev already exists in this namespace; pick other names (env.sh)"
    fi
done

case "$FTPNAT_LAN_IPV4" in yes | no) ;; *) ftpnat_die "FTPNAT_LAN_IPV4=$FTPNAT_LAN_IPV4: yes or no" ;; esac
[[ -n "$FTPNAT_NAT64_PREFIX" || "$FTPNAT_LAN_IPV4" == yes ]] ||
    ftpnat_die "FTPNAT_LAN_IPV4=no needs FTPNAT_NAT64_PREFIX (the lan host would have no address)"
for ns in "$FTPNAT_NS_LAN" "$FTPNAT_NS_WAN"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    if [[ "$ns" == "$FTPNAT_NS_LAN" && -n "$FTPNAT_NAT64_PREFIX" ]]; then
        # The NAT64 client side: IPv6 on, but no router solicitations, autoconfiguration or duplicate
        # address detection on the TUN link (ftpnat is no IPv6 router advertiser; the address is static).
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
            net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.default.accept_ra=0 \
            net.ipv6.conf.default.autoconf=0 net.ipv6.conf.default.accept_dad=0
    else
        # No IPv6 here; without this the kernel's router solicitations only add drop counts.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    fi
done

mkdir -p "$FTPNAT_STATE_DIR"
rm -f "$FTPNAT_STATE_DIR"/ftpnat.{pid,status,out,log}
args=(run --lan-tun "$FTPNAT_LAN_TUN" --wan-tun "$FTPNAT_WAN_TUN" --inside "$FTPNAT_INSIDE"
    --public-ip "$FTPNAT_PUBLIC_IP" --lan-ip "$FTPNAT_GW_IP")
if [[ -n "$FTPNAT_CONFIG" ]]; then
    # The topology's flags above override the file; everything else (forwards included, so that a
    # SIGHUP reload can change them) comes from it. ftpnat re-reads the path on SIGHUP: make it absolute.
    [[ -r "$FTPNAT_CONFIG" ]] || ftpnat_die "FTPNAT_CONFIG=$FTPNAT_CONFIG: cannot read it"
    FTPNAT_CONFIG=$(realpath "$FTPNAT_CONFIG")
    args+=(--config "$FTPNAT_CONFIG")
else
    for f in $FTPNAT_FORWARDS; do args+=(--forward "$f"); done
fi
# shellcheck disable=SC2206 # word splitting is the point
if [[ -n "$FTPNAT_NAT64_PREFIX" ]]; then
    # shellcheck disable=SC2206
    args+=(${FTPNAT_NAT64_ARGS---nat64-prefix $FTPNAT_NAT64_PREFIX --inside6 $FTPNAT_INSIDE6})
fi
# shellcheck disable=SC2206
args+=($FTPNAT_EXTRA_ARGS)
# FTPNAT_WORKERS runs every topology with that many workers (the namespace suites' second run), unless
# the test's own flags set --workers.
if [[ -n "$FTPNAT_WORKERS" && " ${args[*]} " != *" --workers "* ]]; then
    args+=(--workers "$FTPNAT_WORKERS")
fi
# The control socket's directory (/run/ftpnat in the example configuration) must exist; under systemd
# RuntimeDirectory= makes it, here we do. The flag wins over the file, as in ftpnat.
socket=
if [[ -n "$FTPNAT_CONFIG" ]]; then
    socket=$(sed -n 's/^[[:space:]]*control-socket[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$FTPNAT_CONFIG" | tail -n 1)
fi
for ((i = 0; i < ${#args[@]} - 1; i++)); do
    [[ "${args[i]}" != --control-socket ]] || socket=${args[i + 1]}
done
if [[ -n "$socket" ]]; then mkdir -p "$(dirname "$socket")"; fi

# The wrapper subshell is ftpnat's parent, so ftpnat's exit status is recorded when it ends
# (down.sh and the tests read it). stdout carries the stop summary, stderr the log.
(
    RUST_LOG="$FTPNAT_LOG" "$FTPNAT_BIN" "${args[@]}" </dev/null \
        >"$FTPNAT_STATE_DIR/ftpnat.out" 2>"$FTPNAT_STATE_DIR/ftpnat.log" &
    echo $! >"$FTPNAT_STATE_DIR/ftpnat.pid"
    wait $! && rc=0 || rc=$?
    echo "$rc" >"$FTPNAT_STATE_DIR/ftpnat.status"
) </dev/null >/dev/null 2>&1 &

devices_exist() {
    ip link show dev "$FTPNAT_LAN_TUN" && ip link show dev "$FTPNAT_WAN_TUN"
}
# Done waiting as soon as the devices exist or ftpnat has already exited (bad flags, no permission).
started() { devices_exist || test -s "$FTPNAT_STATE_DIR/ftpnat.status"; }
ftpnat_wait_for 10 started || true
if ! devices_exist >/dev/null 2>&1; then
    cat "$FTPNAT_STATE_DIR/ftpnat.log" >&2 2>/dev/null || true
    "$(dirname "${BASH_SOURCE[0]}")/down.sh" >/dev/null || true
    ftpnat_die "ftpnat did not create $FTPNAT_LAN_TUN and $FTPNAT_WAN_TUN (exit status" \
        "$(cat "$FTPNAT_STATE_DIR/ftpnat.status" 2>/dev/null || echo 'none: still running after 10 s'); log above)"
fi

# The device keeps its ftpnat descriptor across the move; moving takes it down, so up it afterwards.
ip link set dev "$FTPNAT_LAN_TUN" netns "$FTPNAT_NS_LAN"
ip link set dev "$FTPNAT_WAN_TUN" netns "$FTPNAT_NS_WAN"

prefix_len="${FTPNAT_INSIDE#*/}"
if [[ "$FTPNAT_LAN_IPV4" == yes ]]; then
    ip -n "$FTPNAT_NS_LAN" addr add "$FTPNAT_LAN_HOST/$prefix_len" dev "$FTPNAT_LAN_TUN"
fi
if [[ -n "$FTPNAT_NAT64_PREFIX" ]]; then
    ip -n "$FTPNAT_NS_LAN" -6 addr add "$FTPNAT_LAN_HOST6/${FTPNAT_INSIDE6#*/}" dev "$FTPNAT_LAN_TUN" nodad
fi
ip -n "$FTPNAT_NS_LAN" link set dev "$FTPNAT_LAN_TUN" up
if [[ "$FTPNAT_LAN_IPV4" == yes ]]; then
    ip -n "$FTPNAT_NS_LAN" route add default via "$FTPNAT_GW_IP" dev "$FTPNAT_LAN_TUN"
fi
if [[ -n "$FTPNAT_NAT64_PREFIX" ]]; then
    # Only the NAT64 prefix goes to the gateway, as on a network whose DNS64 hands out its addresses.
    ip -n "$FTPNAT_NS_LAN" -6 route add "$FTPNAT_NAT64_PREFIX" via "$FTPNAT_GW_IP6" dev "$FTPNAT_LAN_TUN"
fi

ip -n "$FTPNAT_NS_WAN" addr add "$FTPNAT_WAN_HOST/$FTPNAT_WAN_PREFIX_LEN" dev "$FTPNAT_WAN_TUN"
ip -n "$FTPNAT_NS_WAN" link set dev "$FTPNAT_WAN_TUN" up
# The public address is on-link when it shares the wan host's prefix; otherwise route it explicitly.
ip -n "$FTPNAT_NS_WAN" route replace "$FTPNAT_PUBLIC_IP/32" dev "$FTPNAT_WAN_TUN"

complete || ftpnat_die "topology incomplete after setup; ftpnat log: $FTPNAT_STATE_DIR/ftpnat.log"
lan_addrs=$FTPNAT_LAN_HOST
[[ "$FTPNAT_LAN_IPV4" == yes ]] || lan_addrs=
[[ -z "$FTPNAT_NAT64_PREFIX" ]] || lan_addrs="${lan_addrs:+$lan_addrs }$FTPNAT_LAN_HOST6 (NAT64 $FTPNAT_NAT64_PREFIX)"
echo "up.sh: up (ftpnat pid $(ftpnat_pid); lan $FTPNAT_NS_LAN/$FTPNAT_LAN_TUN $lan_addrs," \
    "wan $FTPNAT_NS_WAN/$FTPNAT_WAN_TUN $FTPNAT_WAN_HOST, public $FTPNAT_PUBLIC_IP)"
