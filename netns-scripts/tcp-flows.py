#!/usr/bin/env python3
"""Parallel TCP flows with digests at both ends, for the namespace tests (tests/workers_netns.rs).

  tcp-flows.py serve BIND PORT COUNT [--timeout S]
      accepts COUNT connections; each starts with a line "ID DIR BYTES": for DIR "up" the server reads
      BYTES and prints "recv ID SHA256 N"; for "down" it sends BYTES and prints "sent ID SHA256 N".
  tcp-flows.py run HOST PORT --sources A,B,.. [--flows N] [--bytes N] [--timeout S]
      opens N flows at once, flow i from source address sources[i % len] (so that flows come from
      several inside hosts), even flows upload, odd flows download; prints "sent"/"recv" lines as above.

Every flow's bytes are its own (a pseudo-random block seeded by its id, repeated), so a digest names
the flow's whole byte stream. Every network wait is bounded by --timeout; a failure prints
"failed: ..." and exits 1.
"""
import argparse
import hashlib
import random
import socket
import sys
import threading

BLOCK = 1 << 20


def block(flow_id):
    return random.Random(flow_id).randbytes(BLOCK)


def send(sock, flow_id, n):
    b, h, left = block(flow_id), hashlib.sha256(), n
    while left:
        chunk = b[: min(left, BLOCK)]
        sock.sendall(chunk)
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def recv(read, n):
    """Reads up to n bytes with read(max) until EOF; returns their digest and count."""
    h, got = hashlib.sha256(), 0
    while got < n:
        d = read(min(1 << 18, n - got))
        if not d:
            break
        h.update(d)
        got += len(d)
    return h.hexdigest(), got


def serve(a):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(64)
    ls.settimeout(a.timeout)
    print("listening", flush=True)
    out, threads, lock = [], [], threading.Lock()

    def one(c):
        try:
            c.settimeout(a.timeout)
            f = c.makefile("rb")
            flow_id, d, n = f.readline().decode().split()
            flow_id, n = int(flow_id), int(n)
            if d == "up":
                # read1 hands out what the header line's read buffered first.
                digest, got = recv(f.read1, n)
                line = f"recv {flow_id} {digest} {got}"
            else:
                line = f"sent {flow_id} {send(c, flow_id, n)} {n}"
                c.shutdown(socket.SHUT_WR)
            with lock:
                out.append(line)
        except Exception as e:  # reported, and the count check fails
            with lock:
                out.append(f"failed: {e}")
        finally:
            c.close()

    for _ in range(a.count):
        c, _ = ls.accept()
        t = threading.Thread(target=one, args=(c,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(a.timeout)
    for line in sorted(out):
        print(line, flush=True)
    return 0 if all(not l.startswith("failed") for l in out) else 1


def run(a):
    sources = a.sources.split(",")
    out, lock = [], threading.Lock()

    def one(i):
        try:
            s = socket.socket()
            s.settimeout(a.timeout)
            s.bind((sources[i % len(sources)], 0))
            s.connect((a.host, a.port))
            up = i % 2 == 0
            s.sendall(f"{i} {'up' if up else 'down'} {a.bytes}\n".encode())
            if up:
                line = f"sent {i} {send(s, i, a.bytes)} {a.bytes}"
                s.shutdown(socket.SHUT_WR)
                s.recv(1)
            else:
                h, got = recv(s.recv, a.bytes)
                line = f"recv {i} {h} {got}"
            s.close()
        except Exception as e:
            line = f"failed: flow {i}: {e}"
        with lock:
            out.append(line)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.flows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.timeout * 2)
    for line in sorted(out):
        print(line, flush=True)
    return 0 if len(out) == a.flows and all(not l.startswith("failed") for l in out) else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("bind")
    s.add_argument("port", type=int)
    s.add_argument("count", type=int)
    s.add_argument("--timeout", type=float, default=60)
    r = sub.add_parser("run")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("--sources", required=True)
    r.add_argument("--flows", type=int, default=16)
    r.add_argument("--bytes", type=int, default=16 << 20)
    r.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    try:
        sys.exit(serve(a) if a.cmd == "serve" else run(a))
    except Exception as e:
        print(f"failed: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
