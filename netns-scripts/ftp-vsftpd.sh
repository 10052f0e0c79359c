#!/usr/bin/env bash
# netns-scripts/ftp-vsftpd.sh: run vsftpd in the foreground as a test FTP server with its own config
# (the system's /etc/vsftpd.conf is never read), for the demo and tests/ftp_real.rs.
#
#   ftp-vsftpd.sh DIR ADDR PORT PASV_MIN PASV_MAX [TLS]
#
# Serves DIR/root to anonymous users (any password), who may download every world-readable file and
# upload into DIR/root/upload/. Listens on ADDR:PORT only (ADDR IPv4 or IPv6); passive data ports PASV_MIN..PASV_MAX.
# vsftpd's defaults `port_promiscuous=NO`/`pasv_promiscuous=NO` are spelt out: a PORT/EPRT naming an
# address other than the control connection's peer is refused, and a passive data connection from
# another address is refused. That is the strict check a NAT's FTP ALG must pass. With TLS set to
# `tls`, FTPS (AUTH TLS) is offered with a self-signed certificate made here (needs openssl).
# The protocol log (every command the server saw, as it saw it) is DIR/vsftpd.log. With
# VSFTPD_CMDS_DENIED set (e.g. `EPSV,EPRT`: a server that only knows PASV and PORT), vsftpd answers
# those commands `550 Permission denied.` (its cmds_denied option).
# Run it with `exec`-like lifetime: it is vsftpd itself (exec), killed by whoever started it.
set -euo pipefail
[[ $# -ge 5 ]] || { echo "usage: ${0##*/} DIR ADDR PORT PASV_MIN PASV_MAX [tls]" >&2; exit 2; }
dir=$1 addr=$2 port=$3 pmin=$4 pmax=$5 tls=${6:-}
command -v vsftpd >/dev/null || { echo "${0##*/}: vsftpd missing: run netns-scripts/deps.sh" >&2; exit 1; }
getent passwd ftp >/dev/null || { echo "${0##*/}: no 'ftp' user (the vsftpd package creates it)" >&2; exit 1; }

mkdir -p "$dir/root/upload" "$dir/empty"
# vsftpd refuses an anonymous root the anonymous user could write to, and a writable secure_chroot_dir.
chown root:root "$dir/root" "$dir/empty"
chmod 755 "$dir/root"
chmod 555 "$dir/empty"
chown ftp:ftp "$dir/root/upload"
chmod 755 "$dir/root/upload"

# An IPv6 ADDR (an IPv6-only server behind a NAT64 forward) listens on IPv6 only.
if [[ "$addr" == *:* ]]; then
    listen="listen=NO"$'\n'"listen_ipv6=YES"$'\n'"listen_address6=$addr"
else
    listen="listen=YES"$'\n'"listen_ipv6=NO"$'\n'"listen_address=$addr"
fi

conf="$dir/vsftpd.conf"
cat >"$conf" <<CONF
$listen
listen_port=$port
background=NO
anonymous_enable=YES
no_anon_password=NO
local_enable=NO
anon_root=$dir/root
write_enable=YES
anon_upload_enable=YES
anon_other_write_enable=YES
anon_mkdir_write_enable=NO
anon_world_readable_only=YES
anon_umask=022
pasv_enable=YES
port_enable=YES
pasv_min_port=$pmin
pasv_max_port=$pmax
pasv_promiscuous=NO
port_promiscuous=NO
connect_from_port_20=NO
secure_chroot_dir=$dir/empty
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
tcp_wrappers=NO
max_clients=64
max_per_ip=64
idle_session_timeout=120
data_connection_timeout=60
accept_timeout=30
connect_timeout=30
log_ftp_protocol=YES
xferlog_enable=YES
xferlog_std_format=NO
vsftpd_log_file=$dir/vsftpd.log
CONF
if [[ -n "${VSFTPD_CMDS_DENIED:-}" ]]; then
    [[ "$VSFTPD_CMDS_DENIED" =~ ^[A-Za-z,]+$ ]] || { echo "${0##*/}: VSFTPD_CMDS_DENIED: commands, comma separated" >&2; exit 2; }
    echo "cmds_denied=$VSFTPD_CMDS_DENIED" >>"$conf"
fi

if [[ "$tls" == tls ]]; then
    command -v openssl >/dev/null || { echo "${0##*/}: openssl missing" >&2; exit 1; }
    [[ -s "$dir/cert.pem" ]] || openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$addr" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1
    cat >>"$conf" <<CONF
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
ssl_tlsv1=YES
ssl_sslv2=NO
ssl_sslv3=NO
require_ssl_reuse=NO
rsa_cert_file=$dir/cert.pem
rsa_private_key_file=$dir/key.pem
CONF
fi

: >"$dir/vsftpd.log"
exec vsftpd "$conf"
