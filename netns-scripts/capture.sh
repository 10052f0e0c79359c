#!/usr/bin/env bash
# netns-scripts/capture.sh: records real FTP sessions for `ftpnat replay`'s committed cases
# (tests/pcap/real-*/). Two namespaces on one flat link, no NAT: the client (curl) at 10.0.0.2 and the
# server (vsftpd) at 172.16.0.10, each with an on-link route to the other. tcpdump records the client's
# interface, so the client's own segments show the checksum offload of a veth (wrong TCP checksums),
# as captures taken on a sending host do.
#
#   sudo netns-scripts/capture.sh [CASES_DIR]      (default: tests/pcap of this repository)
#
# Writes CASES_DIR/real-vsftpd-*/input.pcap, args and README.md; then
# `cargo run --release --example regenerate_cases` fills in each expected-summary.json. Needs root,
# vsftpd, curl, tcpdump, openssl (netns-scripts/deps.sh installs them). Tears everything down on exit.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/../tests/pcap}"
[[ $EUID -eq 0 ]] || { echo "capture.sh: needs root" >&2; exit 1; }
for t in vsftpd curl tcpdump openssl ip; do
    command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || { echo "capture.sh: $t missing (netns-scripts/deps.sh)" >&2; exit 1; }
done

P="ftpnat-cap-$$"
CLI="$P-cli" SRV="$P-srv"
CLIENT=10.0.0.2 SERVER=172.16.0.10
WORK=$(mktemp -d /tmp/ftpnat-capture.XXXXXX)
VSFTPD_PID= DUMP_PID=

cleanup() {
    [[ -z "$DUMP_PID" ]] || { kill -INT "$DUMP_PID" 2>/dev/null || true; wait "$DUMP_PID" 2>/dev/null || true; }
    [[ -z "$VSFTPD_PID" ]] || { kill -TERM "$VSFTPD_PID" 2>/dev/null || true; wait "$VSFTPD_PID" 2>/dev/null || true; }
    for n in "$CLI" "$SRV"; do
        ip netns list | awk '{print $1}' | grep -qxF "$n" && ip netns del "$n"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the flat link ---------------------------------------------------------------------------------
ip netns add "$CLI"
ip netns add "$SRV"
ip link add eth0 netns "$CLI" type veth peer name eth0 netns "$SRV"
ip -n "$CLI" link set lo up
ip -n "$SRV" link set lo up
ip -n "$CLI" addr add "$CLIENT/24" dev eth0
ip -n "$SRV" addr add "$SERVER/24" dev eth0
# Fixed MACs so recordings are reproducible apart from timing, ports and sequence numbers.
ip -n "$CLI" link set eth0 address 02:00:00:00:00:02
ip -n "$SRV" link set eth0 address 02:00:00:00:00:10
for n in "$CLI" "$SRV"; do
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$n" link set eth0 up
done
ip -n "$CLI" route add 172.16.0.0/24 dev eth0
ip -n "$SRV" route add 10.0.0.0/24 dev eth0

# --- vsftpd: anonymous download and upload, active from port 20, passive 50000-50100, TLS ----------
mkdir -p "$WORK/root/pub" "$WORK/root/incoming" "$WORK/empty"
head -c 70000 /dev/urandom >"$WORK/root/pub/file.bin"
printf 'hello from vsftpd\n' >"$WORK/root/pub/readme.txt"
chmod 755 "$WORK" "$WORK/root" "$WORK/root/pub"
chown ftp "$WORK/root/incoming" 2>/dev/null || chmod 777 "$WORK/root/incoming"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ftp.example" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat >"$WORK/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=$SERVER
background=NO
anonymous_enable=YES
local_enable=NO
anon_root=$WORK/root
no_anon_password=YES
write_enable=YES
anon_upload_enable=YES
anon_umask=022
connect_from_port_20=YES
pasv_enable=YES
pasv_min_port=50000
pasv_max_port=50100
pasv_address=$SERVER
secure_chroot_dir=$WORK/empty
seccomp_sandbox=NO
xferlog_enable=NO
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
rsa_cert_file=$WORK/cert.pem
rsa_private_key_file=$WORK/key.pem
ssl_ciphers=HIGH
require_ssl_reuse=NO
EOF
ip netns exec "$SRV" /usr/sbin/vsftpd "$WORK/vsftpd.conf" &
VSFTPD_PID=$!
for _ in $(seq 50); do
    ip netns exec "$SRV" ss -Hltn "sport = :21" | grep -q . && break
    sleep 0.1
done

URL="ftp://$SERVER"
CURL=(ip netns exec "$CLI" curl -sS --max-time 20 --user anonymous:guest@example.org)

# record NAME CMD...: records the client's interface while CMD runs.
record() {
    local name=$1; shift
    local dir="$OUT/$name"
    mkdir -p "$dir"
    ip netns exec "$CLI" tcpdump -i eth0 -s 0 -U -w "$WORK/$name.pcap" 2>"$WORK/$name.dump" &
    DUMP_PID=$!
    # tcpdump says "listening" before its filter is attached: a ping that shows up in the file (-U
    # writes each packet at once) proves the recording runs. The ping stays in the capture.
    for _ in $(seq 50); do
        ip netns exec "$CLI" ping -c 1 -W 1 "$SERVER" >/dev/null 2>&1 || true
        (($(stat -c %s "$WORK/$name.pcap" 2>/dev/null || echo 0) > 24)) && break
        sleep 0.1
    done
    "$@" >/dev/null 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
    sleep 1
    kill -INT "$DUMP_PID"; wait "$DUMP_PID" || true; DUMP_PID=
    cp "$WORK/$name.pcap" "$dir/input.pcap"
    echo "capture.sh: recorded $name ($(stat -c %s "$dir/input.pcap") bytes)"
}

# case NAME ARGS DESCRIPTION COMMANDS: writes args and README of a case.
describe() {
    local name=$1 args=$2 what=$3 how=$4
    printf 'input.pcap\n%s\n' "$(tr ' ' '\n' <<<"$args")" >"$OUT/$name/args"
    cat >"$OUT/$name/README.md" <<EOF
# $name

$what

## How this capture was made

Recorded with real software by \`netns-scripts/capture.sh\` (run as root): two network namespaces joined
by one veth link, no NAT: the client $CLIENT (curl $(curl --version | head -1 | cut -d' ' -f2)) and the
server $SERVER (vsftpd $(dpkg-query -W -f='${Version}' vsftpd 2>/dev/null || echo '?'): anonymous
login, active mode from port 20, passive ports 50000-50100, TLS with a throw-away self-signed
certificate), each with an on-link route to the other. \`tcpdump -i eth0 -s 0\` ran in the client's
namespace, so the client's own segments carry the partial checksums of veth checksum offload. The
capture starts with one or more pings from the client (the script's proof that tcpdump records), then
the session:

    $how

\`args\` holds the replay arguments, one per line; \`expected-summary.json\` was produced by
\`cargo run --release --example regenerate_cases\` after recording.
EOF
}

port_session() {
    "${CURL[@]}" --disable-eprt -P - "$URL/pub/file.bin" -o /dev/null
    "${CURL[@]}" --disable-eprt -P - -T "$WORK/root/pub/readme.txt" "$URL/incoming/up.txt"
}
record real-vsftpd-port port_session
describe real-vsftpd-port "--inside $CLIENT/32 --public-ip 203.0.113.1" \
    "Active mode (PORT) with the client inside: two control connections, a 70000-byte download and an upload, one data connection each, opened by the server from port 20." \
    "curl --disable-eprt -P - $URL/pub/file.bin -o /dev/null; curl --disable-eprt -P - -T readme.txt $URL/incoming/up.txt"

record real-vsftpd-eprt "${CURL[@]}" -P - "$URL/pub/readme.txt" -o /dev/null
describe real-vsftpd-eprt "--inside $CLIENT/32 --public-ip 203.0.113.1" \
    "Active mode with EPRT (RFC 2428) and the client inside: one download." \
    "curl -P - $URL/pub/readme.txt -o /dev/null"

pasv_session() {
    "${CURL[@]}" --disable-epsv "$URL/pub/file.bin" -o /dev/null
    "${CURL[@]}" --disable-epsv --list-only "$URL/pub/"
}
record real-vsftpd-pasv-server-inside pasv_session
describe real-vsftpd-pasv-server-inside \
    "--inside $SERVER/32 --public-ip 203.0.113.1 --forward tcp:21=$SERVER:21 --ftp-port 21" \
    "Passive mode (PASV/227) replayed with the server inside behind a port forward: two control connections, a 70000-byte download and a name list." \
    "curl --disable-epsv $URL/pub/file.bin -o /dev/null; curl --disable-epsv --list-only $URL/pub/"

record real-vsftpd-epsv-server-inside "${CURL[@]}" "$URL/pub/readme.txt" -o /dev/null
describe real-vsftpd-epsv-server-inside \
    "--inside $SERVER/32 --public-ip 203.0.113.1 --forward tcp:21=$SERVER:21 --ftp-port 21" \
    "Extended passive mode (EPSV/229) replayed with the server inside behind a port forward: one download." \
    "curl $URL/pub/readme.txt -o /dev/null"

record real-vsftpd-auth-tls "${CURL[@]}" --ssl-reqd -k "$URL/pub/file.bin" -o /dev/null
describe real-vsftpd-auth-tls "--inside $CLIENT/32 --public-ip 203.0.113.1" \
    "AUTH TLS (RFC 4217) with the client inside: after 234 the control connection is TLS to its end (PBSZ, PROT P, EPSV and RETR are encrypted); the ALG must leave every byte alone. The client opens the (TLS) data connection outwards, which needs no pinhole." \
    "curl --ssl-reqd -k $URL/pub/file.bin -o /dev/null"
