#!/usr/bin/env python3
"""netns-scripts/natlog-collector.py: an IPFIX and syslog collector for ftpnat's NAT allocation logs.

A decoder written from the RFCs, independent of ftpnat's encoder (which is Rust; nothing here is
shared with it):
- IPFIX, RFC 7011: message header (version 10, length, export time, sequence number, observation
  domain), sets (id 2: templates; id >= 256: data), template records (id, field count, field
  specifiers with the enterprise bit), data records decoded with the template cache kept per
  (observation domain, template id). Information elements by the IANA registry numbers below, values
  by their abstract data types (RFC 7012): unsigned integers, IPv4 addresses, dateTimeMilliseconds.
  RFC 8158 natEvent values are named. Sequence numbers are checked: each message's must equal the
  data records received before it in that domain (RFC 7011 section 3.1), so a lost or reordered
  message is reported, not silently absorbed.
- syslog, RFC 5424 section 6: PRI, VERSION, TIMESTAMP, HOSTNAME, APP-NAME, PROCID, MSGID,
  STRUCTURED-DATA (SD-ELEMENTs with escaped PARAM-VALUEs, section 6.3.3) and MSG.

Usage: natlog-collector.py [--ipfix-port N] [--syslog-port N] [--unix PATH] [--pcap FILE] --out FILE
  [--seconds N]. It binds 127.0.0.1 (port 0: any), prints one JSON line with the bound ports, then writes
one JSON object per decoded record or message to --out (flushed per line), and, with --pcap, every
IPFIX datagram into a pcap file (wrapped in synthetic IPv4/UDP headers to port 4739) for tshark. It
stops after --seconds (default 600) or on SIGTERM.
"""
import argparse
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import time

# IANA IPFIX information elements (number: (name, type)).
IES = {
    4: ("protocolIdentifier", "u"),
    7: ("sourceTransportPort", "u"),
    8: ("sourceIPv4Address", "ip4"),
    11: ("destinationTransportPort", "u"),
    12: ("destinationIPv4Address", "ip4"),
    152: ("flowStartMilliseconds", "ms"),
    225: ("postNATSourceIPv4Address", "ip4"),
    226: ("postNATDestinationIPv4Address", "ip4"),
    227: ("postNAPTSourceTransportPort", "u"),
    228: ("postNAPTDestinationTransportPort", "u"),
    230: ("natEvent", "u"),
    283: ("natPoolId", "u"),
    323: ("observationTimeMilliseconds", "ms"),
    361: ("portRangeStart", "u"),
    362: ("portRangeEnd", "u"),
    363: ("portRangeStepSize", "u"),
    364: ("portRangeNumPorts", "u"),
    466: ("natQuotaExceededEvent", "u"),
    473: ("maxEntriesPerUser", "u"),
}

# RFC 8158 section 4.1 (IANA "natEvent").
NAT_EVENTS = {
    1: "NAT translation create (Historic)",
    2: "NAT translation delete (Historic)",
    3: "NAT Addresses exhausted",
    4: "NAT44 session create",
    5: "NAT44 session delete",
    6: "NAT64 session create",
    7: "NAT64 session delete",
    8: "NAT44 BIB create",
    9: "NAT44 BIB delete",
    10: "NAT64 BIB create",
    11: "NAT64 BIB delete",
    12: "NAT ports exhausted",
    13: "Quota Exceeded",
    14: "Address binding create",
    15: "Address binding delete",
    16: "Port block allocation",
    17: "Port block de-allocation",
    18: "Threshold Reached",
}


class IpfixError(Exception):
    pass


class Ipfix:
    def __init__(self):
        self.templates = {}  # (domain, template id) -> [(ie, enterprise, length)]
        self.received = {}  # domain -> data records received
        self.sequence_errors = []

    def message(self, data):
        if len(data) < 16:
            raise IpfixError("message shorter than its header")
        version, length, export, seq, domain = struct.unpack("!HHIII", data[:16])
        if version != 10:
            raise IpfixError(f"version {version}, not 10")
        if length != len(data):
            raise IpfixError(f"header length {length}, datagram {len(data)}")
        out = []
        expected = self.received.get(domain, 0)
        records_here = 0
        templates_here = 0
        at = 16
        while at < length:
            if at + 4 > length:
                raise IpfixError("truncated set header")
            set_id, set_len = struct.unpack("!HH", data[at:at + 4])
            if set_len < 4 or at + set_len > length:
                raise IpfixError(f"set length {set_len} at {at}")
            body = data[at + 4:at + set_len]
            if set_id == 2:
                templates_here += self.template_set(domain, body)
            elif set_id == 3:
                pass  # options templates: ftpnat sends none
            elif set_id >= 256:
                recs = self.data_set(domain, set_id, body)
                for r in recs:
                    r["_template"] = set_id
                    r["_export_time"] = export
                    r["_domain"] = domain
                out.extend(recs)
                records_here += len(recs)
            else:
                raise IpfixError(f"reserved set id {set_id}")
            at += set_len
        if records_here:
            if seq != expected:
                self.sequence_errors.append({"domain": domain, "expected": expected, "got": seq})
            self.received[domain] = (seq + records_here) % (1 << 32)
        return out, {"export_time": export, "sequence": seq, "domain": domain, "templates": templates_here}

    def template_set(self, domain, body):
        """Reads the template records of a set into the cache; returns how many there were."""
        at = 0
        n = 0
        while at + 4 <= len(body):
            tid, count = struct.unpack("!HH", body[at:at + 4])
            at += 4
            if tid < 256:
                raise IpfixError(f"template id {tid} below 256")
            fields = []
            for _ in range(count):
                ie, flen = struct.unpack("!HH", body[at:at + 4])
                at += 4
                enterprise = None
                if ie & 0x8000:
                    (enterprise,) = struct.unpack("!I", body[at:at + 4])
                    at += 4
                    ie &= 0x7FFF
                fields.append((ie, enterprise, flen))
            self.templates[(domain, tid)] = fields
            n += 1
        return n

    def data_set(self, domain, tid, body):
        fields = self.templates.get((domain, tid))
        if fields is None:
            raise IpfixError(f"data set {tid} before its template")
        if any(l == 0xFFFF for (_, _, l) in fields):
            raise IpfixError("variable-length fields are not expected from ftpnat")
        rec_len = sum(l for (_, _, l) in fields)
        out = []
        at = 0
        # Anything shorter than a record at the end is padding (RFC 7011 section 3.3.1).
        while at + rec_len <= len(body):
            rec = {}
            for (ie, ent, flen) in fields:
                raw = body[at:at + flen]
                at += flen
                name, kind = IES.get(ie, (f"ie{ie}" if ent is None else f"e{ent}.ie{ie}", "u"))
                if kind == "ip4":
                    if flen != 4:
                        raise IpfixError(f"{name}: length {flen}")
                    rec[name] = socket.inet_ntoa(raw)
                else:
                    rec[name] = int.from_bytes(raw, "big")
            if "natEvent" in rec:
                rec["natEventName"] = NAT_EVENTS.get(rec["natEvent"], "unassigned")
            out.append(rec)
        return out


SYSLOG_HEAD = re.compile(
    r"^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) "
)


def parse_sd(s):
    """STRUCTURED-DATA at the start of s: returns ({sd_id: {param: value}}, rest)."""
    if s.startswith("-"):
        return {}, s[1:]
    out = {}
    i = 0
    while i < len(s) and s[i] == "[":
        j = i + 1
        while s[j] not in " ]":
            j += 1
        sd_id = s[i + 1:j]
        params = {}
        i = j
        while s[i] == " ":
            i += 1
            eq = s.index("=", i)
            name = s[i:eq]
            if s[eq + 1] != '"':
                raise ValueError("PARAM-VALUE not quoted")
            k = eq + 2
            val = []
            while s[k] != '"':
                if s[k] == "\\" and s[k + 1] in '"\\]':
                    val.append(s[k + 1])
                    k += 2
                else:
                    val.append(s[k])
                    k += 1
            params[name] = "".join(val)
            i = k + 1
        if s[i] != "]":
            raise ValueError("SD-ELEMENT not closed")
        out[sd_id] = params
        i += 1
    return out, s[i:]


def syslog(data):
    text = data.decode("utf-8", "replace")
    m = SYSLOG_HEAD.match(text)
    if not m:
        raise ValueError("not RFC 5424: " + text[:80])
    pri = int(m.group(1))
    sd, rest = parse_sd(text[m.end():])
    msg = rest[1:] if rest.startswith(" ") else rest
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    return {
        "facility": pri // 8,
        "severity": pri % 8,
        "version": int(m.group(2)),
        "timestamp": m.group(3),
        "hostname": m.group(4),
        "app": m.group(5),
        "procid": m.group(6),
        "msgid": m.group(7),
        "sd": sd,
        "msg": msg,
    }


def pcap_header():
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW (IPv4)


def pcap_record(payload, port=4739):
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
    udp = struct.pack("!HHHH", 40000, port, udp_len, 0)
    frame = ip + udp + payload
    t = time.time()
    return struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ipfix-port", type=int)
    ap.add_argument("--syslog-port", type=int)
    ap.add_argument("--unix")
    ap.add_argument("--pcap")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=600)
    a = ap.parse_args()
    socks = {}
    ports = {}
    if a.ipfix_port is not None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("127.0.0.1", a.ipfix_port))
        socks[s.fileno()] = ("ipfix", s)
        ports["ipfix"] = s.getsockname()[1]
    if a.syslog_port is not None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("127.0.0.1", a.syslog_port))
        socks[s.fileno()] = ("syslog", s)
        ports["syslog"] = s.getsockname()[1]
    if a.unix:
        try:
            os.unlink(a.unix)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(a.unix)
        socks[s.fileno()] = ("syslog", s)
        ports["unix"] = a.unix
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    out = open(a.out, "w", buffering=1)
    pcap = open(a.pcap, "wb") if a.pcap else None
    if pcap:
        pcap.write(pcap_header())
        pcap.flush()
    ipfix = Ipfix()
    print(json.dumps(ports), flush=True)
    deadline = time.time() + a.seconds
    while not stop and time.time() < deadline:
        ready, _, _ = select.select(list(socks), [], [], 0.2)
        for fd in ready:
            kind, s = socks[fd]
            data = s.recv(65535)
            if kind == "ipfix":
                if pcap:
                    pcap.write(pcap_record(data))
                    pcap.flush()
                try:
                    recs, header = ipfix.message(data)
                except IpfixError as e:
                    out.write(json.dumps({"type": "ipfix_error", "error": str(e)}) + "\n")
                    continue
                out.write(json.dumps({"type": "ipfix_message", **header, "records": len(recs),
                                      "sequence_errors": len(ipfix.sequence_errors)}) + "\n")
                for r in recs:
                    out.write(json.dumps({"type": "ipfix", **r}) + "\n")
            else:
                try:
                    out.write(json.dumps({"type": "syslog", **syslog(data)}) + "\n")
                except (ValueError, IndexError) as e:
                    out.write(json.dumps({"type": "syslog_error", "error": str(e)}) + "\n")
    out.close()
    if pcap:
        pcap.close()


if __name__ == "__main__":
    sys.exit(main())
