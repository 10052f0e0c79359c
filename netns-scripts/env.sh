# shellcheck shell=bash
# netns-scripts/env.sh: the one place that names the demo/test topology. Sourced by every script here;
# every name can be overridden from the environment (the integration tests use unique, pid-based names
# so they can run in parallel).
#
#   [ns $FTPNAT_NS_LAN]                      (host namespace)                    [ns $FTPNAT_NS_WAN]
#   lan host 10.0.0.2/24                                                          wan host 198.51.100.2/24
#   dev $FTPNAT_LAN_TUN  <== TUN fd ==>  ftpnat process (the router)  <== TUN fd ==>  dev $FTPNAT_WAN_TUN
#   default via 10.0.0.1                 --inside 10.0.0.0/24                     198.51.100.1 on-link
#                                        --public-ip 198.51.100.1
#
# With FTPNAT_NAT64_PREFIX set, the lan host also gets IPv6 (an address in FTPNAT_INSIDE6 and a route to
# the NAT64 prefix via FTPNAT_GW_IP6), and with FTPNAT_LAN_IPV4=no it has IPv6 only: the NAT64 topology,
#
#   lan host 2001:db8:64::2/64 (no IPv4)                                          wan host 198.51.100.2/24
#   64:ff9b:1::/96 via 2001:db8:64::1        --nat64-prefix 64:ff9b:1::/96        (IPv4 only)
#                                            --inside6 2001:db8:64::/64
#
# The wan side never has IPv6: an IPv4-only server is what NAT64 is for. DNS64 is not part of it (use the
# synthesised address, e.g. 64:ff9b:1::198.51.100.2).
#
# ftpnat runs in the namespace the scripts are started in, creates both TUN devices there, and up.sh
# moves each device into its namespace: the descriptors ftpnat holds keep working across the move, so
# the two namespaces' only link is the ftpnat process.

: "${FTPNAT_NS_LAN:=ftpnat-lan}"            # namespace of the inside host
: "${FTPNAT_NS_WAN:=ftpnat-wan}"            # namespace of the outside host
: "${FTPNAT_LAN_TUN:=ftpnat-lan}"           # TUN device, ends up in $FTPNAT_NS_LAN (<= 15 bytes)
: "${FTPNAT_WAN_TUN:=ftpnat-wan}"           # TUN device, ends up in $FTPNAT_NS_WAN (<= 15 bytes)
: "${FTPNAT_INSIDE:=10.0.0.0/24}"           # --inside prefix
: "${FTPNAT_GW_IP:=10.0.0.1}"               # ftpnat's own LAN address (--lan-ip), the lan default gateway
: "${FTPNAT_LAN_HOST:=10.0.0.2}"            # the inside host's address
: "${FTPNAT_PUBLIC_IP:=198.51.100.1}"       # --public-ip (TEST-NET-2, RFC 5737)
: "${FTPNAT_WAN_HOST:=198.51.100.2}"        # the outside host's address
: "${FTPNAT_WAN_PREFIX_LEN:=24}"            # the wan link: wan host and public ip share this prefix
: "${FTPNAT_FORWARDS=tcp:2080=10.0.0.2:8080 udp:2053=10.0.0.2:5353}"  # --forward specs (space separated)
: "${FTPNAT_EXTRA_ARGS=}"                   # more `ftpnat run` flags, space separated
: "${FTPNAT_NAT64_PREFIX=}"                 # --nat64-prefix; empty: no NAT64, the lan host has no IPv6
: "${FTPNAT_INSIDE6:=2001:db8:64::/64}"     # --inside6 (RFC 3849 documentation space)
: "${FTPNAT_GW_IP6:=2001:db8:64::1}"        # the lan host's IPv6 next hop to the NAT64 prefix
: "${FTPNAT_LAN_HOST6:=2001:db8:64::2}"     # the inside host's IPv6 address
: "${FTPNAT_LAN_IPV4:=yes}"                 # no: the lan host has no IPv4 address or route (IPv6-only)
# FTPNAT_NAT64_ARGS, when set (even empty), replaces the flags up.sh gives ftpnat for NAT64
# (`--nat64-prefix $FTPNAT_NAT64_PREFIX --inside6 $FTPNAT_INSIDE6`).
: "${FTPNAT_CONFIG=}"                       # an ftpnat.toml for `--config` (then the forwards come from it)
: "${FTPNAT_LOG:=ftpnat=info}"              # RUST_LOG for the ftpnat process
: "${FTPNAT_WORKERS=1}"                     # --workers N, unless the flags already say (CI's second run: 2;
                                            # empty: ftpnat's default, one per CPU)

FTPNAT_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${FTPNAT_BIN:=$FTPNAT_REPO/target/release/ftpnat}"
: "${FTPNAT_STATE_DIR:=/run/ftpnat-netns/$FTPNAT_NS_LAN}"  # pid, exit status, logs, stop summary

export FTPNAT_NS_LAN FTPNAT_NS_WAN FTPNAT_LAN_TUN FTPNAT_WAN_TUN FTPNAT_INSIDE FTPNAT_GW_IP \
    FTPNAT_LAN_HOST FTPNAT_PUBLIC_IP FTPNAT_WAN_HOST FTPNAT_WAN_PREFIX_LEN FTPNAT_FORWARDS \
    FTPNAT_EXTRA_ARGS FTPNAT_CONFIG FTPNAT_LOG FTPNAT_WORKERS FTPNAT_REPO FTPNAT_BIN FTPNAT_STATE_DIR \
    FTPNAT_NAT64_PREFIX FTPNAT_INSIDE6 FTPNAT_GW_IP6 FTPNAT_LAN_HOST6 FTPNAT_LAN_IPV4

# --- helpers shared by the scripts ---------------------------------------------------------------

ftpnat_die() { echo "${0##*/}: $*" >&2; exit 1; }

# ftpnat_wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds; fail after SECONDS.
ftpnat_wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

ftpnat_ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }

# ftpnat_ns_gone NAME...: every process in each namespace that exists killed, the namespace deleted.
ftpnat_ns_gone() {
    local n
    for n in "$@"; do
        if ftpnat_ns_exists "$n"; then
            { ip netns pids "$n" 2>/dev/null || true; } | xargs -r kill -KILL 2>/dev/null || true
            ip netns del "$n" 2>/dev/null || true
        fi
    done
}

# ftpnat_ns_fresh NAME...: new namespaces with loopback up and IPv6 off (the kernel's router
# solicitations would only add drop counts).
ftpnat_ns_fresh() {
    local n
    for n in "$@"; do
        ip netns add "$n"
        ip -n "$n" link set lo up
        ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
}

# ftpnat_pid: the live ftpnat process started by up.sh for this topology, or nothing (fails).
ftpnat_pid() {
    local pid
    pid=$(cat "$FTPNAT_STATE_DIR/ftpnat.pid" 2>/dev/null) || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid must not be mistaken for ours.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--lan-tun $FTPNAT_LAN_TUN " || return 1
    echo "$pid"
}

# ftpnat_listening NS tcp|udp PORT: something listens on PORT in namespace NS.
ftpnat_listening() {
    local flag=-Hltn; [[ $2 == udp ]] && flag=-Hlun
    [[ -n "$(ip netns exec "$1" ss "$flag" "sport = :$3" 2>/dev/null)" ]]
}

# ftpnat_find_cargo: make `cargo` callable. Under sudo, root's PATH usually lacks the invoking user's
# toolchain (~/.cargo/bin); borrow it rather than fail.
ftpnat_find_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    if [[ -n "${SUDO_USER:-}" ]]; then
        local home; home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        if [[ -x "$home/.cargo/bin/cargo" ]]; then
            export PATH="$home/.cargo/bin:$PATH"
            export CARGO_HOME="${CARGO_HOME:-$home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
            return 0
        fi
    fi
    ftpnat_die "cargo not found (install Rust from rustup, or put cargo on root's PATH)"
}
