#!/usr/bin/env python3
"""Bounded hostile traffic for the namespace tests (issue 12), from inside a test's own namespace.

  flood.py tcp SRC DST DPORT --flags syn|ack --ports LO-HI [--passes N] [--seconds S]
      raw TCP segments (IP_HDRINCL) from SRC:port, one per port of LO-HI, pass after pass: SYNs a
      server never answers, or bare ACKs a NAT picks up mid-stream. Stops after N passes or S seconds,
      whichever comes first (or at SIGTERM); prints "sent N dropped M" (M: sends the kernel refused,
      e.g. ENOBUFS).
  flood.py connect HOST PORT --count N [--bind ADDR] [--timeout S]
      N TCP connections one after the other, each reading the server's first line; prints
      "ok K of N" and exits 1 unless all succeeded.
  flood.py lines HOST PORT --line TEXT --count N [--timeout S] [--wait-greeting]
      one TCP connection carrying N copies of TEXT + CRLF, then a half-close; prints the server's answer.

Every loop is bounded in count and time; traffic goes only where the caller's namespace routes it.
"""
import argparse
import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer import recv_line  # noqa: E402


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(src, dst, sport, dport, flags, seq, ack):
    """One IPv4/TCP segment with correct checksums (no options, no payload)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), sport, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


STOP = False


def on_term(*_):
    global STOP
    STOP = True


def tcp_flood(a):
    src, dst = socket.inet_aton(a.src), socket.inet_aton(a.dst)
    lo, hi = (int(x) for x in a.ports.split("-"))
    flags = {"syn": 0x02, "ack": 0x10}[a.flags]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    deadline = time.monotonic() + a.seconds
    sent = dropped = 0
    for p in range(a.passes):
        for port in range(lo, hi + 1):
            pkt = segment(src, dst, port, a.dport, flags, 1000 + p, 1 if flags == 0x10 else 0)
            try:
                s.sendto(pkt, (a.dst, 0))
                sent += 1
            except OSError:
                dropped += 1
                time.sleep(0.0005)
            if STOP or (port % 1024 == 0 and time.monotonic() > deadline):
                break
        if STOP or time.monotonic() > deadline:
            break
    print(f"sent {sent} dropped {dropped}", flush=True)
    return 0


def connect(a):
    ok = 0
    last = ""
    failures = []
    for _ in range(a.count):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
                c.settimeout(a.timeout)
                if a.bind:
                    c.bind((a.bind, 0))
                c.connect((a.host, a.port))
                data = recv_line(c)
                if data:
                    ok += 1
                    last = data.decode(errors="replace").strip()
        except OSError as e:
            last = f"failed: {e}"
            failures.append(last)
    more = f"; failures: {failures}" if failures else ""
    print(f"ok {ok} of {a.count} (last: {last}{more})", flush=True)
    return 0 if ok == a.count else 1


def lines(a):
    payload = (a.line.encode() + b"\r\n") * a.count
    try:
        with socket.create_connection((a.host, a.port), timeout=a.timeout) as c:
            c.settimeout(a.timeout)
            if a.wait_greeting:
                # Speak only after the server's greeting, as an FTP client does.
                recv_line(c)
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            data = recv_line(c)
    except OSError as e:
        print(f"failed: {e}", flush=True)
        return 1
    print(data.decode(errors="replace").strip(), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("tcp")
    sp.add_argument("src")
    sp.add_argument("dst")
    sp.add_argument("dport", type=int)
    sp.add_argument("--flags", choices=["syn", "ack"], required=True)
    sp.add_argument("--ports", required=True)
    sp.add_argument("--passes", type=int, default=1)
    sp.add_argument("--seconds", type=float, default=30.0)
    sp = sub.add_parser("connect")
    sp.add_argument("host")
    sp.add_argument("port", type=int)
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--bind", default="")
    sp.add_argument("--timeout", type=float, default=5.0)
    sp = sub.add_parser("lines")
    sp.add_argument("host")
    sp.add_argument("port", type=int)
    sp.add_argument("--line", required=True)
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.add_argument("--wait-greeting", action="store_true")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    return {"tcp": tcp_flood, "connect": connect, "lines": lines}[a.cmd](a) or 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
