#!/usr/bin/env python3
"""Bounded connect loop for e2e tests: connects COUNT times to HOST:PORT (TCP), reads the
backend's one-line greeting, and prints a JSON summary: greetings seen, refused, other errors,
and whether getpeername showed the address connected to. The first failures are also given with
when they began (seconds since the loop started), the step that failed and the client's port,
to find their packets in a capture and their moment in an agent's log.

    connect.py HOST PORT COUNT [--interval SECONDS] [--timeout SECONDS] [--ports N]

With --ports N the client binds its source port itself, cycling over N ports (from a random
base below the kernel's ephemeral range): each tuple is reused every N connects, as a busy
client's are once the ephemeral range wraps.
"""
import argparse
import json
import socket
import random
import struct
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--ports", type=int, default=0)
    a = ap.parse_args()
    if not 0 <= a.ports <= 1000:
        ap.error("--ports 0..1000")
    base = random.randrange(20000, 31000)
    count = min(a.count, 20000)  # every loop is bounded
    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    seen, refused, errors, wrong_peer, failures = {}, 0, [], 0, []
    started, started_wall = time.monotonic(), time.time()
    for i in range(count):
        began, step = time.monotonic(), "connect"
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        # RST on close: thousands of connects must not pile up in TIME_WAIT.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            if a.ports:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", base + i % a.ports))
            s.connect((a.host, a.port))
            if s.getpeername()[0] != a.host:
                wrong_peer += 1
            step = "read"
            line = s.makefile().readline().strip() or "(empty)"
            seen[line] = seen.get(line, 0) + 1
        except ConnectionRefusedError:
            refused += 1
        except OSError as e:
            errors.append(str(e))
            if len(failures) < 5:
                try:
                    port = s.getsockname()[1]
                except OSError:
                    port = None
                failures.append({"n": i, "at": round(began - started, 3), "step": step, "client_port": port, "error": str(e)})
        finally:
            s.close()
        if a.interval:
            time.sleep(a.interval)
    print(json.dumps({
        "seen": seen, "refused": refused, "errors": len(errors), "first_errors": errors[:3],
        "failures": failures,
        "wrong_peer": wrong_peer,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started_wall)) + f"{started_wall % 1:.3f}"[1:] + "Z",
        "seconds": round(time.monotonic() - started, 3),
    }))


if __name__ == "__main__":
    main()
