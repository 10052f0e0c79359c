#!/usr/bin/env python3
"""Many UDP flows through a NAT, for load tests (netns-scripts/ops-load.sh, tests/ops_netns.rs).

    udp-flows.py echo --ports 30000-30249 [--seconds 600]
        outside: answer every datagram on those ports, so each flow has seen a reply (a NAT may keep
        unanswered flows only briefly)
    udp-flows.py fill --hosts 10.0.0.10-10.0.0.29 --sockets 50 --to 198.51.100.2 --ports 30000-30249
                      [--first-port 20000] [--rate 50000] [--passes 2]
        inside: each host opens --sockets UDP sockets (source ports from --first-port) and sends one
        datagram from each to every port of --ports: hosts x sockets x ports flows, each inside
        endpoint talking to many destinations (one NAT mapping per socket, not per flow). Sent
        --passes times (a later pass only refreshes flows and lets lost answers come back), paced at
        --rate datagrams per second. Prints one line: "sent N datagrams, M answers".

Bounded: echo stops after --seconds; fill sends exactly passes x flows datagrams and then waits at
most 2 s for answers. Addresses must exist in the namespace (ops-load.sh adds them).
"""
import argparse
import ipaddress
import selectors
import socket
import sys
import time


def port_range(s):
    lo, _, hi = s.partition("-")
    lo = int(lo)
    hi = int(hi or lo)
    if not 0 < lo <= hi < 65536:
        raise argparse.ArgumentTypeError(f"bad port range {s}")
    return range(lo, hi + 1)


def host_range(s):
    lo, _, hi = s.partition("-")
    a = ipaddress.IPv4Address(lo)
    b = ipaddress.IPv4Address(hi or lo)
    if b < a:
        raise argparse.ArgumentTypeError(f"bad address range {s}")
    return [str(ipaddress.IPv4Address(i)) for i in range(int(a), int(b) + 1)]


def echo(args):
    sel = selectors.DefaultSelector()
    socks = []
    for p in args.ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("0.0.0.0", p))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    print(f"echo: {len(socks)} ports", flush=True)
    end = time.monotonic() + args.seconds
    answered = 0
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            for _ in range(256):
                try:
                    data, peer = s.recvfrom(2048)
                except BlockingIOError:
                    break
                try:
                    s.sendto(data, peer)
                    answered += 1
                except OSError:
                    pass
    print(f"echo: answered {answered}", flush=True)


def fill(args):
    socks = []
    for h in args.hosts:
        for i in range(args.sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((h, args.first_port + i))
            s.setblocking(False)
            socks.append(s)
    flows = len(socks) * len(args.ports)
    print(f"fill: {len(args.hosts)} hosts x {args.sockets} sockets x {len(args.ports)} ports = {flows} flows",
          file=sys.stderr, flush=True)
    payload = b"ftpnat-load"
    sent = 0
    answers = 0
    burst = 100
    start = time.monotonic()

    def drain():
        n = 0
        for s in socks:
            while True:
                try:
                    s.recv(2048)
                    n += 1
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
        return n

    for _ in range(args.passes):
        for p in args.ports:
            for s in socks:
                while True:
                    try:
                        s.sendto(payload, (args.to, p))
                        break
                    except BlockingIOError:
                        time.sleep(0.001)
                    except OSError as e:
                        print(f"fill: send failed: {e}", file=sys.stderr)
                        break
                sent += 1
                if sent % burst == 0:
                    # Pace to --rate: the devices' queues are short, and a burst beyond them is lost.
                    ahead = sent / args.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            answers += drain()
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        n = drain()
        answers += n
        if n == 0:
            time.sleep(0.1)
    print(f"sent {sent} datagrams, {answers} answers", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--ports", type=port_range, required=True)
    e.add_argument("--seconds", type=float, default=600)
    f = sub.add_parser("fill")
    f.add_argument("--hosts", type=host_range, required=True)
    f.add_argument("--sockets", type=int, required=True)
    f.add_argument("--to", required=True)
    f.add_argument("--ports", type=port_range, required=True)
    f.add_argument("--first-port", type=int, default=20000)
    f.add_argument("--rate", type=float, default=50000)
    f.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    echo(args) if args.cmd == "echo" else fill(args)


if __name__ == "__main__":
    main()
