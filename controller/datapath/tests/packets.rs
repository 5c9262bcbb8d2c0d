//! Packet tests of the north-south programs (bpf/nodeport.c, bpf/xdp.c) through
//! BPF_PROG_TEST_RUN: hand-built Ethernet frames go through the loaded programs, and the frames
//! that come out are parsed and checked: verdict, addresses, ports and every checksum.
//!
//! Nothing is attached and nothing is sent. Each test loads both objects with their maps pinned
//! in a fresh bpffs directory (removed on drop, also on failure) and runs in a private network
//! namespace of its own thread, so the FIB helper sees no routes and forwarding disabled: a
//! translated packet that would be forwarded falls back to the stack (TC_ACT_OK / XDP_PASS and
//! the `NpFibFail` counter). `fib_success_*` build a route and a permanent neighbour on a veth
//! pair inside that namespace to exercise the redirect path.
//!
//! Without root or bpffs the tests say why and pass, unless CI=true: then they fail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::Command;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use aya::programs::{SchedClassifier, Xdp};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_abi::{self as abi, Addr, Counter, CtKey, CtValue, XdpDevice, XdpState};
use sluice_core::{Capacity, Ids, NodeContext, manifest, plan};
use sluice_datapath::sys::{self, RunMode, TestContext};
use sluice_datapath::{BpfMaps, Reconciler, counters, loader, xdp_proof};

// ------------------------------------------------------------------ constants of the verdicts

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
const XDP_REDIRECT: i32 = 4;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

const NODE4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 11);
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x11);
const LOCAL_BE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const REMOTE_BE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const REMOTE_BE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 2);
const LB_REMOTE: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 100);
const LB_LOCAL: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 101);
const LB_ETP_LOCAL: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 110);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
/// Inside the LoadBalancer's loadBalancerSourceRanges (192.0.2.0/24).
const CLIENT_IN_RANGE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const CLIENT_OUT_OF_RANGE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_NODE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const MAC_BACKEND: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];

/// The cluster every test runs against, planned for node-a (172.30.0.11, fd00:30::11).
const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: local-only, namespace: t}
spec: {type: NodePort, clusterIP: 10.96.0.81, ports: [{port: 80, targetPort: 8080, nodePort: 30081}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: local-only-1, namespace: t, labels: {kubernetes.io/service-name: local-only}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.1.2], nodeName: node-a}]
---
apiVersion: v1
kind: Service
metadata: {name: remote-only, namespace: t}
spec:
  type: NodePort
  clusterIP: 10.96.0.82
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30082}, {name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: 30053}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: remote-only-1, namespace: t, labels: {kubernetes.io/service-name: remote-only}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints: [{addresses: [10.244.2.2], nodeName: node-b}]
---
apiVersion: v1
kind: Service
metadata: {name: many, namespace: t}
spec: {type: NodePort, clusterIP: 10.96.0.83, ports: [{port: 80, targetPort: 8080, nodePort: 30083}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: many-1, namespace: t, labels: {kubernetes.io/service-name: many}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- {addresses: [10.244.2.10], nodeName: node-b}
- {addresses: [10.244.2.11], nodeName: node-b}
- {addresses: [10.244.2.12], nodeName: node-b}
- {addresses: [10.244.2.13], nodeName: node-b}
- {addresses: [10.244.2.14], nodeName: node-b}
- {addresses: [10.244.2.15], nodeName: node-b}
- {addresses: [10.244.2.16], nodeName: node-b}
- {addresses: [10.244.2.17], nodeName: node-b}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: t}
spec:
  type: NodePort
  clusterIP: 10.96.0.87
  ports: [{port: 80, targetPort: 8080, nodePort: 30087}]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sticky-1, namespace: t, labels: {kubernetes.io/service-name: sticky}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- {addresses: [10.244.2.20], nodeName: node-b}
- {addresses: [10.244.2.21], nodeName: node-b}
- {addresses: [10.244.2.22], nodeName: node-b}
- {addresses: [10.244.2.23], nodeName: node-b}
- {addresses: [10.244.2.24], nodeName: node-b}
- {addresses: [10.244.2.25], nodeName: node-b}
- {addresses: [10.244.2.26], nodeName: node-b}
- {addresses: [10.244.2.27], nodeName: node-b}
---
apiVersion: v1
kind: Service
metadata: {name: v6, namespace: t}
spec:
  type: NodePort
  clusterIP: "fd00:96::84"
  clusterIPs: ["fd00:96::84"]
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  ports: [{port: 80, targetPort: 8080, nodePort: 30084}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v6-1, namespace: t, labels: {kubernetes.io/service-name: v6}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00:244:2::2"], nodeName: node-b}]
---
apiVersion: v1
kind: Service
metadata: {name: etp-local, namespace: t}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.85
  externalTrafficPolicy: Local
  healthCheckNodePort: 32085
  ports: [{port: 80, targetPort: 8080, nodePort: 30085}]
status: {loadBalancer: {ingress: [{ip: 172.31.1.110}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: etp-local-1, namespace: t, labels: {kubernetes.io/service-name: etp-local}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.2.3], nodeName: node-b}]
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: t}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.90
  loadBalancerSourceRanges: [192.0.2.0/24]
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
status: {loadBalancer: {ingress: [{ip: 172.31.1.100}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: lb-1, namespace: t, labels: {kubernetes.io/service-name: lb}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.2.2], nodeName: node-b}]
---
apiVersion: v1
kind: Service
metadata: {name: lb-local, namespace: t}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.91
  ports: [{port: 80, targetPort: 8080, nodePort: 30091}]
status: {loadBalancer: {ingress: [{ip: 172.31.1.101}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: lb-local-1, namespace: t, labels: {kubernetes.io/service-name: lb-local}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.1.2], nodeName: node-a}]
---
apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: t}
spec: {type: NodePort, clusterIP: 10.96.0.86, ports: [{port: 80, targetPort: 8080, nodePort: 30086}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mixed-1, namespace: t, labels: {kubernetes.io/service-name: mixed}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- {addresses: [10.244.1.2], nodeName: node-a}
- {addresses: [10.244.2.2], nodeName: node-b}
---
# No endpoint anywhere (named to sort last, so every other id stays as it was).
apiVersion: v1
kind: Service
metadata: {name: zz-empty, namespace: t}
spec: {type: NodePort, clusterIP: 10.96.0.95, ports: [{port: 80, nodePort: 30095}, {name: u, port: 53, protocol: UDP, nodePort: 30096}]}
---
apiVersion: v1
kind: Service
metadata: {name: zz-empty-local, namespace: t}
spec: {type: NodePort, clusterIP: 10.96.0.97, externalTrafficPolicy: Local, ports: [{port: 80, nodePort: 30097}]}
---
apiVersion: v1
kind: Service
metadata: {name: zz-empty-v6, namespace: t}
spec:
  type: NodePort
  clusterIP: "fd00:96::98"
  clusterIPs: ["fd00:96::98"]
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  ports: [{port: 80, nodePort: 30098}]
"#;

// ------------------------------------------------------------------ environment

fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (BPF_PROG_TEST_RUN, bpffs, network namespaces)".into());
    }
    let c = std::ffi::CString::new("/sys/fs/bpf").unwrap();
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != 0xcafe4a11 {
        return Err("/sys/fs/bpf is not a mounted BPF filesystem".into());
    }
    Ok(())
}

/// Returns false (after saying why) when the test cannot run here; panics under CI=true.
fn can_run(test: &str) -> bool {
    match prerequisites() {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test} cannot run under CI=true: {why}")
        }
        Err(why) => {
            println!("{test} not run: {why} (it is required under CI=true)");
            false
        }
    }
}

/// Moves this test's thread into a new network namespace: no routes, forwarding off, so the FIB
/// helper's answer does not depend on the machine the tests run on.
fn private_netns() {
    // SAFETY: unshare(CLONE_NEWNET) affects only the calling thread.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
}

/// A bpffs directory that is removed (with every pin in it) when the test ends, even by panic.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

struct Fixture {
    nodeport: Ebpf,
    xdp: Ebpf,
    // Declared last: dropped after the objects, so the maps are unpinned once nothing uses them.
    pins: PinDir,
}

impl Fixture {
    fn new(test: &str, accel: bool) -> Fixture {
        Fixture::planned(test, accel, false)
    }

    /// As `new`, with the ProxyConfig's loadBalancingAlgorithm set to maglev when `maglev`.
    fn planned(test: &str, accel: bool, maglev: bool) -> Fixture {
        private_netns();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let pins = PinDir(PathBuf::from(format!("/sys/fs/bpf/sluice-packets-{}-{test}-{nanos}", std::process::id())));
        std::fs::create_dir(&pins.0).unwrap_or_else(|e| panic!("creating {}: {e}", pins.0.display()));
        let mut nodeport = loader::load_object(&pins.0, sluice_datapath::NODEPORT_OBJECT).expect("loading nodeport.o");
        let mut xdp = loader::load_object(&pins.0, sluice_datapath::XDP_OBJECT).expect("loading xdp.o");
        for name in [loader::TC_INGRESS, loader::TC_EGRESS] {
            let prog: &mut SchedClassifier = nodeport.program_mut(name).unwrap().try_into().unwrap();
            loader::load_once(name, || prog.load()).unwrap_or_else(|e| panic!("{name} rejected: {e:?}"));
        }
        let prog: &mut Xdp = xdp.program_mut(loader::XDP_PROGRAM).unwrap().try_into().unwrap();
        loader::load_once(loader::XDP_PROGRAM, || prog.load()).unwrap_or_else(|e| panic!("sluice_xdp rejected: {e:?}"));

        let mut objects = manifest::Objects::default();
        let mut warnings = Vec::new();
        manifest::parse("cluster", CLUSTER, &mut objects, &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
        let (services, slices): (Vec<Service>, Vec<EndpointSlice>) = (objects.services, objects.slices);
        let node = NodeContext { node_name: Some("node-a".into()), node_ips: vec![NODE4.into(), NODE6.into()], external_ip_cidrs: None, maglev, zone: None };
        let p = plan(&services, &slices, &node, &Ids::default(), Capacity::default());
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let mut maps = BpfMaps::open(&pins.0).expect("opening the pinned maps");
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &p.desired).expect("writing the plan");

        let mut fx = Fixture { nodeport, xdp, pins };
        fx.config(accel);
        fx
    }

    fn config(&mut self, accel: bool) {
        self.config_with(NODE4, NODE6, accel);
    }

    fn config_with(&mut self, ip4: Ipv4Addr, ip6: Ipv6Addr, accel: bool) {
        let config =
            abi::Config { node_ip4: IpAddr::from(ip4).into(), node_ip6: IpAddr::from(ip6).into(), flags: if accel { abi::CFG_F_XDP_ACCEL } else { 0 }, pad: 0 };
        loader::write_config(&mut self.nodeport, config).unwrap();
        if accel {
            // Test runs without a context arrive on lo.
            self.device_state(1, XdpState::Accelerated);
        }
    }

    /// Records a device's proven (or not) acceleration, as the agent's proof does.
    fn device_state(&self, ifindex: u32, state: XdpState) {
        let entry = XdpDevice { flags: if state == XdpState::Accelerated { abi::XDP_DEV_F_ACCEL } else { 0 }, state: state as u32, ..Default::default() };
        xdp_proof::write_device(&self.pins.0, ifindex, &entry).unwrap();
    }

    fn tc(&self, name: &str, pkt: &[u8], ctx: Option<&[u8]>) -> (i32, Vec<u8>) {
        let prog: &SchedClassifier = self.nodeport.program(name).unwrap().try_into().unwrap();
        test_run(prog.fd().unwrap().as_fd().as_raw_fd(), pkt, ctx)
    }

    fn ingress(&self, pkt: &[u8]) -> (i32, Vec<u8>) {
        self.tc(loader::TC_INGRESS, pkt, None)
    }

    fn egress(&self, pkt: &[u8]) -> (i32, Vec<u8>) {
        self.tc(loader::TC_EGRESS, pkt, None)
    }

    fn xdp_ctx(&self, pkt: &[u8], ctx: Option<&[u8]>) -> (i32, Vec<u8>) {
        let prog: &Xdp = self.xdp.program(loader::XDP_PROGRAM).unwrap().try_into().unwrap();
        test_run(prog.fd().unwrap().as_fd().as_raw_fd(), pkt, ctx)
    }

    fn xdp(&self, pkt: &[u8]) -> (i32, Vec<u8>) {
        self.xdp_ctx(pkt, None)
    }

    fn counter(&self, c: Counter) -> u64 {
        counters::read(&self.pins.0).unwrap().into_iter().find(|(k, _)| *k == c).unwrap().1
    }

    /// Every counter that is not zero, for failure messages and exact comparisons.
    fn counters(&self) -> Vec<(Counter, u64)> {
        counters::read(&self.pins.0).unwrap().into_iter().filter(|(_, v)| *v != 0).collect()
    }

    fn ct(&self) -> Vec<(CtKey, CtValue)> {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_CT)).unwrap();
        let map: HashMap<MapData, CtKey, CtValue> = HashMap::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
        map.iter().map(|r| r.unwrap()).collect()
    }

    fn ct_get(&self, key: &CtKey) -> Option<CtValue> {
        self.ct().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn ct_put(&self, entries: impl IntoIterator<Item = (CtKey, CtValue)>) {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_CT)).unwrap();
        let mut map: HashMap<MapData, CtKey, CtValue> = HashMap::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
        for (k, v) in entries {
            map.insert(k, v, 0).unwrap();
        }
    }
}

// ------------------------------------------------------------------ BPF_PROG_TEST_RUN

/// Runs the program once on `pkt`; returns its return value and the packet as it left.
fn test_run(prog_fd: i32, pkt: &[u8], ctx: Option<&[u8]>) -> (i32, Vec<u8>) {
    // SAFETY: the fd belongs to a program the fixture keeps loaded for the whole call.
    let prog = unsafe { std::os::fd::BorrowedFd::borrow_raw(prog_fd) };
    let ctx = ctx.map_or(TestContext::None, TestContext::Raw);
    let (verdict, out) = sys::prog_test_run(prog, pkt, ctx, RunMode::Dry).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
    (verdict as i32, out)
}

// ------------------------------------------------------------------ building packets

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from(chunk[0]) << 8 };
        sum += u32::from(word);
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend([0, proto]);
            p.extend((len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend((len as u32).to_be_bytes());
            p.extend([0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    p
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    proto: u8,
}

fn flow(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16, proto: u8) -> Flow {
    Flow { src: src.into(), sport, dst: dst.into(), dport, proto }
}

impl Flow {
    /// The same flow seen the other way round (a reply).
    fn reply(self) -> Flow {
        Flow { src: self.dst, sport: self.dport, dst: self.src, dport: self.sport, proto: self.proto }
    }
}

/// TCP (SYN, or ACK when `payload` is not empty) or UDP segment with a correct checksum.
fn l4(f: &Flow, payload: &[u8], udp_zero_csum: bool) -> Vec<u8> {
    l4_flags(f, payload, udp_zero_csum, if payload.is_empty() { 0x02 } else { 0x18 })
}

const FIN_ACK: u8 = 0x11;
const ACK: u8 = 0x10;
const SYN: u8 = 0x02;

/// A TCP segment of `f` with these flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
fn tcp_segment(f: Flow, flags: u8, payload: &[u8]) -> Vec<u8> {
    frame(MAC_NODE, MAC_CLIENT, f.src, f.dst, f.proto, &l4_flags(&f, payload, false, flags))
}

fn l4_flags(f: &Flow, payload: &[u8], udp_zero_csum: bool, tcp_flags: u8) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(f.sport.to_be_bytes());
    s.extend(f.dport.to_be_bytes());
    let csum_at = match f.proto {
        TCP => {
            s.extend(0x1000_0000u32.to_be_bytes()); // seq
            s.extend(if payload.is_empty() { 0u32 } else { 0x2000_0000 }.to_be_bytes());
            s.push(5 << 4);
            s.push(tcp_flags);
            s.extend(64240u16.to_be_bytes());
            s.extend([0, 0, 0, 0]); // checksum, urgent pointer
            16
        }
        UDP => {
            s.extend(((8 + payload.len()) as u16).to_be_bytes());
            s.extend([0, 0]);
            6
        }
        p => panic!("proto {p}"),
    };
    s.extend(payload);
    if !(f.proto == UDP && udp_zero_csum) {
        let mut c = csum_fold(csum_add(csum_add(0, &pseudo_header(f.src, f.dst, f.proto, s.len())), &s));
        if f.proto == UDP && c == 0 {
            c = 0xffff;
        }
        s[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    s
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend(((20 + payload_len) as u16).to_be_bytes());
    h.extend([0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
    h.extend(src.octets());
    h.extend(dst.octets());
    let c = csum_fold(csum_add(0, &h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(dst_mac);
    p.extend(src_mac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend(0x0800u16.to_be_bytes());
            p.extend(ipv4_header(s, d, proto, l4.len()));
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend(0x86ddu16.to_be_bytes());
            p.extend(0x6000_0000u32.to_be_bytes());
            p.extend((l4.len() as u16).to_be_bytes());
            p.extend([proto, 64]);
            p.extend(s.octets());
            p.extend(d.octets());
        }
        _ => panic!("mixed families"),
    }
    p.extend(l4);
    p
}

/// A TCP or UDP packet of `f` from `src_mac` to `dst_mac`.
fn packet(f: Flow, payload: &[u8]) -> Vec<u8> {
    frame(MAC_NODE, MAC_CLIENT, f.src, f.dst, f.proto, &l4(&f, payload, false))
}

/// An ICMPv4 error (type, code, 4 bytes of rest) from `src` to `dst` quoting `quoted` (an IP
/// packet without Ethernet header).
fn icmp4_error(src: Ipv4Addr, dst: Ipv4Addr, typ: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend(rest);
    m.extend(quoted);
    let c = csum_fold(csum_add(0, &m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    frame(MAC_NODE, MAC_BACKEND, src.into(), dst.into(), ICMP, &m)
}

// ------------------------------------------------------------------ parsing what came out

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    flow: Flow,
    /// The L4 checksum field as it is (to tell "left zero" from "recomputed").
    l4_csum: u16,
    payload: Vec<u8>,
}

impl PartialEq for Flow {
    fn eq(&self, o: &Flow) -> bool {
        (self.src, self.sport, self.dst, self.dport, self.proto) == (o.src, o.sport, o.dst, o.dport, o.proto)
    }
}
impl Eq for Flow {}

/// Parses an IP header at `ip` and checks its checksum; returns (src, dst, proto, header length).
fn parse_ip(ip: &[u8], what: &str) -> (IpAddr, IpAddr, u8, usize) {
    match ip[0] >> 4 {
        4 => {
            assert_eq!(ip[0] & 0xf, 5, "{what}: IPv4 options");
            assert_eq!(csum_fold(csum_add(0, &ip[..20])), 0, "{what}: IPv4 header checksum is wrong: {:02x?}", &ip[..20]);
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (s.into(), d.into(), ip[9], 20)
        }
        6 => {
            let s: [u8; 16] = ip[8..24].try_into().unwrap();
            let d: [u8; 16] = ip[24..40].try_into().unwrap();
            (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into(), ip[6], 40)
        }
        v => panic!("{what}: IP version {v}"),
    }
}

/// Parses a TCP or UDP frame and checks the IPv4 header and L4 checksums.
fn parse(pkt: &[u8]) -> Seen {
    let ip = &pkt[14..];
    let (src, dst, proto, hl) = parse_ip(ip, "packet");
    let total = if ip[0] >> 4 == 4 { usize::from(u16::from_be_bytes([ip[2], ip[3]])) } else { 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])) };
    assert_eq!(total, ip.len(), "IP length field vs frame");
    let seg = &ip[hl..];
    let l4_csum = match proto {
        TCP => u16::from_be_bytes([seg[16], seg[17]]),
        UDP => u16::from_be_bytes([seg[6], seg[7]]),
        p => panic!("proto {p}"),
    };
    if !(proto == UDP && src.is_ipv4() && l4_csum == 0) {
        let sum = csum_add(csum_add(0, &pseudo_header(src, dst, proto, seg.len())), seg);
        assert_eq!(
            csum_fold(sum),
            0,
            "L4 checksum of {src}:{} -> {dst}:{} is wrong",
            u16::from_be_bytes([seg[0], seg[1]]),
            u16::from_be_bytes([seg[2], seg[3]])
        );
    }
    let hdr = if proto == TCP { 20 } else { 8 };
    Seen {
        dst_mac: pkt[0..6].try_into().unwrap(),
        src_mac: pkt[6..12].try_into().unwrap(),
        flow: Flow { src, sport: u16::from_be_bytes([seg[0], seg[1]]), dst, dport: u16::from_be_bytes([seg[2], seg[3]]), proto },
        l4_csum,
        payload: seg[hdr..].to_vec(),
    }
}

fn ct_key(f: Flow, dir: u8) -> CtKey {
    CtKey { saddr: Addr::from(f.src), daddr: Addr::from(f.dst), sport_be: f.sport.to_be(), dport_be: f.dport.to_be(), proto: f.proto, dir, pad: 0 }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}

macro_rules! skip_unless_runnable {
    ($name:expr) => {
        if !can_run($name) {
            return;
        }
    };
}

// ------------------------------------------------------------------ scenarios

#[test]
fn nodeport_local_backend_is_dnat_only_and_egress_restores_the_frontend() {
    skip_unless_runnable!("nodeport_local_backend");
    let fx = Fixture::new("local", false);
    let c2f = flow(CLIENT, 40000, NODE4, 30081, TCP);

    let (verdict, out) = fx.ingress(&packet(c2f, b""));
    assert_eq!(verdict, TC_ACT_OK, "a local backend is delivered by the stack");
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(CLIENT, 40000, LOCAL_BE, 8080, TCP), "DNAT only: the client's address stays");
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_NODE, MAC_CLIENT), "the stack routes it; MACs untouched");

    let fwd = fx.ct_get(&ct_key(c2f, abi::CT_FORWARD)).expect("forward conntrack entry");
    assert_eq!((fwd.addr1, u16::from_be(fwd.port1_be), fwd.flags), (Addr::from(LOCAL_BE), 8080, abi::CT_F_LOCAL));
    let b2c = flow(LOCAL_BE, 8080, CLIENT, 40000, TCP);
    let rev = fx.ct_get(&ct_key(b2c, abi::CT_REVERSE)).expect("reverse conntrack entry keyed backend -> client");
    assert_eq!((rev.addr1, u16::from_be(rev.port1_be)), (Addr::from(NODE4), 30081));
    assert_eq!(fx.ct().len(), 2);

    // The backend's reply, leaving the node: source becomes the frontend again.
    let reply = packet(b2c, b"hello");
    let (verdict, out) = fx.egress(&reply);
    assert_eq!(verdict, TC_ACT_OK);
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 30081, CLIENT, 40000, TCP));
    assert_eq!(seen.payload, b"hello");

    // The same reply seen by ingress is not ingress's to translate (no SNAT): untouched.
    let (verdict, out) = fx.ingress(&reply);
    assert_eq!(verdict, TC_ACT_UNSPEC);
    assert_eq!(out, reply);

    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpReverse, 1)]);
}

#[test]
fn nodeport_remote_backend_is_dnat_and_snat_and_the_reply_is_reversed_on_ingress() {
    skip_unless_runnable!("nodeport_remote_backend");
    let fx = Fixture::new("remote", false);
    let c2f = flow(CLIENT, 40001, NODE4, 30082, TCP);

    let (verdict, out) = fx.ingress(&packet(c2f, b""));
    // Translated for forwarding; the FIB helper has no route in this namespace, so the code
    // leaves the packet to the stack (TC_ACT_OK) and counts the miss.
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(fx.counter(Counter::NpFibFail), 1);
    let seen = parse(&out);
    // The client's port is kept as SNAT port while no other flow to that backend uses it.
    assert_eq!(seen.flow, flow(NODE4, 40001, REMOTE_BE, 8080, TCP));

    let fwd = fx.ct_get(&ct_key(c2f, abi::CT_FORWARD)).expect("forward entry");
    assert_eq!(fwd.flags, abi::CT_F_SNAT);
    assert_eq!((fwd.addr2, u16::from_be(fwd.port2_be)), (Addr::from(NODE4), 40001));
    let b2n = flow(REMOTE_BE, 8080, NODE4, 40001, TCP);
    let rev = fx.ct_get(&ct_key(b2n, abi::CT_REVERSE)).expect("reverse entry keyed backend -> node");
    assert_eq!((rev.addr1, u16::from_be(rev.port1_be), rev.addr2, u16::from_be(rev.port2_be)), (Addr::from(NODE4), 30082, Addr::from(CLIENT), 40001));

    let (verdict, out) = fx.ingress(&packet(b2n, b"reply"));
    assert_eq!(verdict, TC_ACT_OK, "reverse-translated for forwarding, FIB miss -> stack");
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 30082, CLIENT, 40001, TCP));
    assert_eq!(seen.payload, b"reply");

    // Egress leaves SNATed replies to ingress.
    let b2n_pkt = packet(b2n, b"x");
    assert_eq!(fx.egress(&b2n_pkt), (TC_ACT_UNSPEC, b2n_pkt.clone()));

    // A second client with the same source port gets another SNAT port to the same backend.
    let other = flow(Ipv4Addr::new(198, 51, 100, 21), 40001, NODE4, 30082, TCP);
    let (verdict, out) = fx.ingress(&packet(other, b""));
    assert_eq!(verdict, TC_ACT_OK);
    let seen = parse(&out);
    assert_eq!((seen.flow.src, seen.flow.dst, seen.flow.dport), (IpAddr::from(NODE4), IpAddr::from(REMOTE_BE), 8080));
    assert_ne!(seen.flow.sport, 40001, "SNAT port collides with the first flow");
    assert!((abi::SNAT_PORT_MIN..=abi::SNAT_PORT_MAX).contains(&seen.flow.sport), "SNAT port {}", seen.flow.sport);
    let (_, out) = fx.ingress(&packet(seen.flow.reply(), b""));
    assert_eq!(parse(&out).flow, other.reply(), "the second flow's reply goes to the second client");

    // The first client's port towards another frontend of the same backend is another flow:
    // it must get its own SNAT port, or the first flow's replies would come back from the
    // second frontend (seen as rare timeouts when clients reuse ports across Services).
    let third = flow(CLIENT, 40001, Ipv4Addr::new(10, 96, 0, 82), 80, TCP);
    let seen3 = parse(&fx.ingress(&packet(third, b"")).1);
    assert_eq!(seen3.flow.dst, IpAddr::from(REMOTE_BE));
    assert_ne!(seen3.flow.sport, 40001, "two flows share one SNAT tuple");
    let (_, out) = fx.ingress(&packet(b2n, b"again"));
    assert_eq!(parse(&out).flow, flow(NODE4, 30082, CLIENT, 40001, TCP), "the first flow's replies keep their frontend");
    let (_, out) = fx.ingress(&packet(seen3.flow.reply(), b""));
    assert_eq!(parse(&out).flow, third.reply());

    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 3), (Counter::NpReverse, 4), (Counter::NpFibFail, 7)]);
}

#[test]
fn a_flow_reclaims_its_reverse_entry_from_a_later_flow_on_the_same_client_port() {
    skip_unless_runnable!("reverse_reclaim");
    let fx = Fixture::new("reclaim", false);
    // Two frontends of one local backend, one client port: at the backend both flows are the
    // same tuple, so the reverse entry can hold only one of them at a time.
    let a = flow(CLIENT, 45555, NODE4, 30081, TCP);
    let b = flow(CLIENT, 45555, Ipv4Addr::new(10, 96, 0, 81), 80, TCP);
    let (_, out) = fx.ingress(&packet(a, b"a"));
    let to_backend = parse(&out).flow;
    assert_eq!(to_backend, flow(CLIENT, 45555, LOCAL_BE, 8080, TCP));
    fx.ingress(&packet(b, b"b"));
    // Flow a sends again (its earlier connection ended; the client reused the port for it).
    fx.ingress(&packet(a, b"a again"));
    let (_, out) = fx.egress(&packet(to_backend.reply(), b"reply"));
    assert_eq!(parse(&out).flow, a.reply(), "the reply must come from the frontend flow a used");
}

#[test]
fn a_closed_flows_snat_port_goes_to_a_new_flow_only_when_no_port_is_free() {
    skip_unless_runnable!("snat_closed_reuse");
    let fx = Fixture::new("snatreuse", false);
    let a = flow(CLIENT, 40001, NODE4, 30082, TCP);
    assert_eq!(parse(&fx.ingress(&tcp_segment(a, SYN, b"")).1).flow, flow(NODE4, 40001, REMOTE_BE, 8080, TCP));
    // Every other port to that backend is held by a flow still open (long-lived connections
    // through another frontend), so flow a's port is the only candidate left.
    let other = Ipv4Addr::new(198, 51, 100, 99);
    fx.ct_put((abi::SNAT_PORT_MIN..=abi::SNAT_PORT_MAX).map(|port| (ct_key(flow(REMOTE_BE, 8080, NODE4, port, TCP), abi::CT_REVERSE), held_by(other, port, abi::CT_F_SNAT, 0))));
    let b = flow(Ipv4Addr::new(198, 51, 100, 21), 40001, NODE4, 30082, TCP);
    assert_eq!(fx.ingress(&tcp_segment(b, SYN, b"")).0, TC_ACT_SHOT, "no free SNAT port while flow a is open");
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 1);

    // Flow a closes: FIN from the client, FIN from the backend. Both entries record it.
    fx.ingress(&tcp_segment(a, FIN_ACK, b""));
    let b2n = flow(REMOTE_BE, 8080, NODE4, 40001, TCP);
    assert_eq!(parse(&fx.ingress(&tcp_segment(b2n, FIN_ACK, b"")).1).flow, a.reply());
    assert_eq!(fx.ct_get(&ct_key(a, abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_CLOSED);
    assert_eq!(fx.ct_get(&ct_key(b2n, abi::CT_REVERSE)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_CLOSED);

    // Now flow b gets the closed flow's port, and the backend's replies go to b.
    assert_eq!(parse(&fx.ingress(&tcp_segment(b, SYN, b"")).1).flow, flow(NODE4, 40001, REMOTE_BE, 8080, TCP));
    assert_eq!(parse(&fx.ingress(&tcp_segment(b2n, ACK, b"")).1).flow, b.reply());
    // Flow a's last ACK still reaches the backend, but must not take the port back from b.
    fx.ingress(&tcp_segment(a, ACK, b""));
    assert_eq!(parse(&fx.ingress(&tcp_segment(b2n, ACK, b"x")).1).flow, b.reply(), "a closed flow reclaimed its SNAT port");
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 1);
}

/// A reverse entry as a flow from `client` (same port) through another frontend would hold it.
fn held_by(client: Ipv4Addr, port: u16, flags: u8, epoch: u8) -> CtValue {
    CtValue { addr1: Addr::from(NODE4), addr2: Addr::from(client), port1_be: 30099u16.to_be(), port2_be: port.to_be(), rev_nat_id: 1, flags, epoch }
}

#[test]
fn a_udp_flow_idle_for_two_epochs_is_over_and_its_snat_port_can_go_to_a_new_flow() {
    skip_unless_runnable!("udp_idle");
    let fx = Fixture::new("udpidle", false);
    let a = flow(CLIENT, 5300, NODE4, 30053, UDP);
    assert_eq!(parse(&fx.ingress(&packet(a, b"q")).1).flow, flow(NODE4, 5300, REMOTE_BE, 5353, UDP));
    let (fk, rk) = (ct_key(a, abi::CT_FORWARD), ct_key(flow(REMOTE_BE, 5353, NODE4, 5300, UDP), abi::CT_REVERSE));
    let now = fx.ct_get(&fk).unwrap().epoch;
    assert_ne!(now, 0, "a UDP entry carries its epoch");
    // An entry from before epochs (0) is fresh: the flow goes on, and gets stamped.
    let mut v = fx.ct_get(&fk).unwrap();
    v.epoch = 0;
    fx.ct_put([(fk, v)]);
    fx.ingress(&packet(a, b"q2"));
    assert_eq!(fx.counter(Counter::NpNewFlow), 1);
    assert_ne!(fx.ct_get(&fk).unwrap().epoch, 0);
    // Every other port to that backend is held by fresh UDP flows: a new client is dropped.
    let other = Ipv4Addr::new(198, 51, 100, 99);
    fx.ct_put((abi::SNAT_PORT_MIN..=abi::SNAT_PORT_MAX).map(|port| (ct_key(flow(REMOTE_BE, 5353, NODE4, port, UDP), abi::CT_REVERSE), held_by(other, port, abi::CT_F_SNAT, now))));
    let b = flow(Ipv4Addr::new(198, 51, 100, 21), 5300, NODE4, 30053, UDP);
    assert_eq!(fx.ingress(&packet(b, b"q")).0, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 1);
    // Flow a goes quiet for two epochs: its port goes to b, and b gets the replies.
    let timeout = abi::CT_UDP_TIMEOUT_EPOCHS;
    let idle = if now.wrapping_sub(timeout) == 0 { now.wrapping_sub(timeout + 1) } else { now.wrapping_sub(timeout) };
    let (mut fv, mut rv) = (fx.ct_get(&fk).unwrap(), fx.ct_get(&rk).unwrap());
    (fv.epoch, rv.epoch) = (idle, idle);
    fx.ct_put([(fk, fv), (rk, rv)]);
    assert_eq!(parse(&fx.ingress(&packet(b, b"q")).1).flow, flow(NODE4, 5300, REMOTE_BE, 5353, UDP));
    let reply = packet(flow(REMOTE_BE, 5353, NODE4, 5300, UDP), b"a");
    assert_eq!(parse(&fx.ingress(&reply).1).flow, b.reply());
    // a speaks again: a new flow (no port is free here, so it is dropped), never b's port.
    assert_eq!(fx.ingress(&packet(a, b"q3")).0, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
    assert_eq!(parse(&fx.ingress(&reply).1).flow, b.reply(), "an idle flow took its port back");
}

#[test]
fn a_syn_on_a_closed_flows_tuple_is_a_new_flow() {
    skip_unless_runnable!("syn_after_close");
    let fx = Fixture::new("synclose", false);
    let a = flow(CLIENT, 40002, NODE4, 30082, TCP);
    fx.ingress(&tcp_segment(a, SYN, b""));
    // An RST closes the flow at once (both sides).
    let b2n = flow(REMOTE_BE, 8080, NODE4, 40002, TCP);
    fx.ingress(&tcp_segment(b2n, 0x14, b""));
    assert_eq!(fx.ct_get(&ct_key(a, abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_CLOSED);
    // The client reuses its port: a new flow, counted as one, with its entries open again.
    fx.ingress(&tcp_segment(a, SYN, b""));
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
    assert_eq!(fx.ct_get(&ct_key(a, abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT);
    // Without a close, a SYN retransmission stays the same flow.
    fx.ingress(&tcp_segment(a, SYN, b""));
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
}

#[test]
fn conntrack_keeps_a_flow_on_its_backend_among_several() {
    skip_unless_runnable!("conntrack_reuse");
    let fx = Fixture::new("ct", false);
    let backends: Vec<IpAddr> = (10..18).map(|i| IpAddr::from(Ipv4Addr::new(10, 244, 2, i))).collect();

    let c2f = flow(CLIENT, 41000, NODE4, 30083, TCP);
    let first = parse(&fx.ingress(&packet(c2f, b"")).1).flow;
    assert!(backends.contains(&first.dst), "{first:?}");
    for i in 0..20 {
        let (verdict, out) = fx.ingress(&packet(c2f, format!("segment {i}").as_bytes()));
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(parse(&out).flow, first, "packet {i} of the flow moved");
    }
    assert_eq!(fx.counter(Counter::NpNewFlow), 1);
    assert_eq!(fx.counter(Counter::NpForward), 20);

    // New flows do spread (all 40 on one backend of 8 would be a 1 in 8^39 accident).
    let mut seen = std::collections::BTreeSet::new();
    for port in 42000..42040 {
        seen.insert(parse(&fx.ingress(&packet(flow(CLIENT, port, NODE4, 30083, TCP), b"")).1).flow.dst);
    }
    assert!(seen.len() >= 3, "40 flows reached only {seen:?}");
    assert!(seen.iter().all(|b| backends.contains(b)));
    assert_eq!(fx.counter(Counter::NpNewFlow), 41);
}

#[test]
fn udp_nodeport_to_a_remote_backend_and_back() {
    skip_unless_runnable!("udp_nodeport");
    let fx = Fixture::new("udp", false);
    let c2f = flow(CLIENT, 5000, NODE4, 30053, UDP);

    let (verdict, out) = fx.ingress(&packet(c2f, b"query"));
    assert_eq!(verdict, TC_ACT_OK);
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 5000, REMOTE_BE, 5353, UDP));
    assert_ne!(seen.l4_csum, 0);
    assert_eq!(seen.payload, b"query");

    let (verdict, out) = fx.ingress(&packet(seen.flow.reply(), b"answer"));
    assert_eq!(verdict, TC_ACT_OK);
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 30053, CLIENT, 5000, UDP));
    assert_eq!(seen.payload, b"answer");

    // UDP over IPv4 without a checksum must stay without one (not become a wrong one).
    let c2f = flow(CLIENT, 5001, NODE4, 30053, UDP);
    let pkt = frame(MAC_NODE, MAC_CLIENT, c2f.src, c2f.dst, UDP, &l4(&c2f, b"nocsum", true));
    let (verdict, out) = fx.ingress(&pkt);
    assert_eq!(verdict, TC_ACT_OK);
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 5001, REMOTE_BE, 5353, UDP));
    assert_eq!(seen.l4_csum, 0);
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
    assert_eq!(fx.counter(Counter::NpReverse), 1);

    // The backend is removed: the agent forgets its UDP flows (both directions), so the
    // client's next datagram is balanced anew instead of following a dead entry.
    let fwd_key = ct_key(flow(CLIENT, 5000, NODE4, 30053, UDP), abi::CT_FORWARD);
    assert!(fx.ct_get(&fwd_key).is_some());
    let removed = sluice_datapath::conntrack::forget_udp_backends(&fx.pins.0, &[(Addr::from(REMOTE_BE), 5353)]).unwrap();
    assert_eq!(removed, 4, "forward and reverse entries of both flows");
    assert!(fx.ct_get(&fwd_key).is_none());
    assert_eq!(sluice_datapath::conntrack::forget_udp_backends(&fx.pins.0, &[(Addr::from(REMOTE_BE), 8080)]).unwrap(), 0);
}

#[test]
fn udp_snat_avoids_the_nodes_own_ports_and_leaves_their_replies_to_them() {
    skip_unless_runnable!("udp_node_owns");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("udpown", false);
    route_to_backends();
    sh(&["ip", "addr", "add", "172.30.0.11/32", "dev", "lo"]);
    // A process of the node has UDP port 5100 (bound, not connected): a reply to it would reach
    // that socket, so a client on port 5100 gets another SNAT port.
    let bound = std::net::UdpSocket::bind((NODE4, 5100)).unwrap();
    let seen = parse(&fx.ingress(&packet(flow(CLIENT, 5100, NODE4, 30053, UDP), b"q")).1).flow;
    assert_eq!((seen.src, seen.dst), (IpAddr::from(NODE4), IpAddr::from(REMOTE_BE)));
    assert_ne!(seen.sport, 5100, "SNAT took a port a node socket holds");
    drop(bound);
    // A NAT flow on port 5200; then a node process talks to the same backend from that port.
    // Its connected socket owns the tuple: the replies are its own, not the NAT flow's.
    let c2f = flow(CLIENT, 5200, NODE4, 30053, UDP);
    assert_eq!(parse(&fx.ingress(&packet(c2f, b"q")).1).flow, flow(NODE4, 5200, REMOTE_BE, 5353, UDP));
    let reply = packet(flow(REMOTE_BE, 5353, NODE4, 5200, UDP), b"a");
    assert_eq!(parse(&fx.ingress(&reply).1).flow, c2f.reply(), "a NAT reply while no node socket has the port");
    let own = std::net::UdpSocket::bind((NODE4, 5200)).unwrap();
    own.connect((REMOTE_BE, 5353)).unwrap();
    assert_eq!(fx.ingress(&reply), (TC_ACT_UNSPEC, reply.clone()), "the node's connected socket owns the tuple");
}

#[test]
fn ipv6_tcp_nodeport_to_a_remote_backend_and_back() {
    skip_unless_runnable!("ipv6_nodeport");
    let fx = Fixture::new("v6", false);
    let c2f = flow(CLIENT6, 42000, NODE6, 30084, TCP);

    let (verdict, out) = fx.ingress(&packet(c2f, b"GET /"));
    assert_eq!(verdict, TC_ACT_OK);
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE6, 42000, REMOTE_BE6, 8080, TCP));
    assert_eq!(seen.payload, b"GET /");

    let (verdict, out) = fx.ingress(&packet(seen.flow.reply(), b"200 OK"));
    assert_eq!(verdict, TC_ACT_OK);
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE6, 30084, CLIENT6, 42000, TCP));
    assert_eq!(seen.payload, b"200 OK");

    // A v6 packet to the v4 NodePort's port on the v6 address is no frontend: untouched.
    let stray = packet(flow(CLIENT6, 42001, NODE6, 30082, TCP), b"");
    assert_eq!(fx.ingress(&stray), (TC_ACT_UNSPEC, stray.clone()));
    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpReverse, 1), (Counter::NpFibFail, 2)]);
}

/// Parses an ICMPv4 error frame, checking the outer IP, ICMP and inner IP checksums.
/// Returns (outer src, outer dst, type, code, rest, inner flow).
fn parse_icmp4_error(pkt: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, u8, [u8; 4], Flow) {
    let ip = &pkt[14..];
    let (src, dst, proto, hl) = parse_ip(ip, "outer header");
    assert_eq!(proto, ICMP);
    let m = &ip[hl..];
    assert_eq!(csum_fold(csum_add(0, m)), 0, "ICMP checksum is wrong");
    let inner = &m[8..];
    let (isrc, idst, iproto, ihl) = parse_ip(inner, "quoted header");
    let ports = &inner[ihl..];
    let f = Flow { src: isrc, sport: u16::from_be_bytes([ports[0], ports[1]]), dst: idst, dport: u16::from_be_bytes([ports[2], ports[3]]), proto: iproto };
    (v4(src), v4(dst), m[0], m[1], m[4..8].try_into().unwrap(), f)
}

#[test]
fn a_frontend_without_endpoints_answers_with_a_port_unreachable_as_kube_proxys_reject() {
    skip_unless_runnable!("reject");
    let fx = Fixture::new("reject", false);
    for (proto, port) in [(TCP, 30095), (UDP, 30096), (TCP, 30097)] {
        let f = flow(CLIENT, 40000, NODE4, port, proto);
        let pkt = if proto == TCP { tcp_segment(f, SYN, b"") } else { packet(f, b"query") };
        let (verdict, out) = fx.ingress(&pkt);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{port}: sent back out; counters {:?}", fx.counters());
        assert_eq!((&out[0..6], &out[6..12]), (&MAC_CLIENT[..], &MAC_NODE[..]), "back to the sender's MAC");
        let (src, dst, typ, code, _, quoted) = parse_icmp4_error(&out);
        assert_eq!((src, dst, typ, code), (NODE4, CLIENT, 3, 3), "{port}: port unreachable from the frontend");
        assert_eq!(quoted, f, "{port}: quotes what the client sent");
        assert_eq!(out.len(), 14 + 20 + 8 + 20 + 8);
    }
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 3);
    let f6 = flow(CLIENT6, 40001, NODE6, 30098, TCP);
    let (verdict, out) = fx.ingress(&tcp_segment(f6, SYN, b""));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (src, dst, typ, _, quoted) = parse_icmp6_error(&out);
    assert_eq!((src, dst, typ, out[14 + 40 + 1]), (NODE6, CLIENT6, 1, 4), "ICMPv6 port unreachable");
    assert_eq!(quoted, f6);
    // externalTrafficPolicy Local with endpoints only on other nodes still drops, as kube-proxy.
    let (verdict, _) = fx.ingress(&tcp_segment(flow(CLIENT, 40002, NODE4, 30085, TCP), SYN, b""));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 4);
}

#[test]
fn xdp_leaves_the_reject_to_tc() {
    skip_unless_runnable!("reject_xdp");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("reject-xdp", true);
    route_to_backends();
    route_to_clients();
    let syn = tcp_segment(flow(CLIENT, 40003, NODE4, 30095, TCP), SYN, b"");
    assert_eq!(fx.xdp(&syn), (XDP_PASS, syn.clone()));
    assert_eq!(fx.ingress(&syn).0, TC_ACT_REDIRECT);
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 1);
}

#[test]
fn icmp_fragmentation_needed_from_a_remote_backend_is_translated() {
    skip_unless_runnable!("icmp_error");
    let fx = Fixture::new("icmp", false);
    // Through the LoadBalancer address, so the frontend differs from the SNAT address.
    let c2f = flow(CLIENT_IN_RANGE, 43000, LB_REMOTE, 80, TCP);
    let (_, out) = fx.ingress(&packet(c2f, &[0x55; 64]));
    let snated = parse(&out).flow;
    assert_eq!(snated, flow(NODE4, 43000, REMOTE_BE, 8080, TCP));

    // The backend says the SNATed packet was too big; Linux quotes as much as fits.
    let quoted = &out[14..];
    let mtu = [0, 0, 0x05, 0x78]; // 1400
    let err = icmp4_error(REMOTE_BE, NODE4, 3, 4, mtu, quoted);
    let (verdict, out) = fx.ingress(&err);
    assert_eq!(verdict, TC_ACT_OK, "translated towards the client, FIB miss -> stack");
    let (src, dst, typ, code, rest, inner) = parse_icmp4_error(&out);
    assert_eq!((src, dst), (LB_REMOTE, CLIENT_IN_RANGE), "an error from the backend itself comes from the frontend");
    assert_eq!((typ, code, rest), (3, 4, mtu));
    assert_eq!(inner, c2f, "the quoted packet is what the client sent");
    assert_eq!(out.len(), err.len());
    assert_eq!(&out[14 + 20 + 8 + 20 + 20..], &[0x55; 64], "quoted payload untouched");
    assert_eq!(fx.counter(Counter::NpIcmpError), 1);

    // From a router on the way: the outer source stays the router.
    let router = Ipv4Addr::new(10, 244, 2, 1);
    let err = icmp4_error(router, NODE4, 3, 4, mtu, &quoted[..28]);
    let (verdict, out) = fx.ingress(&err);
    assert_eq!(verdict, TC_ACT_OK);
    let (src, dst, _, _, _, inner) = parse_icmp4_error(&out);
    assert_eq!((src, dst, inner), (router, CLIENT_IN_RANGE, c2f));
    assert_eq!(fx.counter(Counter::NpIcmpError), 2);

    // An error quoting a flow nobody tracks is left alone.
    let mut unknown = quoted[..28].to_vec();
    unknown[20..22].copy_from_slice(&9999u16.to_be_bytes());
    let err = icmp4_error(REMOTE_BE, NODE4, 3, 4, mtu, &unknown);
    assert_eq!(fx.ingress(&err), (TC_ACT_UNSPEC, err.clone()));
    assert_eq!(fx.counter(Counter::NpIcmpError), 2);
}

/// An ICMPv6 error from `src` to `dst` quoting `quoted` (an IPv6 packet without Ethernet header),
/// with its pseudo-header checksum.
fn icmp6_error(src: Ipv6Addr, dst: Ipv6Addr, typ: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, 0, 0, 0];
    m.extend(rest);
    m.extend(quoted);
    let c = csum_fold(csum_add(csum_add(0, &pseudo_header(src.into(), dst.into(), 58, m.len())), &m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    frame(MAC_NODE, MAC_BACKEND, src.into(), dst.into(), 58, &m)
}

/// Parses an ICMPv6 error frame, checking the checksum over the pseudo-header of the addresses
/// it now carries. Returns (outer src, outer dst, type, rest, inner flow).
fn parse_icmp6_error(pkt: &[u8]) -> (Ipv6Addr, Ipv6Addr, u8, [u8; 4], Flow) {
    let ip = &pkt[14..];
    assert_eq!(ip[6], 58, "next header ICMPv6");
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let m = &ip[40..];
    let sum = csum_add(csum_add(0, &pseudo_header(src.into(), dst.into(), 58, m.len())), m);
    assert_eq!(csum_fold(sum), 0, "ICMPv6 checksum is wrong");
    let inner = &m[8..];
    let isrc = Ipv6Addr::from(<[u8; 16]>::try_from(&inner[8..24]).unwrap());
    let idst = Ipv6Addr::from(<[u8; 16]>::try_from(&inner[24..40]).unwrap());
    let ports = &inner[40..];
    let f = Flow {
        src: isrc.into(),
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dst: idst.into(),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        proto: inner[6],
    };
    (src, dst, m[0], m[4..8].try_into().unwrap(), f)
}

#[test]
fn icmpv6_packet_too_big_from_a_remote_backend_is_translated() {
    skip_unless_runnable!("icmp6_error");
    let fx = Fixture::new("icmp6", false);
    let c2f = flow(CLIENT6, 43100, NODE6, 30084, TCP);
    let (_, out) = fx.ingress(&packet(c2f, &[0x66; 32]));
    let snated = parse(&out).flow;
    assert_eq!(snated, flow(NODE6, 43100, REMOTE_BE6, 8080, TCP));

    let mtu = [0, 0, 0x05, 0x00]; // 1280
    let err = icmp6_error(REMOTE_BE6, NODE6, 2, mtu, &out[14..]);
    let (verdict, out) = fx.ingress(&err);
    assert_eq!(verdict, TC_ACT_OK, "translated towards the client, FIB miss -> stack");
    let (src, dst, typ, rest, inner) = parse_icmp6_error(&out);
    assert_eq!((src, dst), (NODE6, CLIENT6), "from the frontend, to the client");
    assert_eq!((typ, rest), (2, mtu));
    assert_eq!(inner, c2f, "the quoted packet is what the client sent");
    assert_eq!(fx.counter(Counter::NpIcmpError), 1);

    // Neighbour discovery and other ICMPv6 is none of the datapath's business.
    let ns = icmp6_error(REMOTE_BE6, NODE6, 135, [0; 4], &[0u8; 16]);
    assert_eq!(fx.ingress(&ns), (TC_ACT_UNSPEC, ns.clone()));
}

#[test]
fn icmp_unreachable_from_a_local_backend_is_translated_on_egress() {
    skip_unless_runnable!("icmp_error_local");
    let fx = Fixture::new("icmp-local", false);
    let c2f = flow(CLIENT, 44000, NODE4, 30081, TCP);
    let (_, out) = fx.ingress(&packet(c2f, b"ping"));
    assert_eq!(parse(&out).flow, flow(CLIENT, 44000, LOCAL_BE, 8080, TCP));
    // "Communication administratively prohibited" from the local backend, quoting what it got.
    let err = icmp4_error(LOCAL_BE, CLIENT, 3, 13, [0; 4], &out[14..]);
    let (verdict, out) = fx.egress(&err);
    assert_eq!(verdict, TC_ACT_OK);
    let (src, dst, typ, code, _, inner) = parse_icmp4_error(&out);
    assert_eq!((src, dst, typ, code), (NODE4, CLIENT, 3, 13));
    assert_eq!(inner, c2f);
    // Ingress does not touch errors about local flows.
    assert_eq!(fx.ingress(&err), (TC_ACT_UNSPEC, err.clone()));
    assert_eq!(fx.counter(Counter::NpIcmpError), 1);
}

#[test]
fn external_traffic_policy_local_without_a_local_backend_drops() {
    skip_unless_runnable!("etp_local");
    let mut fx = Fixture::new("etp", false);
    for (i, dst) in [(NODE4, 30085), (LB_ETP_LOCAL, 80)].into_iter().enumerate() {
        let (verdict, _) = fx.ingress(&packet(flow(CLIENT, 45000, dst.0, dst.1, TCP), b""));
        assert_eq!(verdict, TC_ACT_SHOT, "{dst:?}");
        assert_eq!(fx.counter(Counter::NpDropLocalNone), i as u64 + 1);
    }
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 0);
    assert!(fx.ct().is_empty(), "a dropped packet must not create conntrack state");

    // XDP leaves it to tc without acceleration, and drops it itself with.
    let pkt = packet(flow(CLIENT, 45001, LB_ETP_LOCAL, 80, TCP), b"");
    assert_eq!(fx.xdp(&pkt), (XDP_PASS, pkt.clone()));
    fx.config(true);
    assert_eq!(fx.xdp(&pkt).0, XDP_DROP);
    assert_eq!(fx.counter(Counter::NpDropLocalNone), 3);
}

#[test]
fn xdp_drops_sources_outside_load_balancer_source_ranges() {
    skip_unless_runnable!("xdp_source_ranges");
    let fx = Fixture::new("ranges", false);
    let outside = packet(flow(CLIENT_OUT_OF_RANGE, 46000, LB_REMOTE, 80, TCP), b"");
    assert_eq!(fx.xdp(&outside).0, XDP_DROP);
    assert_eq!(fx.counter(Counter::XdpDropSourceRange), 1);

    let inside = packet(flow(CLIENT_IN_RANGE, 46000, LB_REMOTE, 80, TCP), b"");
    assert_eq!(fx.xdp(&inside), (XDP_PASS, inside.clone()), "inside the range, no acceleration: untouched");
    // Another address in the /24.
    let inside2 = packet(flow(Ipv4Addr::new(192, 0, 2, 254), 46000, LB_REMOTE, 80, TCP), b"");
    assert_eq!(fx.xdp(&inside2).0, XDP_PASS);
    // The ranges belong to the LoadBalancer frontend, not to the service's NodePort.
    let np = packet(flow(CLIENT_OUT_OF_RANGE, 46001, NODE4, 30090, TCP), b"");
    assert_eq!(fx.xdp(&np).0, XDP_PASS);
    assert_eq!(fx.counters(), vec![(Counter::XdpDropSourceRange, 1)]);
}

#[test]
fn xdp_drops_unknown_ports_on_load_balancer_addresses() {
    skip_unless_runnable!("xdp_unknown_port");
    let fx = Fixture::new("unknown", false);
    assert_eq!(fx.xdp(&packet(flow(CLIENT_IN_RANGE, 47000, LB_REMOTE, 81, TCP), b"")).0, XDP_DROP);
    // Port 80 is TCP only.
    assert_eq!(fx.xdp(&packet(flow(CLIENT_IN_RANGE, 47000, LB_REMOTE, 80, UDP), b"")).0, XDP_DROP);
    assert_eq!(fx.counter(Counter::XdpDropUnknownPort), 2);
    // The node's own address is not a LoadBalancer address: everything else on it passes.
    let ssh = packet(flow(CLIENT, 47000, NODE4, 22, TCP), b"");
    assert_eq!(fx.xdp(&ssh), (XDP_PASS, ssh.clone()));
    assert_eq!(fx.counters(), vec![(Counter::XdpDropUnknownPort, 2)]);
}

#[test]
fn xdp_acceleration_translates_remote_flows_and_passes_local_ones() {
    skip_unless_runnable!("xdp_acceleration");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("accel", true);

    // No route to the backend yet (FIB miss): XDP cannot send the packet itself, and a
    // translated packet handed to the stack would carry the node's own address as source and be
    // dropped as martian. So XDP records the flow and leaves the packet untouched ...
    let c2f = flow(CLIENT_IN_RANGE, 48000, LB_REMOTE, 80, TCP);
    let first = packet(c2f, b"first");
    assert_eq!(fx.xdp(&first), (XDP_PASS, first.clone()));
    assert_eq!(fx.counter(Counter::XdpForward), 0, "counted only when XDP sends it itself");
    assert_eq!(fx.counter(Counter::NpFibFail), 1);
    // ... and tc translates it from that entry (resolving the neighbour on its way out).
    let (_, out) = fx.ingress(&first);
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 48000, REMOTE_BE, 8080, TCP));
    assert_eq!(seen.payload, b"first");
    // The reply has no route to the client either: untouched by XDP, reversed by tc.
    let reply = packet(seen.flow.reply(), b"reply");
    assert_eq!(fx.xdp(&reply), (XDP_PASS, reply.clone()));
    assert_eq!(parse(&fx.ingress(&reply).1).flow, c2f.reply());

    // With routes, the same flow's next packet and its reply are translated in XDP itself.
    route_to_backends();
    route_to_clients();
    let (verdict, out) = fx.xdp(&packet(c2f, b"second"));
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    assert_eq!(parse(&out).flow, seen.flow);
    assert_eq!(parse(&out).payload, b"second");
    assert_eq!(fx.counter(Counter::XdpForward), 1);
    // tc, seeing the already translated packet, leaves it alone.
    assert_eq!(fx.ingress(&out), (TC_ACT_UNSPEC, out.clone()));
    let (verdict, out) = fx.xdp(&packet(seen.flow.reply(), b"reply"));
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    assert_eq!(parse(&out).flow, c2f.reply());
    assert_eq!(fx.counter(Counter::XdpReverse), 1);

    // UDP without checksum stays without one in XDP as well.
    let u = flow(CLIENT, 5002, NODE4, 30053, UDP);
    let (_, out) = fx.xdp(&frame(MAC_NODE, MAC_CLIENT, u.src, u.dst, UDP, &l4(&u, b"x", true)));
    let seen = parse(&out);
    assert_eq!((seen.flow, seen.l4_csum), (flow(NODE4, 5002, REMOTE_BE, 5353, UDP), 0));
    // ... and with one, it is patched correctly (parse checks it).
    let (_, out) = fx.xdp(&packet(flow(CLIENT, 5003, NODE4, 30053, UDP), b"y"));
    assert_eq!(parse(&out).flow, flow(NODE4, 5003, REMOTE_BE, 5353, UDP));

    // IPv6 in XDP.
    let c6 = flow(CLIENT6, 48001, NODE6, 30084, TCP);
    let (_, out) = fx.xdp(&packet(c6, b"v6"));
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE6, 48001, REMOTE_BE6, 8080, TCP));
    let (_, out) = fx.xdp(&packet(seen.flow.reply(), b"v6 reply"));
    assert_eq!(parse(&out).flow, c6.reply());

    // A local backend is tc's: XDP passes the packet untouched, having recorded its choice.
    let local_flow = flow(CLIENT_IN_RANGE, 48002, LB_LOCAL, 80, TCP);
    let local = packet(local_flow, b"local");
    assert_eq!(fx.xdp(&local), (XDP_PASS, local.clone()));
    assert_eq!(fx.counter(Counter::XdpPassLocal), 1);
    let fwd = fx.ct_get(&ct_key(local_flow, abi::CT_FORWARD)).expect("XDP records the local backend it picked");
    assert_eq!((fwd.addr1, fwd.flags), (Addr::from(LOCAL_BE), abi::CT_F_LOCAL));
    // tc then does the DNAT to that backend.
    let (verdict, out) = fx.ingress(&local);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(parse(&out).flow, flow(CLIENT_IN_RANGE, 48002, LOCAL_BE, 8080, TCP));
    // Once tc owns the flow, XDP keeps passing it.
    assert_eq!(fx.xdp(&local), (XDP_PASS, local.clone()));
    assert_eq!(fx.counter(Counter::XdpPassLocal), 1);
}

#[test]
fn xdp_takes_only_the_clients_own_port_as_snat_port_and_leaves_the_search_and_closes_to_tc() {
    skip_unless_runnable!("xdp_snat_search");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("xdpsearch", true);
    route_to_backends();
    route_to_clients();
    let a = flow(CLIENT_IN_RANGE, 48100, LB_REMOTE, 80, TCP);
    let (verdict, out) = fx.xdp(&tcp_segment(a, SYN, b""));
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    assert_eq!(parse(&out).flow, flow(NODE4, 48100, REMOTE_BE, 8080, TCP));
    // Another client on the same port: that SNAT port is taken, so XDP hands the packet on
    // untouched and records nothing; tc finds another port.
    let b = flow(Ipv4Addr::new(192, 0, 2, 8), 48100, LB_REMOTE, 80, TCP);
    let syn = tcp_segment(b, SYN, b"");
    assert_eq!(fx.xdp(&syn), (XDP_PASS, syn.clone()));
    assert!(fx.ct_get(&ct_key(b, abi::CT_FORWARD)).is_none());
    let seen = parse(&fx.ingress(&syn).1).flow;
    assert_eq!((seen.src, seen.dst), (IpAddr::from(NODE4), IpAddr::from(REMOTE_BE)));
    assert_ne!(seen.sport, 48100);
    // A FIN is tc's to see, so the close is recorded.
    let fin = tcp_segment(a, FIN_ACK, b"");
    assert_eq!(fx.xdp(&fin), (XDP_PASS, fin.clone()));
    fx.ingress(&fin);
    assert_eq!(fx.ct_get(&ct_key(a, abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_FIN_FWD);
}

/// Waits while the datapath's conntrack epoch (2^CT_EPOCH_SHIFT ns of CLOCK_MONOTONIC_COARSE, about 69 s)
/// is less than 2 s from its end, so a test that expects one epoch throughout gets it.
fn away_from_an_epoch_edge() {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let epoch = 1u64 << abi::CT_EPOCH_SHIFT;
    let left = epoch - (ns % epoch);
    if left < 2_000_000_000 {
        std::thread::sleep(std::time::Duration::from_nanos(left + 10_000_000));
    }
}

#[test]
fn xdp_leaves_a_udp_flows_first_reply_of_an_epoch_to_tc_which_stamps_both_entries() {
    skip_unless_runnable!("xdp_udp_epoch");
    if !have_ip() {
        return;
    }
    away_from_an_epoch_edge();
    let fx = Fixture::new("xdpepoch", true);
    route_to_backends();
    route_to_clients();
    let c2f = flow(CLIENT_IN_RANGE, 5400, NODE4, 30053, UDP);
    let (verdict, out) = fx.xdp(&packet(c2f, b"q"));
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    let snated = parse(&out).flow;
    assert_eq!(snated, flow(NODE4, 5400, REMOTE_BE, 5353, UDP));
    let reply = packet(snated.reply(), b"a");
    assert_eq!(fx.xdp(&reply).0, XDP_REDIRECT, "a reply within the epoch stays in XDP");
    // The epoch moves on: the next reply goes to tc, which stamps the reverse and the forward entry.
    let (fk, rk) = (ct_key(c2f, abi::CT_FORWARD), ct_key(snated.reply(), abi::CT_REVERSE));
    let now = fx.ct_get(&rk).unwrap().epoch;
    let before = if now == 1 { 255 } else { now - 1 };
    let (mut fv, mut rv) = (fx.ct_get(&fk).unwrap(), fx.ct_get(&rk).unwrap());
    (fv.epoch, rv.epoch) = (before, before);
    fx.ct_put([(fk, fv), (rk, rv)]);
    assert_eq!(fx.xdp(&reply), (XDP_PASS, reply.clone()));
    let (verdict, out) = fx.ingress(&reply);
    assert_eq!(verdict, TC_ACT_REDIRECT, "counters: {:?}", fx.counters());
    assert_eq!(parse(&out).flow, c2f.reply());
    assert_eq!((fx.ct_get(&fk).unwrap().epoch, fx.ct_get(&rk).unwrap().epoch), (now, now), "both entries stamped");
    assert_eq!(fx.xdp(&reply).0, XDP_REDIRECT, "and XDP takes the replies again");
}

#[test]
fn xdp_acceleration_takes_a_reply_to_a_snat_port_that_is_also_a_node_port_as_a_reply() {
    skip_unless_runnable!("xdp_snat_port_collision");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("collide", true);
    route_to_backends();
    route_to_clients();
    // The client's source port happens to be a NodePort; it is kept as the SNAT port.
    let c2f = flow(CLIENT, 30082, NODE4, 30082, TCP);
    let (verdict, out) = fx.xdp(&packet(c2f, b""));
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    let snated = parse(&out).flow;
    assert_eq!(snated, flow(NODE4, 30082, REMOTE_BE, 8080, TCP));
    // The reply is addressed to NODE4:30082, which is also a frontend.
    let reply = packet(snated.reply(), b"reply");
    let (verdict, out) = fx.xdp(&reply);
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    assert_eq!(parse(&out).flow, c2f.reply(), "the reply was taken for a new flow");
    // tc (replies first) agrees.
    let (verdict, out) = fx.ingress(&reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(parse(&out).flow, c2f.reply());
    assert_eq!(fx.counter(Counter::XdpForward), 1);
}

#[test]
fn xdp_acceleration_keeps_the_split_between_local_and_remote_backends_even() {
    skip_unless_runnable!("xdp_split");
    let fx = Fixture::new("split", true);
    let n = 400;
    let (mut local, mut remote) = (0, 0);
    for port in 0..n {
        let pkt = packet(flow(CLIENT, 20000 + port, NODE4, 30086, TCP), b"");
        let (verdict, out) = fx.xdp(&pkt);
        assert_eq!(verdict, XDP_PASS);
        // What XDP passes untouched, tc ingress gets next.
        let out = if out == pkt { fx.ingress(&pkt).1 } else { out };
        match v4(parse(&out).flow.dst) {
            LOCAL_BE => local += 1,
            REMOTE_BE => remote += 1,
            other => panic!("backend {other}"),
        }
    }
    // Binomial(400, 1/2): 150..250 is 5 standard deviations either way.
    assert!((150..=250).contains(&local), "{local} local vs {remote} remote of {n} flows");
}

#[test]
fn ipv6_snat_address_ending_in_a_zero_word_is_used() {
    skip_unless_runnable!("ipv6_snat_zero_word");
    let mut fx = Fixture::new("v6zero", false);
    let snat = Ipv6Addr::new(0xfd00, 0x30, 0, 1, 0, 0, 0, 0);
    fx.config_with(NODE4, snat, false);
    let (verdict, out) = fx.ingress(&packet(flow(CLIENT6, 42000, NODE6, 30084, TCP), b""));
    assert_eq!(verdict, TC_ACT_OK, "counters: {:?}", fx.counters());
    assert_eq!(parse(&out).flow, flow(snat, 42000, REMOTE_BE6, 8080, TCP));
    // No address configured at all still refuses to SNAT.
    fx.config_with(Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, false);
    assert_eq!(fx.ingress(&packet(flow(CLIENT6, 42001, NODE6, 30084, TCP), b"")).0, TC_ACT_SHOT);
    assert_eq!(fx.ingress(&packet(flow(CLIENT, 42001, NODE4, 30082, TCP), b"")).0, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 2);
}

/// The checker itself: a test that cannot fail proves nothing.
#[test]
fn the_packet_checker_rejects_wrong_checksums() {
    let good = packet(flow(CLIENT, 1, NODE4, 2, TCP), b"abc");
    parse(&good);
    for (what, at) in [("IPv4 header", 14 + 10), ("TCP", 14 + 20 + 16), ("address", 14 + 12), ("port", 14 + 20)] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        assert!(std::panic::catch_unwind(|| parse(&bad)).is_err(), "a corrupted {what} passed");
    }
    let mut bad = packet(flow(CLIENT6, 1, NODE6, 2, UDP), b"abc");
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(std::panic::catch_unwind(|| parse(&bad)).is_err(), "a corrupted UDP/IPv6 payload passed");
    let quoted = &good[14..];
    let err = icmp4_error(REMOTE_BE, NODE4, 3, 4, [0; 4], quoted);
    parse_icmp4_error(&err);
    for at in [14 + 20 + 2, 14 + 20 + 8 + 10, 14 + 20 + 8 + 12] {
        let mut bad = err.clone();
        bad[at] ^= 0x40;
        assert!(std::panic::catch_unwind(|| parse_icmp4_error(&bad)).is_err(), "corrupted byte {at} of an ICMP error passed");
    }
}

// ------------------------------------------------------------------ with a route: redirects

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// In this thread's private namespace: veth s0 (10.244.2.1/24, fd00:244:2::1/64) with permanent
/// neighbours for the remote backends, lo up, forwarding on. Returns (s0's ifindex, s0's MAC).
/// Children inherit the calling thread's namespace, so `ip` configures ours.
fn route_to_backends() -> (u32, [u8; 6]) {
    let mac = "02:00:00:00:02:02";
    for cmd in [
        "ip link set lo up",
        "ip link add s0 address 02:00:00:00:00:11 type veth peer name s1",
        "ip link set s0 up",
        "ip link set s1 up",
        "ip addr add 10.244.2.1/24 dev s0",
        "ip -6 addr add fd00:244:2::1/64 dev s0 nodad",
    ] {
        sh(&cmd.split(' ').collect::<Vec<_>>());
    }
    sh(&["ip", "neigh", "replace", &REMOTE_BE.to_string(), "lladdr", mac, "dev", "s0", "nud", "permanent"]);
    sh(&["ip", "-6", "neigh", "replace", &REMOTE_BE6.to_string(), "lladdr", mac, "dev", "s0", "nud", "permanent"]);
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").unwrap();
    let idx = std::ffi::CString::new("s0").unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(idx.as_ptr()) };
    assert_ne!(ifindex, 0);
    (ifindex, [0x02, 0, 0, 0, 0, 0x11])
}

/// Routes the clients through s0 too (needs `route_to_backends` first), so replies can be sent
/// from XDP.
fn route_to_clients() {
    let mac = "02:00:00:00:00:01";
    for (net, ip) in [("198.51.100.0/24", CLIENT.to_string()), ("192.0.2.0/24", CLIENT_IN_RANGE.to_string())] {
        sh(&["ip", "route", "add", net, "dev", "s0"]);
        sh(&["ip", "neigh", "replace", &ip, "lladdr", mac, "dev", "s0", "nud", "permanent"]);
    }
    sh(&["ip", "-6", "route", "add", "2001:db8::/64", "dev", "s0"]);
    sh(&["ip", "-6", "neigh", "replace", &CLIENT6.to_string(), "lladdr", mac, "dev", "s0", "nud", "permanent"]);
}

fn have_ip() -> bool {
    match Command::new("ip").arg("-V").output() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("iproute2 is required under CI=true: {e}")
        }
        Err(e) => {
            println!("fib_success tests not run: `ip` missing ({e})");
            false
        }
    }
}

#[test]
fn fib_success_redirects_translated_packets_with_next_hop_macs() {
    skip_unless_runnable!("fib_success");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("fib", true);
    let (ifindex, s0_mac) = route_to_backends();
    fx.device_state(ifindex, XdpState::Accelerated);

    let c2f = flow(CLIENT, 49000, NODE4, 30082, TCP);
    let (verdict, out) = fx.ingress(&packet(c2f, b""));
    assert_eq!(verdict, TC_ACT_REDIRECT, "counters: {:?}", fx.counters());
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 49000, REMOTE_BE, 8080, TCP));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, s0_mac), "MACs of the next hop");

    let c6 = flow(CLIENT6, 49001, NODE6, 30084, TCP);
    let (verdict, out) = fx.ingress(&packet(c6, b""));
    assert_eq!(verdict, TC_ACT_REDIRECT, "counters: {:?}", fx.counters());
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE6, 49001, REMOTE_BE6, 8080, TCP));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, s0_mac));

    // XDP: out of another device than the one it came in on (lo) -> redirect ...
    let (verdict, out) = fx.xdp(&packet(flow(CLIENT, 49002, NODE4, 30082, TCP), b""));
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    assert_eq!(parse(&out).flow, flow(NODE4, 49002, REMOTE_BE, 8080, TCP));
    // ... and back out of the device it came in on -> XDP_TX.
    let pkt = packet(flow(CLIENT, 49003, NODE4, 30082, TCP), b"");
    // struct xdp_md: data, data_end (must be the packet's length), data_meta, ingress_ifindex, ...
    let mut xdp_md = [0u8; 24];
    xdp_md[4..8].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
    xdp_md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let (verdict, out) = fx.xdp_ctx(&pkt, Some(&xdp_md));
    assert_eq!(verdict, XDP_TX, "counters: {:?}", fx.counters());
    let seen = parse(&out);
    assert_eq!(seen.flow, flow(NODE4, 49003, REMOTE_BE, 8080, TCP));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, s0_mac));
    assert_eq!(fx.counter(Counter::NpFibFail), 0);
}

#[test]
fn xdp_leaves_remote_flows_to_tc_on_a_device_not_proven() {
    skip_unless_runnable!("xdp_unproven");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("unproven", true);
    route_to_backends();
    route_to_clients();
    for state in [XdpState::Unproven, XdpState::Fallback, XdpState::Failed] {
        fx.device_state(1, state);
        let pkt = packet(flow(CLIENT_IN_RANGE, 48100 + state as u16, LB_REMOTE, 80, TCP), b"");
        assert_eq!(fx.xdp(&pkt), (XDP_PASS, pkt.clone()), "{state:?}: untouched, for tc");
        assert_eq!(parse(&fx.ingress(&pkt).1).flow.dst, IpAddr::from(REMOTE_BE), "{state:?}: tc translates it");
    }
    assert_eq!(fx.counter(Counter::XdpForward), 0);
    // Proven: the same flow's next packet goes out from XDP.
    fx.device_state(1, XdpState::Accelerated);
    let pkt = packet(flow(CLIENT_IN_RANGE, 48100 + XdpState::Failed as u16, LB_REMOTE, 80, TCP), b"");
    assert_eq!(fx.xdp(&pkt).0, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpForward), 1);
}

#[test]
fn a_syn_sent_again_on_a_flow_xdp_created_and_nobody_answered_is_counted() {
    skip_unless_runnable!("xdp_unanswered");
    if !have_ip() {
        return;
    }
    let fx = Fixture::new("unanswered", true);
    route_to_backends();
    route_to_clients();
    let c2f = flow(CLIENT_IN_RANGE, 48200, LB_REMOTE, 80, TCP);
    let syn = tcp_segment(c2f, SYN, b"");
    let (verdict, out) = fx.xdp(&syn);
    assert_eq!(verdict, XDP_REDIRECT, "counters: {:?}", fx.counters());
    let b2n = parse(&out).flow.reply();
    assert_eq!(fx.ct_get(&ct_key(b2n, abi::CT_REVERSE)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_XDP_UNANSWERED);
    // The client sends its SYN again: nothing came back.
    assert_eq!(fx.xdp(&syn).0, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpSynUnanswered), 1);
    // The SYN-ACK: the flow is answered, once.
    assert_eq!(fx.xdp(&tcp_segment(b2n, SYN | 0x10, b"")).0, XDP_REDIRECT);
    assert_eq!(fx.ct_get(&ct_key(b2n, abi::CT_REVERSE)).unwrap().flags, abi::CT_F_SNAT);
    assert_eq!(fx.xdp(&tcp_segment(b2n, SYN | 0x10, b"")).0, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpFlowAnswered), 1);
    // A SYN sent again now (its SYN-ACK was lost on the way back) is not counted, nor is a flow
    // tc created.
    assert_eq!(fx.xdp(&syn).0, XDP_REDIRECT);
    let by_tc = flow(CLIENT_IN_RANGE, 48201, LB_REMOTE, 80, TCP);
    fx.ingress(&tcp_segment(by_tc, SYN, b""));
    assert_eq!(fx.xdp(&tcp_segment(by_tc, SYN, b"")).0, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpSynUnanswered), 1);
}

#[test]
fn the_proof_frame_leaves_the_way_a_translated_flow_does() {
    skip_unless_runnable!("xdp_probe");
    if !have_ip() {
        return;
    }
    let mut fx = Fixture::new("probe", true);
    let (ifindex, s0_mac) = route_to_backends();
    let probe = loader::load_xdp_probe(&mut fx.xdp).expect("loading sluice_xdp_probe");
    let frame = xdp_proof::echo_frame(NODE4.into(), REMOTE_BE.into(), 7, 1);
    // Back out of the device it came in on, addressed to the next hop ...
    let (verdict, out) = sys::prog_test_run(probe.as_fd(), &frame, TestContext::XdpIngress(ifindex), RunMode::Dry).unwrap();
    assert_eq!(verdict, sys::XDP_TX);
    assert_eq!((&out[0..6], &out[6..12]), (&MAC_BACKEND[..], &s0_mac[..]), "MACs of the next hop");
    assert_eq!(&out[12..], &frame[12..], "nothing else changed");
    // ... or redirected out of another one ...
    let (verdict, _) = sys::prog_test_run(probe.as_fd(), &frame, TestContext::XdpIngress(1), RunMode::Dry).unwrap();
    assert_eq!(verdict, sys::XDP_REDIRECT);
    // ... and dropped where XDP finds no way, as a flow would be left to tc.
    let nowhere = xdp_proof::echo_frame(NODE4.into(), "203.0.113.9".parse().unwrap(), 7, 2);
    let (verdict, _) = sys::prog_test_run(probe.as_fd(), &nowhere, TestContext::XdpIngress(ifindex), RunMode::Dry).unwrap();
    assert_eq!(verdict, sys::XDP_DROP);
    let v6 = xdp_proof::echo_frame(NODE6.into(), REMOTE_BE6.into(), 7, 3);
    assert_eq!(sys::prog_test_run(probe.as_fd(), &v6, TestContext::XdpIngress(ifindex), RunMode::Dry).unwrap().0, sys::XDP_TX);
    assert_eq!(fx.counters(), vec![], "the proof counts nothing");
}

// ------------------------------------------------------------------ sluice monitor events

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Fixture {
    fn set_monitor_lease(&self, until_ns: u64) {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_MONITOR)).unwrap();
        let mut lease: aya::maps::Array<MapData, u64> = aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
        lease.set(0, until_ns, 0).unwrap();
    }

    fn drain_events(&self) -> Vec<abi::Event> {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_EVENTS)).unwrap();
        let mut ring = aya::maps::RingBuf::try_from(aya::maps::Map::RingBuf(data)).unwrap();
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            events.push(abi::Event::from_bytes(&item).expect("a whole event"));
        }
        events
    }
}

#[test]
fn monitor_events_are_written_only_while_a_lease_is_held() {
    skip_unless_runnable!("monitor_events");
    let fx = Fixture::new("monitor", false);
    // Nobody listening: decisions leave no trace in the ring.
    fx.ingress(&packet(flow(CLIENT, 41000, NODE4, 30082, TCP), b""));
    fx.xdp(&packet(flow(CLIENT_IN_RANGE, 47000, LB_REMOTE, 81, TCP), b""));
    assert!(fx.drain_events().is_empty(), "events without a monitor");

    fx.set_monitor_lease(monotonic_ns() + 5_000_000_000);
    let before = monotonic_ns();
    fx.ingress(&packet(flow(CLIENT, 41001, NODE4, 30082, TCP), b""));
    fx.xdp(&packet(flow(CLIENT_OUT_OF_RANGE, 46000, LB_REMOTE, 80, TCP), b""));
    fx.xdp(&packet(flow(CLIENT_IN_RANGE, 47001, LB_REMOTE, 81, TCP), b""));
    let events = fx.drain_events();
    assert_eq!(events.len(), 3, "{events:?}");
    let (new_flow, out_of_range, unknown_port) = (events[0], events[1], events[2]);
    assert!(events.iter().all(|e| e.ts_ns >= before), "timestamps from CLOCK_MONOTONIC");

    assert_eq!(new_flow.reason, Counter::NpNewFlow as u32);
    assert_eq!(new_flow.hook, abi::HOOK_TC);
    assert_eq!((new_flow.saddr, u16::from_be(new_flow.sport_be)), (Addr::from(CLIENT), 41001));
    assert_eq!((new_flow.daddr, u16::from_be(new_flow.dport_be)), (Addr::from(NODE4), 30082));
    assert_eq!((new_flow.to_addr, u16::from_be(new_flow.to_port_be)), (Addr::from(REMOTE_BE), 8080));
    assert_ne!(new_flow.rev_nat_id, 0);

    assert_eq!((out_of_range.reason, out_of_range.hook), (Counter::XdpDropSourceRange as u32, abi::HOOK_XDP));
    assert_eq!(out_of_range.saddr, Addr::from(CLIENT_OUT_OF_RANGE));
    assert_ne!(out_of_range.rev_nat_id, 0, "the frontend whose ranges refused it");
    assert_eq!(out_of_range.to_addr, Addr::default());

    assert_eq!(unknown_port.reason, Counter::XdpDropUnknownPort as u32);
    assert_eq!((unknown_port.daddr, u16::from_be(unknown_port.dport_be)), (Addr::from(LB_REMOTE), 81));

    // A lease that ran out (a monitor that died) stops the stream as surely as one cleared.
    fx.set_monitor_lease(monotonic_ns() - 1);
    fx.ingress(&packet(flow(CLIENT, 41002, NODE4, 30082, TCP), b""));
    fx.set_monitor_lease(0);
    fx.ingress(&packet(flow(CLIENT, 41003, NODE4, 30082, TCP), b""));
    assert!(fx.drain_events().is_empty());
    assert_eq!(fx.counter(Counter::MonitorLost), 0);
}

// ------------------------------------------------------------------ sessionAffinity: ClientIP

impl Fixture {
    fn affinity(&self) -> Vec<(abi::AffinityKey, abi::AffinityValue)> {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_AFFINITY)).unwrap();
        let map: HashMap<MapData, abi::AffinityKey, abi::AffinityValue> = HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
        map.iter().map(|r| r.unwrap()).collect()
    }

    fn set_affinity(&self, key: abi::AffinityKey, value: abi::AffinityValue) {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_AFFINITY)).unwrap();
        let mut map: HashMap<MapData, abi::AffinityKey, abi::AffinityValue> = HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
        map.insert(key, value, 0).unwrap();
    }
}

#[test]
fn session_affinity_keeps_a_client_on_its_backend_across_flows() {
    skip_unless_runnable!("affinity");
    let fx = Fixture::new("affinity", false);
    let backends: Vec<IpAddr> = (20..28).map(|i| IpAddr::from([10, 244, 2, i])).collect();
    let dst_of = |client: Ipv4Addr, port: u16| parse(&fx.ingress(&packet(flow(client, port, NODE4, 30087, TCP), b"")).1).flow.dst;
    // 40 new flows (new source ports) from one client: one backend. Without affinity, 40 flows
    // over 8 backends all on one would be a 1 in 8^39 accident.
    let first = dst_of(CLIENT, 43000);
    assert!(backends.contains(&first));
    for port in 43001..43040 {
        assert_eq!(dst_of(CLIENT, port), first, "flow from port {port} left its backend");
    }
    let other = dst_of(CLIENT_IN_RANGE, 43000);
    for port in 43001..43020 {
        assert_eq!(dst_of(CLIENT_IN_RANGE, port), other, "a second client keeps its own backend");
    }
    let entries = fx.affinity();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (key, value) = *entries.iter().find(|(k, _)| k.client == Addr::from(CLIENT)).expect("the client's entry");
    assert_eq!((key.by_cookie, key.scope), (0, abi::SCOPE_EXT));

    // The backend it names is gone (the agent removes such entries; here the entry outlives its
    // backend): the next flow gets a live backend and the entry follows it.
    fx.set_affinity(key, abi::AffinityValue { backend_id: 999_999, ..value });
    let moved = dst_of(CLIENT, 43100);
    assert!(backends.contains(&moved));
    let now_entry = fx.affinity().into_iter().find(|(k, _)| *k == key).unwrap().1;
    assert_ne!(now_entry.backend_id, 999_999);
    assert_eq!(dst_of(CLIENT, 43101), moved);

    // Past the timeout (60 s) the choice is made again and the entry refreshed.
    fx.set_affinity(key, abi::AffinityValue { last_used_ns: monotonic_ns() - 61_000_000_000, ..now_entry });
    dst_of(CLIENT, 43102);
    let refreshed = fx.affinity().into_iter().find(|(k, _)| *k == key).unwrap().1;
    assert!(monotonic_ns() - refreshed.last_used_ns < 5_000_000_000, "entry refreshed after expiry");
    assert_eq!(fx.counter(Counter::NpNewFlow), 40 + 20 + 3);
}

#[test]
fn the_agent_forgets_affinity_to_a_backend_that_left_the_frontend() {
    skip_unless_runnable!("affinity_cleanup");
    let fx = Fixture::new("affinity-gc", false);
    let maps = BpfMaps::open(&fx.pins.0).unwrap();
    let state = sluice_datapath::LbMaps::dump(&maps).unwrap();
    let sticky_head = state.services.iter().find(|(k, _)| k.slot == 0 && k.port_be == 80u16.to_be() && k.addr == Addr::from(Ipv4Addr::new(10, 96, 0, 87)));
    let (head_key, head) = sticky_head.expect("sticky's ClusterIP header");
    let member = state.services.get(&abi::SvcKey { slot: 1, ..*head_key }).unwrap().backend_id;
    // A backend that exists, but belongs to another Service ("many").
    let stranger = state.backends.iter().find(|(_, b)| b.addr == Addr::from(Ipv4Addr::new(10, 244, 2, 10))).map(|(id, _)| *id).unwrap();
    let key =
        |last: u8| abi::AffinityKey { client: Addr::from(Ipv4Addr::new(198, 51, 100, last)), rev_nat_id: head.rev_nat_id, scope: abi::SCOPE_EXT, by_cookie: 0 };
    let value = |backend_id| abi::AffinityValue { last_used_ns: monotonic_ns(), backend_id, pad: 0 };
    fx.set_affinity(key(1), value(member));
    fx.set_affinity(key(2), value(stranger));
    let removed = sluice_datapath::conntrack::forget_stale_affinity(&fx.pins.0, &state, None).unwrap();
    assert_eq!(removed, 1);
    assert_eq!(fx.affinity().into_iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![key(1)]);
    // Limited to frontends a plan touched: another frontend's id leaves the entry alone.
    fx.set_affinity(key(2), value(stranger));
    let other = std::collections::BTreeSet::from([u32::from(head.rev_nat_id) + 1000]);
    assert_eq!(sluice_datapath::conntrack::forget_stale_affinity(&fx.pins.0, &state, Some(&other)).unwrap(), 0);
}

// ------------------------------------------------------------------ Maglev

#[test]
fn maglev_sends_a_flow_to_the_same_backend_from_every_node() {
    skip_unless_runnable!("maglev");
    // Two nodes' datapaths, programmed from the same objects (each has its own maps, as two
    // nodes do; the second could as well be the first after losing its conntrack).
    let node_a = Fixture::planned("maglev-a", false, true);
    let node_b = Fixture::planned("maglev-b", false, true);
    let state = sluice_datapath::LbMaps::dump(&BpfMaps::open(&node_a.pins.0).unwrap()).unwrap();
    let nodeport = state.services.iter().find(|(k, v)| k.slot == 0 && k.port_be == 30083u16.to_be() && v.lb_alg == abi::LB_ALG_MAGLEV);
    assert!(nodeport.is_some(), "the NodePort frontend uses Maglev");
    assert!(
        state.services.iter().filter(|(k, _)| k.slot == 0 && k.addr == Addr::from(Ipv4Addr::new(10, 96, 0, 83))).all(|(_, v)| v.lb_alg == abi::LB_ALG_RANDOM),
        "the ClusterIP (socket-LB) stays random"
    );
    let backends: Vec<IpAddr> = (10..18).map(|i| IpAddr::from([10, 244, 2, i])).collect();
    let mut seen = std::collections::BTreeSet::new();
    for port in 44000..44060 {
        let pkt = packet(flow(CLIENT, port, NODE4, 30083, TCP), b"");
        let (a, b) = (parse(&node_a.ingress(&pkt).1).flow.dst, parse(&node_b.ingress(&pkt).1).flow.dst);
        assert_eq!(a, b, "flow from port {port}: node a picked {a}, node b {b}");
        assert!(backends.contains(&a));
        seen.insert(a);
    }
    assert!(seen.len() >= 5, "60 flows over 8 backends reached only {seen:?}");
}
