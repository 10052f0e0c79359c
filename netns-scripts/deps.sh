#!/usr/bin/env bash
# netns-scripts/deps.sh: install what the demo and the test suite need on a fresh Debian/Ubuntu. Run it
# as root. Idempotent and quick when everything is there (no apt-get update unless something is missing).
# The Rust toolchain (cargo, clippy, rustfmt) is expected to be installed already. What it fetches, when
# missing: Debian packages (apt), and from crates.io two cargo tools built from source with
# `cargo install --locked` (a few minutes each, once): cargo-fuzz (the fuzz smoke run of test.sh) and
# cargo-deb (the Debian package test of test.sh). openssl makes the self-signed certificate of the FTPS
# server in tests/ftp_real.rs; systemd-container (systemd-nspawn) and binutils serve the package test;
# tshark decodes the NAT log's IPFIX independently of ftpnat (tests/natlog.rs; its debconf question
# about non-root capture takes its default, no, under the noninteractive frontend).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

pkgs=(iproute2 curl wget python3 iputils-ping vsftpd lftp openssl nftables tcpdump iperf3 procps coreutils
    systemd-container init-system-helpers binutils tshark)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

apt_updated=
apt_install() {
    [[ $EUID -eq 0 ]] || { echo "deps.sh: need root to install: $*" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z "$apt_updated" ]]; then apt-get update -qq; apt_updated=1; fi
    # Package scripts must not start daemons (vsftpd) on the host: tests run their own.
    local policy=/usr/sbin/policy-rc.d created=
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created=1; fi
    apt-get install -y -qq --no-install-recommends "$@" </dev/null
    [[ -z "$created" ]] || rm -f $policy
}

if ((${#missing[@]})); then
    echo "deps.sh: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# pyftpdlib for the python3 the scripts and tests will run (first on PATH).
if ! python3 -c 'import pyftpdlib' 2>/dev/null; then
    if [[ "$(python3 -c 'import sys; print(sys.prefix)')" == /usr ]]; then
        apt_install python3-pyftpdlib   # the system python is externally managed (PEP 668)
    else
        python3 -m pip install --quiet pyftpdlib
    fi
fi
python3 -c 'import pyftpdlib' || { echo "deps.sh: pyftpdlib still not importable" >&2; exit 1; }

# cargo tools from crates.io, each pinned to a major version whose interface the scripts use.
ftpnat_find_cargo
cargo_tool() {
    local bin=$1 crate=$2 version=$3
    command -v "$bin" >/dev/null 2>&1 && return 0
    echo "deps.sh: installing $crate $version from crates.io (cargo install --locked; a few minutes, once)"
    cargo install --locked --quiet "$crate" --version "$version"
}
cargo_tool cargo-fuzz cargo-fuzz '^0.13'
cargo_tool cargo-deb cargo-deb '^3.8'
echo "deps.sh: all present"
