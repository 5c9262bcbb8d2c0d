#!/usr/bin/env python3
"""Established TCP connections held idle, then used: opens COUNT connections to HOST:PORT (an
echo server), checks one echo on each, prints {"opened": N} at once, stays silent for HOLD
seconds (while the test does something to the path: a flood, a restart), then checks one echo
on each again and prints the outcome: {"opened", "ok", "failed", "first_errors"}.

    tcp_hold.py HOST PORT COUNT HOLD [--timeout SECONDS]
"""
import argparse
import json
import socket
import sys
import time


def echo(s, n):
    msg = b"hold %d\n" % n
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(len(msg) - len(got))
        if not chunk:
            raise OSError("closed by the peer")
        got += chunk
    if got != msg:
        raise OSError("echo mismatch: %r" % got)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("hold", type=float)
    ap.add_argument("--timeout", type=float, default=3.0)
    a = ap.parse_args()
    count, hold = min(a.count, 500), min(a.hold, 300)  # bounded
    conns, errors = [], []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        try:
            s.connect((a.host, a.port))
            echo(s, i)
            conns.append(s)
        except OSError as e:
            errors.append("open: %s" % e)
            s.close()
    print(json.dumps({"opened": len(conns)}), flush=True)
    time.sleep(hold)
    ok = 0
    for i, s in enumerate(conns):
        try:
            echo(s, i)
            ok += 1
        except OSError as e:
            errors.append(str(e))
        finally:
            s.close()
    print(json.dumps({"opened": len(conns), "ok": ok, "failed": len(conns) - ok, "first_errors": errors[:3]}))
    sys.exit(0)


if __name__ == "__main__":
    main()
