#!/usr/bin/env python3
"""Tiny test peers for the namespace demo and tests: servers that tell each client the address they see.

  peer.py tcp-server PORT [--bind ADDR]      accept; send "peer IP:PORT\\n"; close. Forever.
  peer.py tcp-client HOST PORT [--timeout S] connect, print the server's line; exit 1 on failure.
  peer.py tcp-sink PORT [--bind ADDR] [--greeting LINE]   read each connection to its end; answer "got N
                                             bytes". Forever. With --greeting, say LINE first (an FTP
                                             server's "220 ...": the gateway's ALG trusts no line before it).
  peer.py tcp-send HOST PORT BYTES [--timeout S]  send BYTES bytes, print the answer; exit 1 on failure.
  peer.py udp-server PORT [--bind ADDR]      answer each datagram with "peer IP:PORT". Forever.
  peer.py udp-client HOST PORT [--timeout S] [--tries N]   send, print the answer; exit 1 on silence.

Servers print "ready" on stdout (flushed) once bound, so callers can wait for it. The line a server
sends is what a NAT test checks: behind ftpnat an outside server must see the public address.
"""
import argparse
import socket
import sys


def recv_line(c):
    """Reads from a connected socket until a line end or the peer's close; the bytes read."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = c.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def tcp_server(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    s.listen(16)
    print("ready", flush=True)
    while True:
        c, (ip, port) = s.accept()
        print(f"accepted {ip}:{port}", flush=True)
        try:
            c.sendall(f"peer {ip}:{port}\n".encode())
        finally:
            c.close()


def tcp_client(a):
    try:
        with socket.create_connection((a.host, a.port), timeout=a.timeout) as c:
            c.settimeout(a.timeout)
            data = recv_line(c)
    except OSError as e:
        print(f"failed: {e}", flush=True)
        return 1
    print(data.decode(errors="replace").strip(), flush=True)
    return 0


def tcp_sink(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    s.listen(16)
    print("ready", flush=True)
    while True:
        c, (ip, port) = s.accept()
        n = 0
        try:
            c.settimeout(30)
            if a.greeting:
                c.sendall(a.greeting.encode() + b"\r\n")
            while True:
                chunk = c.recv(1 << 16)
                if not chunk:
                    break
                n += len(chunk)
            c.sendall(f"got {n} bytes from {ip}:{port}\n".encode())
        except OSError as e:
            print(f"connection from {ip}:{port} failed after {n} bytes: {e}", flush=True)
        finally:
            c.close()
        print(f"received {n} bytes from {ip}:{port}", flush=True)


def tcp_send(a):
    block = bytes(range(256)) * 256
    try:
        with socket.create_connection((a.host, a.port), timeout=a.timeout) as c:
            c.settimeout(a.timeout)
            left = a.bytes
            while left > 0:
                n = c.send(block[: min(left, len(block))])
                left -= n
            c.shutdown(socket.SHUT_WR)
            data = recv_line(c)
    except OSError as e:
        print(f"failed: {e}", flush=True)
        return 1
    print(data.decode(errors="replace").strip(), flush=True)
    return 0


def udp_server(a):
    # An IPv6 --bind (a NAT64 forward's IPv6-only server) gets an IPv6 socket.
    s = socket.socket(socket.AF_INET6 if ":" in a.bind else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.bind, a.port))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(65535)
        ip, port = addr[0], addr[1]
        print(f"datagram {ip}:{port} {len(data)} bytes", flush=True)
        s.sendto(f"peer {ip}:{port}".encode(), addr)


def udp_client(a):
    # An IPv6 literal (a NAT64 client) gets an IPv6 socket.
    s = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(a.timeout)
    err = "no tries"
    for _ in range(a.tries):
        try:
            s.sendto(b"ping", (a.host, a.port))
            data, _ = s.recvfrom(65535)
        except OSError as e:
            err = e
            continue
        print(data.decode(errors="replace"), flush=True)
        return 0
    print(f"failed: {err}", flush=True)
    return 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("tcp-server", "tcp-sink", "udp-server"):
        sp = sub.add_parser(name)
        sp.add_argument("port", type=int)
        sp.add_argument("--bind", default="0.0.0.0")
        sp.add_argument("--greeting", default="")
    for name in ("tcp-client", "udp-client"):
        sp = sub.add_parser(name)
        sp.add_argument("host")
        sp.add_argument("port", type=int)
        sp.add_argument("--timeout", type=float, default=3.0)
        sp.add_argument("--tries", type=int, default=3)
    sp = sub.add_parser("tcp-send")
    sp.add_argument("host")
    sp.add_argument("port", type=int)
    sp.add_argument("bytes", type=int)
    sp.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    fn = {"tcp-server": tcp_server, "tcp-client": tcp_client, "tcp-sink": tcp_sink, "tcp-send": tcp_send,
          "udp-server": udp_server, "udp-client": udp_client}[a.cmd]
    return fn(a) or 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
