#!/usr/bin/env python3
"""Services without a selector plus hand-written EndpointSlices.

    gen.py FIRST LAST IP1 IP2 ...   Services s-FIRST .. s-(LAST-1), port 80 -> every IP:8080,
                                    as YAML on stdout
    gen.py FIRST LAST --pool P --endpoints E [--post API_URL --pki DIR [--jobs J]]
                                    the same Services, each with E endpoints drawn from P pod
                                    addresses (10.128.0.0 + k), written as the EndpointSlice
                                    controller writes them (nodeName, zone, targetRef): what
                                    e2e/bench/memory measures the agent's memory with. Printed
                                    (JSON documents, which are YAML), or with --post created
                                    through the API by J connections at once (admin.{crt,key}
                                    and ca.crt in DIR): ten times kubectl's rate

Each Service gets one EndpointSlice naming the real server pods' addresses: thousands of
Services cost two API objects each and no pods (see docs/benchmarks.md).
"""
import ipaddress
import json
import sys

first, last, rest = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]


def endpoint(ip, extra=""):
    return f"  - addresses: [{ip}]\n    conditions: {{ready: true, serving: true, terminating: false}}\n{extra}"


def pooled(i, pool, count):
    """Service s-i and its slice, endpoints pods (i * count + j) mod pool, over 5,000 nodes and 3 zones."""
    eps = []
    for j in range(count):
        k = (i * count + j) % pool
        eps.append({
            "addresses": [str(ipaddress.IPv4Address("10.128.0.0") + k)],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": f"node-{k % 5000}",
            "zone": f"zone-{k % 3}",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": f"pod-{k}", "uid": f"00000000-0000-4000-8000-{k:012d}"},
        })
    svc = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": f"s-{i}", "labels": {"bench": "scale"}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }
    sl = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"s-{i}-1", "labels": {
            "kubernetes.io/service-name": f"s-{i}", "endpointslice.kubernetes.io/managed-by": "sluice-bench", "bench": "scale"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }
    return svc, sl


def post(url, pki, jobs, pool, count):
    """Creates Services first..last-1 and their slices, `jobs` keep-alive connections at once."""
    import http.client
    import ssl
    import threading
    from urllib.parse import urlparse

    u = urlparse(url)
    ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")
    ctx.load_cert_chain(f"{pki}/admin.crt", f"{pki}/admin.key")
    paths = {"Service": "/api/v1/namespaces/default/services",
             "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"}
    errors = []
    lock = threading.Lock()
    todo = iter(range(first, last))

    def worker():
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)
        while not errors:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            for obj in pooled(i, pool, count):
                conn.request("POST", paths[obj["kind"]], json.dumps(obj), {"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                if r.status not in (201, 409):
                    errors.append(f"{obj['kind']} {obj['metadata']['name']}: {r.status} {body[:300]!r}")
                    return

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("\n".join(errors[:5]))


if rest[:1] == ["--pool"]:
    opts = dict(zip(rest[0::2], rest[1::2]))
    pool, count = int(opts["--pool"]), int(opts["--endpoints"])
    if "--post" in opts:
        post(opts["--post"], opts["--pki"], int(opts.get("--jobs", 8)), pool, count)
    else:
        for i in range(first, last):
            for obj in pooled(i, pool, count):
                sys.stdout.write(json.dumps(obj) + "\n---\n")
    sys.exit(0)

eps = "".join(endpoint(ip) for ip in rest)
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
