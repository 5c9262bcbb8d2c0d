#!/usr/bin/env python3
"""One UDP datagram larger than the path's MTU, sent fragmented, and its echo.

    udp_big.py HOST PORT SIZE [TRIES]

Sends SIZE bytes (DF off: the kernel cuts it into IPv4 fragments) and waits 2 s for an echo;
up to TRIES times (default 3). Prints {"sent", "echoed" (bytes of the echo, 0: none), "tries"}.
"""
import json
import socket
import sys

host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tries = int(sys.argv[4]) if len(sys.argv) > 4 else 3
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# Python before 3.12 does not name these; the numbers are Linux's (<linux/in.h>).
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
s.settimeout(2)
payload = bytes(i % 251 for i in range(size))
echoed, n = 0, 0
for n in range(1, tries + 1):
    s.sendto(payload, (host, port))
    try:
        data, _ = s.recvfrom(65535)
        echoed = len(data) if data == payload else -len(data)
        break
    except TimeoutError:
        pass
print(json.dumps({"sent": size, "echoed": echoed, "tries": n}))
