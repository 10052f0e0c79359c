# shellcheck shell=bash
# netns-scripts/bench-topo.sh: the benchmark topology, sourced by bench.sh. Three namespaces joined by
# veth pairs; the router namespace in the middle is switched between the three routers compared:
#
#   [ns $FB_NS_LAN]            [ns $FB_NS_RTR]                                 [ns $FB_NS_WAN]
#   lan0 10.0.0.2/24 --veth-- rlan 10.0.0.1/24          rwan 198.51.100.x/24 --veth-- wan0 198.51.100.2/24
#   default via 10.0.0.1       kernel: nft masquerade + ct helper ftp          servers: iperf3, vsftpd,
#                              ftpnat: TUN fbtl <- iif rlan, TUN fbtw <- iif rwan     udpflood, connrate
#
# kernel mode: rwan is 198.51.100.1 (the public address) and nftables masquerades out of it, with the
#   FTP conntrack helper attached to port 21 (nf_conntrack_ftp + nf_nat_ftp rewrite PORT/227).
# ftpnat mode: rwan is 198.51.100.254; the wan host routes the public address 198.51.100.1 to it.
#   Policy routing sends everything arriving on rlan into TUN fbtl (ftpnat's LAN side) and everything
#   arriving on rwan into TUN fbtw (its WAN side); what ftpnat writes to a TUN is routed by the main
#   table out of the other veth. --forward-only adds a wan route back to the LAN (nothing is translated).
# Names come from the environment so parallel runs cannot collide; nothing here touches the host's
# own namespace except creating and deleting these namespaces.

: "${FB_NS_LAN:=ftpnat-bench-lan}"
: "${FB_NS_RTR:=ftpnat-bench-rtr}"
: "${FB_NS_WAN:=ftpnat-bench-wan}"
: "${FB_LAN_HOST:=10.0.0.2}"
# More inside hosts for the several-hosts rows (ftpnat --workers N keeps each host on one worker:
# with 2 workers, 10.0.0.2 and .4 are worker 0's, .3 and .6 worker 1's).
: "${FB_LAN_HOSTS:=10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.6}"
: "${FB_GW_IP:=10.0.0.1}"
: "${FB_PUBLIC_IP:=198.51.100.1}"
: "${FB_RTR_WAN_IP:=198.51.100.254}"
: "${FB_WAN_HOST:=198.51.100.2}"
: "${FB_TUN_LAN:=fbtl}"
: "${FB_TUN_WAN:=fbtw}"
: "${FB_RUN_DIR:=/run/ftpnat-bench}"

fb_rtr() { ip netns exec "$FB_NS_RTR" "$@"; }
fb_lan() { ip netns exec "$FB_NS_LAN" "$@"; }
fb_wan() { ip netns exec "$FB_NS_WAN" "$@"; }

fb_topo_down() {
    local ns
    for ns in "$FB_NS_LAN" "$FB_NS_RTR" "$FB_NS_WAN"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

fb_topo_up() {
    fb_topo_down
    local ns
    for ns in "$FB_NS_LAN" "$FB_NS_RTR" "$FB_NS_WAN"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    ip link add lan0 netns "$FB_NS_LAN" type veth peer name rlan netns "$FB_NS_RTR"
    ip link add wan0 netns "$FB_NS_WAN" type veth peer name rwan netns "$FB_NS_RTR"
    ip -n "$FB_NS_LAN" addr add "$FB_LAN_HOST/24" dev lan0
    local h
    for h in $FB_LAN_HOSTS; do
        [[ $h == "$FB_LAN_HOST" ]] || ip -n "$FB_NS_LAN" addr add "$h/32" dev lan0
    done
    ip -n "$FB_NS_LAN" link set lan0 up
    ip -n "$FB_NS_LAN" route add default via "$FB_GW_IP"
    # Connection-rate runs need more ephemeral ports than the default range gives.
    fb_lan sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
    ip -n "$FB_NS_WAN" addr add "$FB_WAN_HOST/24" dev wan0
    ip -n "$FB_NS_WAN" link set wan0 up
    ip -n "$FB_NS_RTR" addr add "$FB_GW_IP/24" dev rlan
    ip -n "$FB_NS_RTR" link set rlan up
    ip -n "$FB_NS_RTR" link set rwan up
    fb_rtr sysctl -qw net.ipv4.ip_forward=1
    # ftpnat writes packets into a TUN whose source address routes out of another device: loose
    # (or no) reverse-path filtering is what such a router needs.
    fb_rtr sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.rlan.rp_filter=0 net.ipv4.conf.rwan.rp_filter=0
}

fb_wan_addr() {  # the router's wan address for a mode, and the wan host's routes to match
    ip -n "$FB_NS_RTR" addr flush dev rwan
    ip -n "$FB_NS_RTR" addr add "$1/24" dev rwan
    ip -n "$FB_NS_WAN" route del "$FB_PUBLIC_IP/32" 2>/dev/null || true
    ip -n "$FB_NS_WAN" route del 10.0.0.0/24 2>/dev/null || true
    ip -n "$FB_NS_WAN" neigh flush all 2>/dev/null || true
    ip -n "$FB_NS_LAN" neigh flush all 2>/dev/null || true
}

fb_mode_kernel() {
    fb_wan_addr "$FB_PUBLIC_IP"
    fb_rtr nft -f - <<EOF
table ip ftpnat_bench {
    ct helper ftp-standard {
        type "ftp" protocol tcp
        l3proto ip
    }
    chain pre {
        type filter hook prerouting priority filter; policy accept;
        iifname "rlan" tcp dport 21 ct helper set "ftp-standard"
    }
    # Registering the dstnat hook lets expected (FTP data) connections be translated on arrival.
    chain prenat {
        type nat hook prerouting priority dstnat; policy accept;
    }
    chain postnat {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "rwan" masquerade
    }
}
EOF
}

fb_mode_kernel_off() {
    fb_rtr nft delete table ip ftpnat_bench 2>/dev/null || true
}

FB_FTPNAT_PID=
fb_tuns_exist() {
    ip -n "$FB_NS_RTR" link show dev "$FB_TUN_LAN" && ip -n "$FB_NS_RTR" link show dev "$FB_TUN_WAN"
}

# fb_mode_ftpnat [EXTRA FTPNAT FLAGS...]: start ftpnat in the router namespace between two TUNs.
fb_mode_ftpnat() {
    fb_wan_addr "$FB_RTR_WAN_IP"
    ip -n "$FB_NS_WAN" route replace "$FB_PUBLIC_IP/32" via "$FB_RTR_WAN_IP"
    local a
    for a in "$@"; do
        [[ $a == --forward-only ]] && ip -n "$FB_NS_WAN" route replace 10.0.0.0/24 via "$FB_RTR_WAN_IP"
    done
    mkdir -p "$FB_RUN_DIR"
    # One worker unless the row says (ftpnat's default is one per CPU): the "ftpnat" rows are the
    # single loop.
    [[ " $* " == *" --workers "* ]] || set -- "$@" --workers 1
    RUST_LOG=ftpnat=warn ip netns exec "$FB_NS_RTR" "$FTPNAT_BIN" run --lan-tun "$FB_TUN_LAN" \
        --wan-tun "$FB_TUN_WAN" --inside 10.0.0.0/24 --public-ip "$FB_PUBLIC_IP" --lan-ip "$FB_GW_IP" "$@" \
        </dev/null >"$FB_RUN_DIR/ftpnat.out" 2>"$FB_RUN_DIR/ftpnat.log" &
    FB_FTPNAT_PID=$!
    if ! ftpnat_wait_for 10 fb_tuns_exist || ! kill -0 "$FB_FTPNAT_PID" 2>/dev/null; then
        cat "$FB_RUN_DIR/ftpnat.log" >&2
        ftpnat_die "ftpnat did not start in $FB_NS_RTR"
    fi
    ip -n "$FB_NS_RTR" rule add iif rlan lookup 100 prio 100
    ip -n "$FB_NS_RTR" route replace default dev "$FB_TUN_LAN" table 100
    ip -n "$FB_NS_RTR" rule add iif rwan lookup 101 prio 101
    ip -n "$FB_NS_RTR" route replace default dev "$FB_TUN_WAN" table 101
    fb_rtr sysctl -qw "net.ipv4.conf.$FB_TUN_LAN.rp_filter=0" "net.ipv4.conf.$FB_TUN_WAN.rp_filter=0"
}

# fb_mode_ftpnat_off: stop ftpnat (its stop summary lands in $FB_RUN_DIR/ftpnat.out) and its routing.
fb_mode_ftpnat_off() {
    ip -n "$FB_NS_RTR" rule del prio 100 2>/dev/null || true
    ip -n "$FB_NS_RTR" rule del prio 101 2>/dev/null || true
    ip -n "$FB_NS_RTR" route flush table 100 2>/dev/null || true
    ip -n "$FB_NS_RTR" route flush table 101 2>/dev/null || true
    if [[ -n $FB_FTPNAT_PID ]]; then
        kill -TERM "$FB_FTPNAT_PID" 2>/dev/null || true
        local i
        for i in $(seq 50); do kill -0 "$FB_FTPNAT_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$FB_FTPNAT_PID" 2>/dev/null || true
        wait "$FB_FTPNAT_PID" 2>/dev/null || true
        FB_FTPNAT_PID=
    fi
}

# fb_rss_kib PID: resident set size of a process in KiB.
fb_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
