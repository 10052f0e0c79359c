#!/usr/bin/env bash
# netns-scripts/host-setup.sh up|down|status: the README's single-host deployment ("Deploying on one
# host") and its inverse. `up` creates the two persistent TUN devices, turns forwarding on, hands
# everything arriving from the LAN NIC to ftpnat by policy routing, routes the public address into the
# WAN TUN and (PROXY_ARP=1) answers ARP for it on the uplink. `down` undoes exactly that. Both are
# idempotent and need root (CAP_NET_ADMIN); ftpnat itself then runs with CAP_NET_ADMIN only.
#
# Settings come from the environment, or from $FTPNAT_HOST_ENV (default /etc/ftpnat/host-setup.env)
# when that file exists:
#   LAN_IF      LAN NIC whose traffic goes to ftpnat (required), e.g. eth0
#   PUBLIC_IP   ftpnat's --public-ip (required); must not be configured on any interface
#   UPLINK_IF   uplink NIC: its MTU becomes the WAN TUN's; needed for PROXY_ARP=1
#   LAN_TUN     [ftpnat-lan]   WAN_TUN [ftpnat-wan]   TABLE [100]   RULE_PRIORITY [1000]
#   WAN_MTU     [UPLINK_IF's MTU, else 1500]: also give ftpnat --wan-mtu this value
#   PROXY_ARP   [0] 1: the public address is in the uplink's subnet; answer ARP for it there
#   STATE_DIR   [/run/ftpnat-host-setup]: what `up` changed, so `down` restores it
set -euo pipefail

usage() { echo "usage: ${0##*/} up|down|status   (settings: see the comment at the top)" >&2; exit 2; }
die() { echo "${0##*/}: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || usage
action=$1

env_file="${FTPNAT_HOST_ENV:-/etc/ftpnat/host-setup.env}"
# shellcheck disable=SC1090
[[ -r "$env_file" ]] && source "$env_file"
: "${LAN_TUN:=ftpnat-lan}" "${WAN_TUN:=ftpnat-wan}" "${TABLE:=100}" "${RULE_PRIORITY:=1000}"
: "${PROXY_ARP:=0}" "${STATE_DIR:=/run/ftpnat-host-setup}" "${UPLINK_IF:=}"
[[ -n "${LAN_IF:-}" ]] || die "LAN_IF is not set (the LAN NIC, e.g. eth0)"
[[ -n "${PUBLIC_IP:-}" ]] || die "PUBLIC_IP is not set (ftpnat's --public-ip)"
[[ $PROXY_ARP == 0 || -n "$UPLINK_IF" ]] || die "PROXY_ARP=1 needs UPLINK_IF"
if [[ -z "${WAN_MTU:-}" ]]; then
    WAN_MTU=1500
    [[ -z "$UPLINK_IF" ]] || WAN_MTU=$(cat "/sys/class/net/$UPLINK_IF/mtu" 2>/dev/null) ||
        die "UPLINK_IF $UPLINK_IF: no such interface"
fi

exists() { ip link show dev "$1" >/dev/null 2>&1; }
rule() { ip rule show priority "$RULE_PRIORITY" | grep -q "iif $LAN_IF lookup $TABLE"; }
proxy() { ip neigh show proxy dev "$UPLINK_IF" 2>/dev/null | grep -qw "$PUBLIC_IP"; }

up() {
    [[ $EUID -eq 0 ]] || die "needs root"
    exists "$LAN_IF" || die "LAN_IF $LAN_IF: no such interface"
    if ip -4 addr show | grep -qw "inet $PUBLIC_IP"; then
        die "$PUBLIC_IP is configured on an interface of this host: it must belong to ftpnat alone (README)"
    fi
    mkdir -p "$STATE_DIR"
    # Forwarding as it was before us, restored by `down` (kept from the first `up` only).
    [[ -e "$STATE_DIR/ip_forward" ]] || sysctl -n net.ipv4.ip_forward >"$STATE_DIR/ip_forward"
    for dev in "$LAN_TUN" "$WAN_TUN"; do
        if ! exists "$dev"; then
            ip tuntap add dev "$dev" mode tun
            echo "$dev" >>"$STATE_DIR/created"
        fi
    done
    ip link set "$LAN_TUN" up
    ip link set "$WAN_TUN" mtu "$WAN_MTU" up
    sysctl -qw net.ipv4.ip_forward=1
    # Everything from the LAN NIC to ftpnat; the local table comes first, so the host is still reached.
    rule || ip rule add priority "$RULE_PRIORITY" iif "$LAN_IF" lookup "$TABLE"
    ip route replace default dev "$LAN_TUN" table "$TABLE"
    # The public address belongs to ftpnat: route it into the WAN TUN.
    ip route replace "$PUBLIC_IP/32" dev "$WAN_TUN"
    if [[ $PROXY_ARP == 1 ]] && ! proxy; then ip neigh add proxy "$PUBLIC_IP" dev "$UPLINK_IF"; fi
    echo "host-setup: up ($LAN_IF -> table $TABLE -> $LAN_TUN; $PUBLIC_IP -> $WAN_TUN mtu $WAN_MTU" \
        "$([[ $PROXY_ARP == 1 ]] && echo "; proxy ARP on $UPLINK_IF"))"
    echo "host-setup: run ftpnat with --lan-tun $LAN_TUN --wan-tun $WAN_TUN --public-ip $PUBLIC_IP --wan-mtu $WAN_MTU"
}

down() {
    [[ $EUID -eq 0 ]] || die "needs root"
    if [[ $PROXY_ARP == 1 ]] && proxy; then ip neigh del proxy "$PUBLIC_IP" dev "$UPLINK_IF"; fi
    if exists "$WAN_TUN"; then ip route del "$PUBLIC_IP/32" dev "$WAN_TUN" 2>/dev/null || true; fi
    if exists "$LAN_TUN"; then ip route del default dev "$LAN_TUN" table "$TABLE" 2>/dev/null || true; fi
    while rule; do ip rule del priority "$RULE_PRIORITY" iif "$LAN_IF" lookup "$TABLE"; done
    if [[ -r "$STATE_DIR/created" ]]; then
        # Only the devices `up` created; a running ftpnat keeps its descriptor until it exits.
        while read -r dev; do
            if exists "$dev"; then ip tuntap del dev "$dev" mode tun; fi
        done <"$STATE_DIR/created"
    fi
    if [[ -r "$STATE_DIR/ip_forward" ]]; then sysctl -qw "net.ipv4.ip_forward=$(cat "$STATE_DIR/ip_forward")"; fi
    rm -rf "$STATE_DIR"
    echo "host-setup: down"
}

status() {
    echo "devices:"; for d in "$LAN_TUN" "$WAN_TUN"; do ip -br link show dev "$d" 2>/dev/null || echo "  $d absent"; done
    echo "rule:"; ip rule show priority "$RULE_PRIORITY"
    echo "table $TABLE:"; ip route show table "$TABLE"
    echo "public route:"; ip route show "$PUBLIC_IP/32"
    echo "ip_forward: $(sysctl -n net.ipv4.ip_forward)"
}

case "$action" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) usage ;;
esac
