#!/usr/bin/env python3
"""Services without a selector plus hand-written EndpointSlices, as YAML on stdout.

    gen.py FIRST LAST IP1 IP2 ...   Services s-FIRST .. s-(LAST-1), port 80 -> every IP:8080

Each Service gets one EndpointSlice naming the real server pods' addresses: thousands of
Services cost two API objects each and no pods (see docs/benchmarks.md).
"""
import sys

first, last, ips = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
eps = "".join(f"  - addresses: [{ip}]\n    conditions: {{ready: true, serving: true, terminating: false}}\n" for ip in ips)
out = []
for i in range(first, last):
    out.append(f"""apiVersion: v1
kind: Service
metadata: {{name: s-{i}, labels: {{bench: scale}}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s-{i}-1
  labels: {{kubernetes.io/service-name: s-{i}, endpointslice.kubernetes.io/managed-by: sluice-bench, bench: scale}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{eps}---
""")
sys.stdout.write("".join(out))
