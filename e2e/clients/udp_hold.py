#!/usr/bin/env python3
"""A connected UDP socket held while its backend leaves the Service.

    udp_hold.py HOST PORT

Connects once and prints {"first": REPLY} as soon as the first exchange succeeds. Then asks every
100 ms, for at most 20 s, until an exchange fails with an error other than a timeout (a socket
the proxy closed); then connects a new socket and asks until answered (at most 10 times). Prints one last JSON line:
{"first", "replies" (after the first), "errno" (None: no error within the bound), "then"}.
Timeouts are not the answer being waited for: kube-proxy moves such a socket silently, Sluice
closes it; a socket that is neither moved nor closed keeps answering from the old backend.
"""
import json
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET


def connect():
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    s.connect((host, port))
    return s


def ask(s):
    s.send(b"hold")
    return s.recv(256).decode().strip()


s = connect()
first = None
for _ in range(30):
    try:
        first = ask(s)
        break
    except TimeoutError:
        pass
print(json.dumps({"first": first}), flush=True)
replies, err, deadline = [], None, time.time() + 20
while time.time() < deadline:
    try:
        replies.append(ask(s))
    except TimeoutError:
        pass
    except OSError as e:
        err = e.errno
        break
    time.sleep(0.1)
# The new socket asks until answered, as the first did: a single 0.3 s wait once timed out in CI
# (the echo server forks a shell for each datagram).
then = None
try:
    s = connect()
    for _ in range(10):
        try:
            then = ask(s)
            break
        except TimeoutError as e:
            then = f"error: {e}"
except OSError as e:
    then = f"error: {e}"
print(json.dumps({"first": first, "replies": replies, "errno": err, "then": then}), flush=True)
