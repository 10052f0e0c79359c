#!/usr/bin/env bash
# netns-scripts/package-test.sh: the Debian package end to end, as CI runs it (test.sh calls it).
#
#   1. `cargo deb` builds target/debian/ftpnat_<version>-1_<arch>.deb (reusing the release build).
#   2. `dpkg -i` installs it on this machine; the files, the conffile, the man pages and the completions
#      are checked, and `systemd-analyze verify` checks both installed units.
#   3. The units are started by a real systemd: this machine's systemd is not PID 1 (CI's neither), so
#      `systemd-nspawn --boot` boots one in a container over this machine's /usr (where dpkg just put
#      the package), with its own network namespace and the installed /etc/ftpnat. Inside it:
#      ftpnat-host-setup.service creates the persistent TUN devices and the policy routing (LAN and
#      uplink NICs are veth interfaces), `systemctl start ftpnat` runs the unit exactly as installed
#      (dynamic user, CAP_NET_ADMIN only, sandboxing, RuntimeDirectory) with the example configuration
#      unedited, `ftpnat show stats` is answered through /run/ftpnat/control.sock, the metrics endpoint
#      answers, `systemctl reload` re-reads the file, `systemctl restart` keeps the state
#      (state-file), and both units stop cleanly.
#   4. `dpkg --purge` removes the package; nothing of it may remain.
#
# Needs root, cargo-deb, systemd-container and init-system-helpers (netns-scripts/deps.sh installs them).
# Refuses to run when a package named ftpnat is already installed (it would be replaced, then purged).
# Exit status 0 when every step passed. Takes about a minute after the release build.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/env.sh"
cd "$FTPNAT_REPO"

[[ $EUID -eq 0 ]] || ftpnat_die "needs root (dpkg -i, systemd-nspawn)"
ftpnat_find_cargo
for tool in cargo-deb dpkg systemd-nspawn systemd-analyze deb-systemd-helper; do
    command -v "$tool" >/dev/null || ftpnat_die "missing $tool: run netns-scripts/deps.sh"
done
# One run at a time on a machine: dpkg and the package's paths are machine-wide.
exec 9>/run/lock/ftpnat-package-test.lock
flock -w 900 9 || ftpnat_die "another package-test.sh holds /run/lock/ftpnat-package-test.lock"
if dpkg-query -W -f='${Status}' ftpnat 2>/dev/null | grep -q 'ok installed'; then
    ftpnat_die "a package named ftpnat is already installed; this test would replace and purge it"
fi

t0=$SECONDS
WORK=$(mktemp -d /tmp/ftpnat-package-test.XXXXXX)
installed=
cleanup() {
    local rc=$?
    if [[ -n "$installed" ]]; then dpkg --purge ftpnat >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
step() { echo "package-test: [$((SECONDS - t0)) s] $*"; }
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

# ---- 1. build ----------------------------------------------------------------------------------------
step "cargo deb"
cargo deb --fast >"$WORK/cargo-deb.log" 2>&1 || { cat "$WORK/cargo-deb.log" >&2; fail "cargo deb"; }
deb=$(grep -E '\.deb$' "$WORK/cargo-deb.log" | tail -n 1)
[[ -f "$deb" ]] || fail "cargo deb printed no .deb path"
step "built $deb ($(stat -c %s "$deb") bytes)"

# ---- 2. install --------------------------------------------------------------------------------------
dpkg -i "$deb" >"$WORK/dpkg-i.log" 2>&1 || { cat "$WORK/dpkg-i.log" >&2; fail "dpkg -i"; }
installed=1
for f in /usr/bin/ftpnat /usr/lib/systemd/system/ftpnat.service /usr/lib/systemd/system/ftpnat-host-setup.service \
    /etc/ftpnat/ftpnat.toml /usr/lib/ftpnat/host-setup.sh /usr/share/man/man1/ftpnat.1.gz \
    /usr/share/man/man1/ftpnat-run.1.gz /usr/share/bash-completion/completions/ftpnat \
    /usr/share/zsh/vendor-completions/_ftpnat /usr/share/fish/vendor_completions.d/ftpnat.fish \
    /usr/share/doc/ftpnat/README.md /usr/share/doc/ftpnat/CHANGELOG.md /usr/share/doc/ftpnat/copyright \
    /usr/share/doc/ftpnat/LICENSE-MIT /usr/share/doc/ftpnat/LICENSE-APACHE; do
    [[ -e "$f" ]] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}\n' ftpnat | grep -q '/etc/ftpnat/ftpnat.toml' || fail "ftpnat.toml is not a conffile"
cmp -s /etc/ftpnat/ftpnat.toml deploy/ftpnat.toml.example || fail "/etc/ftpnat/ftpnat.toml is not the example config"
step "installed: $(/usr/bin/ftpnat --version)"
if ! systemd-analyze verify /usr/lib/systemd/system/ftpnat.service \
    /usr/lib/systemd/system/ftpnat-host-setup.service >"$WORK/verify.log" 2>&1; then
    cat "$WORK/verify.log" >&2
    fail "systemd-analyze verify"
fi
step "systemd-analyze verify: both units clean"

# ---- 3. the units under a real systemd (systemd-nspawn) ---------------------------------------------------
mkdir -p "$WORK/units/multi-user.target.wants" "$WORK/out" "$WORK/etc-ftpnat"
# The installed configuration as dpkg left it, and the host-setup settings for the container's NICs.
cp -p /etc/ftpnat/ftpnat.toml "$WORK/etc-ftpnat/"
cat >"$WORK/etc-ftpnat/host-setup.env" <<'EOF'
LAN_IF=lan0
UPLINK_IF=up0
PUBLIC_IP=198.51.100.1
EOF
# The container's /etc/systemd/system: no first-boot questions, and the check below as the boot's job
# (it powers the container off when it ends, either way).
ln -s /dev/null "$WORK/units/systemd-firstboot.service"
cat >"$WORK/units/ftpnat-ci.service" <<'EOF'
[Unit]
Description=ftpnat package check
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/bash /ci/check.sh
TimeoutStartSec=180
FailureAction=poweroff
[Install]
WantedBy=multi-user.target
EOF
ln -s ../ftpnat-ci.service "$WORK/units/multi-user.target.wants/ftpnat-ci.service"
cat >"$WORK/check.sh" <<'EOF'
# Runs inside the container, as root, under systemd.
set -euxo pipefail
exec >/ci/out/check.log 2>&1
trap 'journalctl -u ftpnat.service -u ftpnat-host-setup.service --no-pager -o short-monotonic >/ci/out/journal.txt
    systemctl poweroff --no-block' EXIT
waitfor() {
    local n=$1; shift
    { set +x; } 2>/dev/null
    for _ in $(seq "$n"); do "$@" && { set -x; return 0; }; sleep 0.1; done
    set -x; return 1
}
# udev gives /dev/net/tun mode 0666 on a stock Debian host; nspawn copies this machine's node (0600
# here: no udev) into the container's own /dev, so the rule is applied to that copy.
mkdir -p /dev/net
[[ -e /dev/net/tun ]] || mknod /dev/net/tun c 10 200
chmod 0666 /dev/net/tun
# The LAN NIC and the uplink of a single-host gateway (veth pairs: the kernel may lack dummy).
ip link add lan0 type veth peer name lan0-peer
ip addr add 10.0.0.1/24 dev lan0
ip link set lan0 up
ip link add up0 type veth peer name up0-peer
ip addr add 192.0.2.2/24 dev up0
ip link set up0 up
systemctl start ftpnat-host-setup.service
ip -d link show ftpnat-lan | grep -q 'tun type tun .*persist on'
ip -d link show ftpnat-wan | grep -q 'tun type tun .*persist on'
ip rule show | grep -q 'iif lan0 lookup 100'
systemctl start ftpnat.service
waitfor 200 test -S /run/ftpnat/control.sock
systemctl is-active ftpnat.service
ftpnat show stats >/ci/out/stats.txt
grep -q '^flows.max  *262144$' /ci/out/stats.txt
curl -sf --max-time 5 http://127.0.0.1:9810/metrics >/ci/out/metrics.txt
grep -q '^ftpnat_flows_max 262144$' /ci/out/metrics.txt
pid=$(systemctl show -p MainPID --value ftpnat.service)
grep -E '^(Uid|Gid|CapEff|CapBnd|CapAmb|NoNewPrivs)' "/proc/$pid/status" >/ci/out/proc.txt
stat -c '%U %a %n' /run/ftpnat /run/ftpnat/control.sock >>/ci/out/proc.txt
# An unprivileged dynamic user holding CAP_NET_ADMIN (bit 12, 0x1000) and nothing else.
grep -Eq '^Uid:[[:space:]]+[1-9]' /ci/out/proc.txt
grep -Eq '^CapEff:[[:space:]]+0+1000$' /ci/out/proc.txt
grep -Eq '^NoNewPrivs:[[:space:]]+1$' /ci/out/proc.txt
systemctl reload ftpnat.service
waitfor 100 sh -c 'journalctl -u ftpnat.service --no-pager | grep -q "configuration reloaded"'
systemctl is-active ftpnat.service
# `systemctl restart` keeps the state (issue 15): the example configuration's state-file, in the unit's
# StateDirectory, is written at the stop, loaded at the start and then deleted.
systemctl restart ftpnat.service
waitfor 100 sh -c 'journalctl -u ftpnat.service --no-pager | grep -q "state saved"'
waitfor 100 sh -c 'journalctl -u ftpnat.service --no-pager | grep -q "state loaded"'
test ! -e /var/lib/ftpnat/state
systemctl is-active ftpnat.service
systemctl stop ftpnat.service
systemctl show -p ExecMainStatus --value ftpnat.service | grep -qx 0
test -s /var/lib/ftpnat/state
test ! -e /run/ftpnat
systemctl stop ftpnat-host-setup.service
! ip link show ftpnat-lan 2>/dev/null
journalctl -u ftpnat.service -u ftpnat-host-setup.service --no-pager -o short-monotonic >/ci/out/journal.txt
echo PASS >/ci/out/result
EOF
step "booting systemd in a container (systemd-nspawn) to start the installed units"
rc=0
timeout -k 10 300 systemd-nspawn --quiet --directory=/ --boot --volatile=yes --register=no --keep-unit --private-network \
    --machine="ftpnat-pkg-$$" \
    --bind-ro="$WORK/units:/etc/systemd/system" --bind-ro="$WORK/etc-ftpnat:/etc/ftpnat" \
    --bind-ro="$WORK/check.sh:/ci/check.sh" --bind="$WORK/out:/ci/out" \
    </dev/null >"$WORK/boot.log" 2>&1 || rc=$?
if [[ "$(cat "$WORK/out/result" 2>/dev/null)" != PASS ]]; then
    echo "--- check.log (inside the container) ---" >&2
    cat "$WORK/out/check.log" >&2 2>/dev/null || true
    echo "--- journal ---" >&2
    cat "$WORK/out/journal.txt" >&2 2>/dev/null || true
    echo "--- console (last lines) ---" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/boot.log" | tail -n 15 >&2
    fail "the units did not pass under systemd (systemd-nspawn exit $rc)"
fi
step "ftpnat.service ran as installed; ftpnat show stats through /run/ftpnat/control.sock:"
grep -E '^(flows\.(active|max)|packets\.in|device\.lan\.rx_packets)' "$WORK/out/stats.txt" | sed 's/^/    /'
sed 's/^/    /' "$WORK/out/proc.txt"
grep -E 'ftpnat running|reloaded|state saved|state loaded|stopped' "$WORK/out/journal.txt" | sed 's/^/    /' | cut -c1-160

# ---- 4. remove -------------------------------------------------------------------------------------
dpkg --purge ftpnat >"$WORK/dpkg-purge.log" 2>&1 || { cat "$WORK/dpkg-purge.log" >&2; fail "dpkg --purge"; }
installed=
! dpkg-query -W -f='${Status}' ftpnat 2>/dev/null | grep -q installed || fail "still installed after purge"
for f in /usr/bin/ftpnat /usr/lib/systemd/system/ftpnat.service /usr/lib/systemd/system/ftpnat-host-setup.service \
    /etc/ftpnat /usr/lib/ftpnat /usr/share/doc/ftpnat /usr/share/man/man1/ftpnat.1.gz; do
    [[ ! -e "$f" ]] || fail "$f left after dpkg --purge"
done
step "removed cleanly (dpkg --purge left nothing)"
step "OK in $((SECONDS - t0)) s"
