#!/usr/bin/env python3
"""Python ftplib as an FTP client for the namespace tests and the demo.

  ftp-client.py HOST PORT USER PASS get REMOTE LOCAL [--mode pasv|port]   download (RETR)
  ftp-client.py HOST PORT USER PASS put LOCAL REMOTE [--mode pasv|port]   upload (STOR)
  ftp-client.py HOST PORT USER PASS port-zero REMOTE     active mode announced as PORT 0,0,0,0,p1,p2
  ftp-client.py HOST PORT USER PASS raw LINE             send LINE as given (e.g. a bounce PORT); print the reply
  ftp-client.py HOST PORT USER PASS quit-close           send QUIT and our FIN at once, before the server's
                                                         221 and FIN arrive (a simultaneous close)
  ftp-client.py HOST PORT USER PASS quit-eof             send QUIT, read to the server's FIN, then close: the
                                                         server closes first; both print "local-port N REPLY"

--source ADDR connects from that local address (PORT then announces it).
pasv: ftplib sends PASV (for IPv4 it never uses EPSV) and, with trust_server_pasv_ipv4_address, connects
to the address the 227 reply names rather than to the control connection's peer, so a wrong rewrite
fails. port: ftplib sends PORT with its own address (for IPv4 it never uses EPRT).
get/put/port-zero print "bytes N seconds S"; raw prints the reply line and exits 0 whatever the
code; a failure prints "failed: ..." and exits 1. Every network wait is bounded by --timeout.
"""
import argparse
import ftplib
import socket
import sys
import time


def connect(a):
    # --source: one of several addresses of this namespace (the pool tests' inside hosts); ftplib's
    # PORT then names it, as the control connection's local address.
    ftp = ftplib.FTP(timeout=a.timeout, source_address=(a.source, 0) if a.source else None)
    ftp.connect(a.host, a.port)
    ftp.login(a.user, a.password)
    ftp.set_pasv(a.mode == "pasv")
    # Use the address in the 227 reply: that is what the ALG rewrote (ftplib ignores it by default).
    ftp.trust_server_pasv_ipv4_address = True
    return ftp


def get(a):
    ftp = connect(a)
    n = 0
    t0 = time.monotonic()
    with open(a.args[1], "wb") as f:
        def write(b):
            nonlocal n
            n += len(b)
            f.write(b)
        ftp.retrbinary("RETR " + a.args[0], write, blocksize=1 << 16)
    dt = time.monotonic() - t0
    ftp.quit()
    print(f"bytes {n} seconds {dt:.3f}", flush=True)


def put(a):
    ftp = connect(a)
    t0 = time.monotonic()
    with open(a.args[0], "rb") as f:
        ftp.storbinary("STOR " + a.args[1], f, blocksize=1 << 16)
        n = f.tell()
    dt = time.monotonic() - t0
    ftp.quit()
    print(f"bytes {n} seconds {dt:.3f}", flush=True)


def port_zero(a):
    """RFC 959 leaves 0,0,0,0 undefined; clients use it for "my control connection's address"."""
    ftp = connect(a)
    ftp.voidcmd("TYPE I")
    with socket.create_server(("0.0.0.0", 0)) as srv:
        srv.settimeout(a.timeout)
        p = srv.getsockname()[1]
        ftp.voidcmd(f"PORT 0,0,0,0,{p >> 8},{p & 255}")
        t0 = time.monotonic()
        ftp.putcmd("RETR " + a.args[0])
        resp = ftp.getresp()
        if resp[0] not in "12":
            raise ftplib.error_reply(resp)
        conn, _ = srv.accept()
        n = 0
        with conn:
            conn.settimeout(a.timeout)
            while chunk := conn.recv(1 << 16):
                n += len(chunk)
        ftp.voidresp()
    dt = time.monotonic() - t0
    ftp.quit()
    print(f"bytes {n} seconds {dt:.3f}", flush=True)


def raw(a):
    ftp = connect(a)
    try:
        resp = ftp.sendcmd(a.args[0])
    except ftplib.Error as e:
        resp = str(e)
    print(resp, flush=True)
    try:
        ftp.quit()
    except (OSError, ftplib.Error):
        pass


def quit_close(a, first=True):
    """first: our FIN leaves before the server's FIN arrives, so our kernel's ACK of the server's FIN
    follows our own FIN and carries the sequence number one past it (RFC 793 section 3.3). Otherwise the
    server's FIN comes first and it is the server's last ACK that follows its own FIN."""
    ftp = connect(a)
    sock = ftp.sock
    port = sock.getsockname()[1]
    sock.sendall(b"QUIT\r\n")
    if first:
        sock.shutdown(socket.SHUT_WR)
    sock.settimeout(a.timeout)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    time.sleep(0.2)  # the server's FIN was acknowledged on its own; now ours
    ftp.file.close()
    sock.close()
    print(f"local-port {port} {data.decode(errors='replace').strip()}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("user")
    p.add_argument("password")
    p.add_argument("cmd", choices=["get", "put", "port-zero", "raw", "quit-close", "quit-eof"])
    p.add_argument("args", nargs="*")
    p.add_argument("--mode", choices=["pasv", "port"], default="pasv")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--source", help="local address to connect from (default: the kernel's choice)")
    a = p.parse_args()
    want = {"get": 2, "put": 2, "port-zero": 1, "raw": 1, "quit-close": 0, "quit-eof": 0}[a.cmd]
    if len(a.args) != want:
        p.error(f"{a.cmd} takes {want} argument(s)")
    if a.cmd == "port-zero":
        a.mode = "port"
    fn = {"get": get, "put": put, "port-zero": port_zero, "raw": raw, "quit-close": quit_close,
          "quit-eof": lambda a: quit_close(a, first=False)}[a.cmd]
    try:
        fn(a)
    except (OSError, EOFError, ftplib.Error) as e:
        print(f"failed: {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
