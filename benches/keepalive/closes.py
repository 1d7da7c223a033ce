#!/usr/bin/env python3
"""Who closed the gateways' client connections, and when, in a capture of benches/keepalive/run.

Usage: benches/keepalive/closes.py CAPTURE.pcap

Reads the capture with `tcpdump -r` (no other dependency) and prints, for the connections the
gateway closed first: how long each had been idle since its last answer (or, never used, since it
was opened, with any 408 the gateway sent), and every connection on which a request arrived that
the gateway never answered: how long before the gateway's FIN the request arrived and whether the
gateway then reset the connection.
"""

import collections
import re
import subprocess
import sys

HEADER = re.compile(r"^(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): Flags \[([^\]]*)\].*length (\d+)")


def packets(path):
    text = subprocess.run(
        ["tcpdump", "-r", path, "-nn", "-tt", "-A", "-s", "160"], capture_output=True, text=True, check=True
    ).stdout
    out = []
    for line in text.split("\n"):
        m = HEADER.match(line)
        if m:
            out.append([float(m[1]), m[2], m[3], m[4], int(m[5]), ""])
        elif out:
            out[-1][5] += line
    return out


def connections(pkts):
    """Events of each connection, keyed by (server port, client port, nth use of that pair)."""
    servers = {p[2] for p in pkts if p[3] == "S"}
    uses = collections.Counter()
    conns = collections.defaultdict(list)
    for ts, src, dst, flags, length, payload in pkts:
        server, client, way = (src, dst, "gateway") if src in servers else (dst, src, "client")
        if flags == "S":
            uses[(server, client)] += 1
        kind = ""
        if length:
            if "HTTP/1.1 408" in payload:
                kind = "408"
            elif "POST /" in payload:
                kind = "request"
            elif "HTTP/1.1 " in payload:
                kind = "answer"
        conns[(server, client, uses[(server, client)])].append((ts, way, flags, kind))
    return conns


def spread(values):
    v = sorted(values)
    if not v:
        return "none"
    at = lambda q: v[min(len(v) - 1, int(q * len(v)))]
    return f"{len(v)}: min {v[0]:.3f} s, median {at(0.5):.3f} s, p99 {at(0.99):.3f} s, max {v[-1]:.3f} s"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    idle, unused, lost_lead, resets, sent_408 = [], [], [], 0, 0
    for events in connections(packets(sys.argv[1])).values():
        opened = events[0][0]
        last_answer = last_request = None
        for i, (ts, way, flags, kind) in enumerate(events):
            sent_408 += kind == "408"
            if way == "client" and "F" in flags:
                break  # the client closed first
            if way == "gateway" and kind == "answer":
                last_answer = ts
            if way == "client" and kind == "request":
                last_request = ts
            if way == "gateway" and "F" in flags:
                if last_answer is None:
                    unused.append(ts - opened)
                else:
                    idle.append(ts - last_answer)
                if last_request is not None and (last_answer is None or last_request > last_answer):
                    lost_lead.append(ts - last_request)
                    resets += any(w == "gateway" and "R" in f for _, w, f, _ in events[i:])
                break
    print(f"closed by the gateway after an answer, idle time: {spread(idle)}")
    print(f"closed by the gateway before any request, time since opened: {spread(unused)} ({sent_408} answered 408)")
    print(f"requests the gateway closed the connection on, unanswered: {len(lost_lead)}, reset after: {resets}")
    print(f"  arrived before the gateway's FIN by: {spread(lost_lead)}")


if __name__ == "__main__":
    main()
