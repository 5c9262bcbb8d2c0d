//! The node under test: both objects loaded with their maps pinned in a fresh bpffs directory,
//! cluster.yaml planned into them, in a network namespace of the test's own thread.
//!
//! `node("name")` describes it, `.start()` builds it, or returns None (after saying why) where
//! the test cannot run: `let Some(fx) = node("udp").start() else { return };`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashMap, MapData};
use aya::programs::{SchedClassifier, Xdp};
use sluice_abi::{self as abi, Counter, CtKey, CtValue, XdpDevice, XdpState};
use sluice_core::{Capacity, Ids, NodeContext, manifest, plan};
use sluice_datapath::sys::{self, RunMode, TestContext};
use sluice_datapath::{BpfMaps, Reconciler, counters, loader, xdp_proof};

use super::net::*;
use super::packet::Flow;
use super::parse::{SeenError, parse, parse_icmp4_error, parse_icmp6_error};
use super::{Seen, can_run, have_ip, routes};

const CLUSTER: &str = include_str!("../cluster.yaml");

/// What a test needs of its node, before it is built.
pub struct Setup {
    test: &'static str,
    accel: bool,
    maglev: bool,
    ip: bool,
    routes: Routes,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Routes {
    None,
    ToBackends,
    ToBackendsAndClients,
}

/// A node named `test` (in messages and its bpffs directory): tc and XDP loaded, no XDP
/// acceleration, random backend selection, no routes.
pub fn node(test: &'static str) -> Setup {
    Setup { test, accel: false, maglev: false, ip: false, routes: Routes::None }
}

impl Setup {
    /// ProxyConfig's XDP acceleration on, and lo (where test runs arrive) proven.
    pub fn accelerated(self) -> Setup {
        Setup { accel: true, ..self }
    }

    /// ProxyConfig's loadBalancingAlgorithm: maglev.
    pub fn maglev(self) -> Setup {
        Setup { maglev: true, ..self }
    }

    /// The test builds routes itself later (`Fixture::routes_to_backends`): iproute2 is needed.
    pub fn with_ip(self) -> Setup {
        Setup { ip: true, ..self }
    }

    /// A veth s0 towards the remote backends, so the FIB helper finds their next hop.
    pub fn routes_to_backends(self) -> Setup {
        Setup { ip: true, routes: Routes::ToBackends.max(self.routes), ..self }
    }

    /// As `routes_to_backends`, and the clients behind s0 too, so replies go out from XDP.
    pub fn routed(self) -> Setup {
        Setup { ip: true, routes: Routes::ToBackendsAndClients, ..self }
    }

    pub fn start(self) -> Option<Fixture> {
        if !can_run(self.test) || (self.ip && !have_ip(self.test)) {
            return None;
        }
        let mut fx = Fixture::planned(self.test, self.maglev);
        fx.config(self.accel);
        if self.routes >= Routes::ToBackends {
            fx.routes_to_backends();
        }
        if self.routes == Routes::ToBackendsAndClients {
            fx.routes_to_clients();
        }
        Some(fx)
    }
}

/// The node under test, as the planner sees it.
fn node_a(maglev: bool) -> NodeContext {
    NodeContext {
        node_name: Some("node-a".into()),
        node_ips: vec![NODE4.into(), NODE6.into()],
        external_ip_cidrs: None,
        maglev,
        zone: None,
        nodeport_bind_protection: true,
        ..Default::default()
    }
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

pub struct Fixture {
    nodeport: Ebpf,
    xdp: Ebpf,
    // Declared last: dropped after the objects, so the maps are unpinned once nothing uses them.
    pins: PinDir,
}

/// Moves this test's thread into a new network namespace: no routes, forwarding off, so the FIB
/// helper's answer does not depend on the machine the tests run on.
fn private_netns() {
    // SAFETY: unshare(CLONE_NEWNET) affects only the calling thread.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
}

impl Fixture {
    fn planned(test: &str, maglev: bool) -> Fixture {
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
        let p = plan(&objects.services, &objects.slices, &node_a(maglev), &Ids::default(), Capacity::default());
        // The SCTP Services' one warning (no socket hook for SCTP) is expected.
        assert!(p.warnings.iter().all(|w| w.message.contains("no socket hook for SCTP")), "{:?}", p.warnings);
        let mut maps = BpfMaps::open(&pins.0).expect("opening the pinned maps");
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        maps.complete_port_filter(rec.found().unwrap(), &pins.0).expect("filling the port filter");
        rec.sync(&mut maps, &p.desired).expect("writing the plan");

        Fixture { nodeport, xdp, pins }
    }

    pub fn pins(&self) -> &Path {
        &self.pins.0
    }

    /// Turns XDP acceleration on or off, as a new ProxyConfig would.
    pub fn config(&mut self, accel: bool) {
        self.config_with(NODE4, NODE6, accel);
    }

    /// As `config`, with other node addresses (the SNAT source).
    pub fn config_with(&mut self, ip4: Ipv4Addr, ip6: Ipv6Addr, accel: bool) {
        let config =
            abi::Config { node_ip4: IpAddr::from(ip4).into(), node_ip6: IpAddr::from(ip6).into(), flags: if accel { abi::CFG_F_XDP_ACCEL } else { 0 }, pad: 0 };
        loader::write_config(&mut self.nodeport, config).unwrap();
        if accel {
            // Test runs without a context arrive on lo.
            self.device_state(1, XdpState::Accelerated);
        }
    }

    /// Records a device's proven (or not) acceleration, as the agent's proof does.
    pub fn device_state(&self, ifindex: u32, state: XdpState) {
        let entry = XdpDevice { flags: if state == XdpState::Accelerated { abi::XDP_DEV_F_ACCEL } else { 0 }, state: state as u32, ..Default::default() };
        xdp_proof::write_device(&self.pins.0, ifindex, &entry).unwrap();
    }

    /// veth s0 in this namespace towards the remote backends.
    pub fn routes_to_backends(&self) {
        routes::to_backends()
    }

    /// s0's ifindex (after `routes_to_backends`).
    pub fn s0(&self) -> u32 {
        routes::s0_ifindex()
    }

    /// The clients behind s0 (after `routes_to_backends`).
    pub fn routes_to_clients(&self) {
        routes::to_clients()
    }

    // -------------------------------------------------------------- sending

    pub fn ingress(&self, pkt: &[u8]) -> Outcome<'_> {
        self.tc(loader::TC_INGRESS, pkt)
    }

    pub fn egress(&self, pkt: &[u8]) -> Outcome<'_> {
        self.tc(loader::TC_EGRESS, pkt)
    }

    /// XDP, arriving on lo.
    pub fn xdp(&self, pkt: &[u8]) -> Outcome<'_> {
        self.run(self.xdp_program(), pkt, TestContext::None)
    }

    /// XDP with a context of the caller's making (another ingress device).
    pub fn xdp_ctx(&self, pkt: &[u8], ctx: &[u8]) -> Outcome<'_> {
        self.run(self.xdp_program(), pkt, TestContext::Raw(ctx))
    }

    /// The loaded XDP object, for programs other than the datapath's (the proof's probe).
    pub fn xdp_object(&mut self) -> &mut Ebpf {
        &mut self.xdp
    }

    pub fn xdp_program(&self) -> BorrowedFd<'_> {
        let prog: &Xdp = self.xdp.program(loader::XDP_PROGRAM).unwrap().try_into().unwrap();
        prog.fd().unwrap().as_fd()
    }

    /// Egress of a packet that arrived on device `ingress_ifindex` and leaves by `ifindex`
    /// (1 is the test namespace's lo, the one device a test run may name).
    pub fn egress_via(&self, pkt: &[u8], ingress_ifindex: u32, ifindex: u32) -> Outcome<'_> {
        let prog: &SchedClassifier = self.nodeport.program(loader::TC_EGRESS).unwrap().try_into().unwrap();
        self.run(prog.fd().unwrap().as_fd(), pkt, TestContext::Skb { ingress_ifindex, ifindex })
    }

    /// A tc program as the kernel runs it (see `sys::prog_xlated`).
    pub fn tc_xlated(&self, name: &str) -> Vec<[u8; 8]> {
        let prog: &SchedClassifier = self.nodeport.program(name).unwrap().try_into().unwrap();
        sys::prog_xlated(prog.fd().unwrap().as_fd()).unwrap_or_else(|e| panic!("BPF_OBJ_GET_INFO_BY_FD: {e}"))
    }

    /// tc program `name` (`loader::TC_INGRESS` or `loader::TC_EGRESS`).
    pub fn tc_program(&self, name: &str) -> BorrowedFd<'_> {
        let prog: &SchedClassifier = self.nodeport.program(name).unwrap().try_into().unwrap();
        prog.fd().unwrap().as_fd()
    }

    fn tc(&self, name: &str, pkt: &[u8]) -> Outcome<'_> {
        self.run(self.tc_program(name), pkt, TestContext::None)
    }

    fn run(&self, prog: BorrowedFd<'_>, pkt: &[u8], ctx: TestContext<'_>) -> Outcome<'_> {
        let (verdict, frame) = sys::prog_test_run(prog, pkt, ctx, RunMode::Dry).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
        Outcome { verdict: verdict as i32, frame, fx: self }
    }

    /// Opens TCP flow `c2f` through tc as a client and its backend would: the SYN, the
    /// backend's SYN-ACK (on ingress from a remote backend, SNATed; on egress from a local one),
    /// the client's ACK. Returns the flow as the backend sees it; it is then established.
    pub fn establish(&self, c2f: Flow) -> Flow {
        let to_backend = self.ingress(&c2f.syn()).seen().flow;
        let syn_ack = to_backend.reply().segment(SYN | ACK);
        let answered = if to_backend.src == c2f.src { self.egress(&syn_ack) } else { self.ingress(&syn_ack) };
        assert_eq!(answered.seen().flow, c2f.reply(), "the SYN-ACK comes from the frontend");
        self.ingress(&c2f.handshake_ack());
        assert!(self.ct_table(abi::MAP_CT).iter().any(|(k, _)| *k == c2f.ct_key(abi::CT_FORWARD)), "{c2f:?} is not established: {:?}", self.counters());
        to_backend
    }

    // -------------------------------------------------------------- state

    pub fn counter(&self, c: Counter) -> u64 {
        counters::read(&self.pins.0).unwrap().into_iter().find(|(k, _)| *k == c).unwrap().1
    }

    /// Every counter of packets and connections that is not zero, for failure messages and exact
    /// comparisons; the conntrack tables' entry counts are left out (`counter` reads them).
    pub fn counters(&self) -> Vec<(Counter, u64)> {
        const BOOKKEEPING: [Counter; 5] =
            [Counter::CtTcpInserted, Counter::CtHandshakeInserted, Counter::CtHandshakeDeleted, Counter::CtOtherInserted, Counter::CtOtherDeleted];
        counters::read(&self.pins.0).unwrap().into_iter().filter(|(c, v)| *v != 0 && !BOOKKEEPING.contains(c)).collect()
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(&self, name: &str) -> HashMap<MapData, K, V> {
        let data = MapData::from_pin(self.pins.0.join(name)).unwrap();
        HashMap::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap()
    }

    /// Every conntrack entry, of the three tables.
    pub fn ct(&self) -> Vec<(CtKey, CtValue)> {
        let mut all: Vec<(CtKey, CtValue)> = self.ct_table(abi::MAP_CT);
        all.extend(self.handshakes().into_iter().map(|(k, v)| (k, v.ct)));
        all.extend(self.ct_table(abi::MAP_CT_OTHER));
        all
    }

    /// The entries of one conntrack table (`abi::MAP_CT`, the established TCP flows, or
    /// `abi::MAP_CT_OTHER`).
    pub fn ct_table(&self, name: &str) -> Vec<(CtKey, CtValue)> {
        self.hash_map(name).iter().map(|r| r.unwrap()).collect()
    }

    /// Replaces every entry of one conntrack table (`abi::MAP_CT` or `abi::MAP_CT_OTHER`).
    pub fn ct_table_set(&self, name: &str, entries: &[(CtKey, CtValue)]) {
        self.table_set(name, entries);
    }

    fn table_set<V: aya::Pod>(&self, name: &str, entries: &[(CtKey, V)]) {
        let mut map: HashMap<MapData, CtKey, V> = self.hash_map(name);
        let keys: Vec<CtKey> = map.keys().map(|k| k.unwrap()).collect();
        for k in keys {
            map.remove(&k).unwrap();
        }
        for (k, v) in entries {
            map.insert(k, v, 0).unwrap();
        }
    }

    pub fn handshakes(&self) -> Vec<(CtKey, abi::CtHandshake)> {
        self.hash_map(abi::MAP_CT_HANDSHAKE).iter().map(|r| r.unwrap()).collect()
    }

    /// Replaces every entry of the handshake table.
    pub fn handshakes_set(&self, entries: &[(CtKey, abi::CtHandshake)]) {
        self.table_set(abi::MAP_CT_HANDSHAKE, entries);
    }

    /// Makes the client of these handshakes silent for `ticks` since its last SYN.
    pub fn handshakes_silent_for(&self, keys: &[CtKey], ticks: u16) {
        let mut map: HashMap<MapData, CtKey, abi::CtHandshake> = self.hash_map(abi::MAP_CT_HANDSHAKE);
        let at = sluice_datapath::conntrack::handshake_tick().wrapping_sub(ticks);
        for k in keys {
            let v = map.get(k, 0).expect("a handshake to age");
            map.insert(k, abi::CtHandshake { syn_at: at, ..v }, 0).unwrap();
        }
    }

    /// The flow's entry under `key`, in whichever table holds it (established first).
    pub fn ct_get(&self, key: &CtKey) -> Option<CtValue> {
        self.ct().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Writes entries to the table of their protocol, as established flows.
    pub fn ct_put(&self, entries: impl IntoIterator<Item = (CtKey, CtValue)>) {
        let mut tcp = self.hash_map(abi::MAP_CT);
        let mut other = self.hash_map(abi::MAP_CT_OTHER);
        for (k, v) in entries {
            if k.proto == abi::IPPROTO_TCP { tcp.insert(k, v, 0).unwrap() } else { other.insert(k, v, 0).unwrap() }
        }
    }

    /// Offers a table of `table`'s shape but another size, holding `entries`, where the programs
    /// look when a lookup in `table` misses, as an agent resizing the tables does while its
    /// programs take over (the slot holds the table).
    pub fn offer_replaced_table<V: aya::Pod>(&self, table: &str, entries: &[(CtKey, V)]) {
        let mut def = aya_obj::Object::parse(sluice_datapath::NODEPORT_OBJECT).unwrap().maps.remove(table).unwrap();
        def.set_max_entries(1024);
        let replaced = sluice_datapath::pins::create_map(&def, table).unwrap();
        let (outer, slot) = sluice_datapath::pins::previous_slot(table).expect("a conntrack table");
        let outer = MapData::from_pin(self.pins.0.join(outer)).unwrap();
        let mut slots: aya::maps::ArrayOfMaps<MapData, MapData> = aya::maps::ArrayOfMaps::try_from(aya::maps::Map::from_map_data(outer).unwrap()).unwrap();
        slots.set(slot, &replaced, 0).unwrap();
        let mut replaced: HashMap<MapData, CtKey, V> = HashMap::try_from(aya::maps::Map::from_map_data(replaced).unwrap()).unwrap();
        for (k, v) in entries {
            replaced.insert(k, v, 0).unwrap();
        }
    }

    /// Puts the programs' own `table` in its slot, as they find it from the moment an agent
    /// offers the table it replaces until their links are swapped.
    pub fn offer_own_table(&self, table: &str) {
        let own = MapData::from_pin(self.pins.0.join(table)).unwrap();
        let (outer, slot) = sluice_datapath::pins::previous_slot(table).expect("a conntrack table");
        let outer = MapData::from_pin(self.pins.0.join(outer)).unwrap();
        let mut slots: aya::maps::ArrayOfMaps<MapData, MapData> = aya::maps::ArrayOfMaps::try_from(aya::maps::Map::from_map_data(outer).unwrap()).unwrap();
        slots.set(slot, &own, 0).unwrap();
    }

    /// Moves these entries to another conntrack epoch, as if their flows had been quiet since.
    pub fn set_epoch(&self, keys: &[CtKey], epoch: u8) {
        let entries: Vec<_> = keys.iter().map(|k| (*k, CtValue { epoch, ..self.ct_get(k).expect("a conntrack entry to age") })).collect();
        self.ct_put(entries);
    }

    pub fn affinity(&self) -> Vec<(abi::AffinityKey, abi::AffinityValue)> {
        self.hash_map(abi::MAP_AFFINITY).iter().map(|r| r.unwrap()).collect()
    }

    pub fn set_affinity(&self, key: abi::AffinityKey, value: abi::AffinityValue) {
        self.hash_map(abi::MAP_AFFINITY).insert(key, value, 0).unwrap();
    }

    /// A SourceBlocklist entry for `source` alone, limited to these (port, protocol) pairs.
    pub fn block(&self, source: IpAddr, ports: &[(u16, u8)]) {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_BLOCKLIST)).unwrap();
        let mut trie: LpmTrie<MapData, abi::Addr, abi::BlockValue> = LpmTrie::try_from(aya::maps::Map::LpmTrie(data)).unwrap();
        let mut value = abi::BlockValue { nports: ports.len() as u16, ..Default::default() };
        for (slot, (port, proto)) in value.ports.iter_mut().zip(ports) {
            *slot = abi::BlockPort { port_be: port.to_be(), proto: *proto, pad: 0 };
        }
        trie.insert(&LpmKey::new(128, source.into()), value, 0).unwrap();
    }

    fn port_filter_array(&self) -> aya::maps::Array<MapData, abi::PortFilter> {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_PORT_FILTER)).unwrap();
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap()
    }

    /// The ports north-south flows can use here, as the programs read them.
    pub fn port_filter(&self) -> abi::PortFilter {
        self.port_filter_array().get(&0, 0).unwrap()
    }

    pub fn set_port_filter(&self, filter: &abi::PortFilter) {
        self.port_filter_array().set(0, filter, 0).unwrap();
    }

    /// Plans `yaml` instead of cluster.yaml and syncs the maps to it, as the agent does when the
    /// cluster changes.
    pub fn replan(&self, yaml: &str) {
        let mut objects = manifest::Objects::default();
        let mut warnings = Vec::new();
        manifest::parse("replan", yaml, &mut objects, &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
        let p = plan(&objects.services, &objects.slices, &node_a(false), &Ids::default(), Capacity::default());
        let mut maps = BpfMaps::open(&self.pins.0).expect("opening the pinned maps");
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &p.desired).expect("writing the plan");
    }

    /// Holds (or, with a time past, drops) the lease a `sluice monitor` takes on the event ring.
    pub fn set_monitor_lease(&self, until_ns: u64) {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_MONITOR)).unwrap();
        let mut lease: aya::maps::Array<MapData, u64> = aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
        lease.set(0, until_ns, 0).unwrap();
    }

    pub fn drain_events(&self) -> Vec<abi::Event> {
        let data = MapData::from_pin(self.pins.0.join(abi::MAP_EVENTS)).unwrap();
        let mut ring = aya::maps::RingBuf::try_from(aya::maps::Map::RingBuf(data)).unwrap();
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            events.push(abi::Event::from_bytes(&item).expect("a whole event"));
        }
        events
    }
}

/// What a program did with a frame: its verdict and the frame as it left. Compares equal to a
/// `(verdict, frame)` pair, for "passed untouched".
pub struct Outcome<'a> {
    pub verdict: i32,
    pub frame: Vec<u8>,
    fx: &'a Fixture,
}

impl Outcome<'_> {
    /// Asserts the verdict (showing the counters if it is not) and parses the frame.
    #[track_caller]
    pub fn expect(&self, verdict: i32) -> Seen {
        assert_eq!(self.verdict, verdict, "counters: {:?}", self.fx.counters());
        self.seen()
    }

    /// Parses the frame, whatever the verdict.
    pub fn seen(&self) -> Seen {
        parse(&self.frame)
    }

    pub fn icmp4(&self) -> SeenError<Ipv4Addr> {
        parse_icmp4_error(&self.frame)
    }

    pub fn icmp6(&self) -> SeenError<Ipv6Addr> {
        parse_icmp6_error(&self.frame)
    }

    /// The IP packet, without the Ethernet header: what an ICMP error quotes.
    pub fn ip(&self) -> &[u8] {
        &self.frame[14..]
    }
}

impl PartialEq<(i32, Vec<u8>)> for Outcome<'_> {
    fn eq(&self, (verdict, frame): &(i32, Vec<u8>)) -> bool {
        self.verdict == *verdict && self.frame == *frame
    }
}

impl std::fmt::Debug for Outcome<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {:?})", self.verdict, self.frame)
    }
}
