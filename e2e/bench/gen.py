#!/usr/bin/env python3
"""Services without a selector plus hand-written EndpointSlices.

    gen.py FIRST LAST IP1 IP2 ...   Services s-FIRST .. s-(LAST-1), port 80 -> every IP:8080,
                                    as YAML on stdout
    gen.py FIRST LAST --pool P --endpoints E [--post API_URL --pki DIR [--jobs J] [--etcd URL]]
                                    the same Services, each with E endpoints drawn from P pod
                                    addresses (10.128.0.0 + k), written as the EndpointSlice
                                    controller writes them (nodeName, zone, targetRef): what
                                    e2e/bench/memory measures the agent's memory with. Printed
                                    (JSON documents, which are YAML), or with --post created
                                    through the API by J connections at once (admin.{crt,key}
                                    and ca.crt in DIR): ten times kubectl's rate. With --etcd
                                    (the harness's etcd, plain HTTP) each Service and its
                                    IPAddress are written into etcd as the apiserver stores
                                    them, ClusterIP 10.96.1.0 + i over 10.96.0.0/15, and only
                                    the slices go through the API (see put_stored)

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


def cluster_ip(i):
    """Service s-i's ClusterIP with --etcd: 10.96.1.0 + i, on through 10.97.0.0/16 (a second
    ServiceCIDR, which e2e/bench/memory creates), skipping 10.96.255.255 and 10.97.0.0, which the
    allocator never hands out; 10.96.0.0/24 stays for the apiserver's own allocations."""
    k = 256 + i
    if k >= 65535:
        k += 2
    if k >= 131071:
        sys.exit(f"gen.py --etcd: no ClusterIP for s-{i} in 10.96.0.0/15")
    return str(ipaddress.IPv4Address("10.96.0.0") + k)


def stored(svc, ip):
    """The IPAddress of Service `svc` with ClusterIP `ip`, and the Service, as kube-apiserver
    would store them (JSON, which its storage decodes as well as protobuf): [(etcd key, object)]."""
    import time
    import uuid
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    name = svc["metadata"]["name"]

    def fields(manager, api, f):
        return [{"manager": manager, "operation": "Update", "apiVersion": api, "time": now, "fieldsType": "FieldsV1", "fieldsV1": f}]
    s = {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {**svc["metadata"], "namespace": "default", "uid": str(uuid.uuid4()), "creationTimestamp": now,
                     "managedFields": fields("unknown", "v1", {  # what a POST of `svc` records
                         "f:metadata": {"f:labels": {".": {}, "f:bench": {}}},
                         "f:spec": {"f:internalTrafficPolicy": {}, "f:sessionAffinity": {}, "f:type": {}, "f:ports": {
                             ".": {}, 'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}}})},
        "spec": {**svc["spec"], "clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP", "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    }
    a = {
        "kind": "IPAddress", "apiVersion": "networking.k8s.io/v1",
        "metadata": {"name": ip, "uid": str(uuid.uuid4()), "creationTimestamp": now, "labels": {
            "ipaddress.kubernetes.io/ip-family": "IPv4", "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"},
            "managedFields": fields("kube-apiserver", "networking.k8s.io/v1", {
                "f:metadata": {"f:labels": {".": {}, "f:ipaddress.kubernetes.io/ip-family": {}, "f:ipaddress.kubernetes.io/managed-by": {}}},
                "f:spec": {"f:parentRef": {".": {}, "f:name": {}, "f:namespace": {}, "f:resource": {}}}})},
        "spec": {"parentRef": {"resource": "services", "namespace": "default", "name": name}},
    }
    return [(f"/registry/ipaddresses/{ip}", a), (f"/registry/services/specs/default/{name}", s)]


def etcd_create(conn, key, obj):
    """Writes `obj` at `key` in etcd if the key is free: None, or what is there instead."""
    import base64

    def b64(text):
        return base64.b64encode(text.encode()).decode()
    txn = {
        "compare": [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        "success": [{"request_put": {"key": b64(key), "value": b64(json.dumps(obj))}}],
        "failure": [{"request_range": {"key": b64(key)}}],
    }
    conn.request("POST", "/v3/kv/txn", json.dumps(txn), {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"etcd txn for {key}: {r.status} {body[:300]!r}")
    res = json.loads(body)
    if res.get("succeeded"):
        return None
    return json.loads(base64.b64decode(res["responses"][0]["response_range"]["kvs"][0]["value"]))


def put_stored(conn, i, what):
    """Writes Service s-i's IPAddress (`what` 0) or the Service (1) into etcd, unless there. A
    Service already there counts as created (as a 409 does); an IPAddress there must be its own.

    Why not the API: in kube-apiserver 1.37 every ClusterIP allocation, dynamic or of a given
    spec.clusterIP, ends by counting all IPAddress objects in its cache, twice (the allocator's
    used/free gauges), under one lock for dynamic ones: 2/3 of the apiserver's CPU at 7,500
    Services, 83% at 14,000, and a create costs time in proportion to the Services there are (20
    Services and slices a second at 10,000 on 2 cores; one create took 0.6 s at 100,000), so
    100,000 would take hours. Written here, the apiserver sees them through its watch as it sees
    its own writes, and so does every client."""
    key, obj = stored(pooled(i, 1, 0)[0], cluster_ip(i))[what]
    there = etcd_create(conn, key, obj)
    if what == 0 and there and there["spec"]["parentRef"].get("name") != f"s-{i}":
        raise RuntimeError(f"Service s-{i}: ClusterIP {cluster_ip(i)} is taken")


AHEAD = 500  # with --etcd, IPAddresses written this many Services ahead of their Service


def post(url, pki, jobs, pool, count, etcd=None):
    """Creates Services first..last-1 and their slices, `jobs` keep-alive connections at once.
    With `etcd`, Services and their IPAddresses are written into etcd (see the docstring of the
    module's --etcd), the IPAddress AHEAD Services before its Service, as the apiserver's repair
    loop must have seen it by then: it takes a ClusterIP whose IPAddress it has not seen for one
    to repair (an event and a failed create each; 6,896 of 80,000 with both written together),
    and an IPAddress whose Service it has not seen within 60 s for a leak."""
    import http.client
    import ssl
    import threading
    from urllib.parse import urlparse

    u = urlparse(url)
    e = urlparse(etcd) if etcd else None
    ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")
    ctx.load_cert_chain(f"{pki}/admin.crt", f"{pki}/admin.key")
    paths = {"Service": "/api/v1/namespaces/default/services",
             "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"}
    errors = []
    lock = threading.Lock()

    def run(todo, create):
        def worker():
            conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)
            econn = http.client.HTTPConnection(e.hostname, e.port, timeout=60) if e else None
            try:
                while not errors:
                    with lock:
                        i = next(todo, None)
                    if i is None:
                        return
                    create(conn, econn, i)
            except Exception as x:  # noqa: BLE001 (reported, and the other workers stop)
                errors.append(str(x))
        threads = [threading.Thread(target=worker) for _ in range(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit("\n".join(errors[:5]))

    def create(conn, econn, i):
        objs = pooled(i, pool, count)
        if econn:
            if i + AHEAD < last:
                put_stored(econn, i + AHEAD, 0)
            put_stored(econn, i, 1)
            objs = objs[1:]
        for obj in objs:
            conn.request("POST", paths[obj["kind"]], json.dumps(obj), {"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if r.status not in (201, 409):
                raise RuntimeError(f"{obj['kind']} {obj['metadata']['name']}: {r.status} {body[:300]!r}")

    if e:
        run(iter(range(first, min(first + AHEAD, last))), lambda conn, econn, i: put_stored(econn, i, 0))
    run(iter(range(first, last)), create)


if rest[:1] == ["--pool"]:
    opts = dict(zip(rest[0::2], rest[1::2]))
    pool, count = int(opts["--pool"]), int(opts["--endpoints"])
    if "--post" in opts:
        post(opts["--post"], opts["--pki"], int(opts.get("--jobs", 8)), pool, count, opts.get("--etcd"))
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
