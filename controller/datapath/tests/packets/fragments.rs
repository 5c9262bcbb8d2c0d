//! Fragments of NodePort and LoadBalancer datagrams, IPv4 and IPv6 (bpf/lib/frag.h): only the
//! first fragment carries the ports, so it leaves them for the later ones, and every fragment is
//! translated as the whole datagram would be; through tc and XDP, to a local and to a remote
//! backend, and back. What comes out is reassembled as the receiver would, and the datagram's
//! UDP checksum checked.

use crate::harness::*;

/// A datagram too big for a 1500-byte MTU, with a payload that differs per `tag`.
fn big(tag: u8) -> Vec<u8> {
    (0..3000u32).map(|i| (i % 251) as u8 ^ tag).collect()
}

/// What a scenario needs of one address family: the same scenarios run on both.
struct Family {
    client: IpAddr,
    node: IpAddr,
    /// A UDP NodePort with a backend on node-b, and that backend (port 5353).
    remote_port: u16,
    remote_be: IpAddr,
    /// A UDP NodePort with a backend on node-a, and that backend (port 5353).
    local_port: u16,
    local_be: IpAddr,
    /// A UDP frontend on a LoadBalancer address with a remote backend, and a client it admits.
    lb: (IpAddr, u16),
    lb_client: IpAddr,
    /// Where a 1500-byte MTU cuts the 3008-byte UDP segment of `big`, and where a 2000-byte one.
    three: [usize; 2],
    two: [usize; 1],
}

const V4: Family = Family {
    client: IpAddr::V4(CLIENT),
    node: IpAddr::V4(NODE4),
    remote_port: 30053,
    remote_be: IpAddr::V4(REMOTE_BE),
    local_port: 30055,
    local_be: IpAddr::V4(LOCAL_BE),
    // The LoadBalancer `lb` has no UDP port: enough for fragments that are dropped by address.
    lb: (IpAddr::V4(LB_REMOTE), 80),
    lb_client: IpAddr::V4(CLIENT_IN_RANGE),
    three: [1480, 2960],
    two: [1976],
};

/// 40 bytes of fixed header and 8 of Fragment header per fragment.
const V6: Family = Family {
    client: IpAddr::V6(CLIENT6),
    node: IpAddr::V6(NODE6),
    remote_port: 30056,
    remote_be: IpAddr::V6(REMOTE_BE6),
    local_port: 30057,
    local_be: IpAddr::V6(LOCAL_BE6),
    lb: (IpAddr::V6(LB6_REMOTE), 53),
    lb_client: IpAddr::V6(CLIENT6),
    three: [1448, 2896],
    two: [1952],
};

/// Each frame through `send`, which must give each the verdict; the frames as they came out.
fn through<'a>(frames: &[Vec<u8>], verdict: i32, send: impl Fn(&[u8]) -> Outcome<'a>) -> Vec<Vec<u8>> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let out = send(f);
            assert_eq!(out.verdict, verdict, "fragment {i}");
            out.frame
        })
        .collect()
}

/// `payload` sent from `flow` as fragments (IP id `id`, cut at `cuts`) through `send`, which must
/// give each the verdict: the datagram that comes out, reassembled, its payload intact.
fn fragmented<'a>(flow: Flow, payload: &[u8], id: u32, cuts: &[usize], verdict: i32, send: impl Fn(&[u8]) -> Outcome<'a>) -> Seen {
    let out = through(&flow.packet().payload(payload).fragments(id, cuts), verdict, send);
    for f in &out {
        assert_eq!(parse_fragment(f).id, id, "the identification stays, or the receiver cannot reassemble");
    }
    let seen = reassemble(&out);
    assert_eq!(seen.payload, payload);
    seen
}

/// The scenarios, each a test per family.
macro_rules! both_families {
    ($($scenario:ident),* $(,)?) => {
        mod ipv4 {
            $(#[test]
            fn $scenario() {
                super::$scenario(concat!("frag4-", stringify!($scenario)), &super::V4)
            })*
        }
        mod ipv6 {
            $(#[test]
            fn $scenario() {
                super::$scenario(concat!("frag6-", stringify!($scenario)), &super::V6)
            })*
        }
    };
}

both_families!(
    udp_fragments_to_a_remote_backend_are_all_translated_and_so_are_the_replys,
    udp_fragments_to_a_local_backend_are_dnated_and_the_replys_restored_on_egress,
    xdp_translates_the_fragments_of_remote_flows_and_leaves_local_ones_to_tc,
    a_later_fragment_whose_first_was_not_translated_is_passed_or_dropped_by_its_destination,
    a_blocklist_entry_for_some_ports_catches_the_first_fragment,
);

fn udp_fragments_to_a_remote_backend_are_all_translated_and_so_are_the_replys(name: &'static str, fam: &Family) {
    let Some(fx) = node(name).start() else { return };
    let c2f = udp(fam.client, 5000).to(fam.node, fam.remote_port);

    let seen = fragmented(c2f, &big(1), 0x4242, &fam.three, TC_ACT_OK, |f| fx.ingress(f));
    assert_eq!(seen.flow, udp(fam.node, 5000).to(fam.remote_be, 5353), "DNAT and SNAT on every fragment");
    let back = fragmented(seen.flow.reply(), &big(2), 0x0707, &fam.two, TC_ACT_OK, |f| fx.ingress(f));
    assert_eq!(back.flow, c2f.reply());
    // Offset 0 and nothing more to come: the whole datagram (for IPv6, behind a Fragment header).
    let whole = fragmented(c2f, b"whole", 0x0101, &[], TC_ACT_OK, |f| fx.ingress(f));
    assert_eq!(whole.flow, seen.flow);

    // One flow, every fragment through its conntrack entries; no fragment untracked.
    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpForward, 3), (Counter::NpReverse, 2), (Counter::NpFibFail, 6)]);
}

fn udp_fragments_to_a_local_backend_are_dnated_and_the_replys_restored_on_egress(name: &'static str, fam: &Family) {
    let Some(fx) = node(name).start() else { return };
    let c2f = udp(fam.client, 5001).to(fam.node, fam.local_port);

    let seen = fragmented(c2f, &big(3), 0x1111, &fam.two, TC_ACT_OK, |f| fx.ingress(f));
    assert_eq!(seen.flow, udp(fam.client, 5001).to(fam.local_be, 5353), "DNAT only");
    let back = fragmented(seen.flow.reply(), &big(4), 0x2222, &fam.three, TC_ACT_OK, |f| fx.egress(f));
    assert_eq!(back.flow, c2f.reply());
    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpForward, 1), (Counter::NpReverse, 3)]);
}

fn xdp_translates_the_fragments_of_remote_flows_and_leaves_local_ones_to_tc(name: &'static str, fam: &Family) {
    let Some(fx) = node(name).accelerated().routed().start() else { return };
    let c2f = udp(fam.client, 5002).to(fam.node, fam.remote_port);

    let seen = fragmented(c2f, &big(5), 0x3333, &fam.three, XDP_REDIRECT, |f| fx.xdp(f));
    assert_eq!(seen.flow, udp(fam.node, 5002).to(fam.remote_be, 5353));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, MAC_S0), "every fragment sent on towards the backend");
    let back = fragmented(seen.flow.reply(), &big(6), 0x4444, &fam.three, XDP_REDIRECT, |f| fx.xdp(f));
    assert_eq!(back.flow, c2f.reply());
    assert_eq!(fx.counter(Counter::XdpForward), 3);
    assert_eq!(fx.counter(Counter::XdpReverse), 3);

    // A local backend is tc's: XDP passes every fragment untouched (the first one having
    // recorded the flow), and tc, which sees each right after XDP, translates them.
    let local = udp(fam.client, 5003).to(fam.node, fam.local_port);
    let after_xdp = |f: &[u8]| {
        assert_eq!(fx.xdp(f), (XDP_PASS, f.to_vec()));
        fx.ingress(f)
    };
    assert_eq!(fragmented(local, &big(7), 0x5555, &fam.three, TC_ACT_OK, after_xdp).flow, udp(fam.client, 5003).to(fam.local_be, 5353));
    assert_eq!(fx.counter(Counter::XdpPassLocal), 1);
    assert_eq!(fx.counter(Counter::NpFragUntracked), 0);
}

fn a_later_fragment_whose_first_was_not_translated_is_passed_or_dropped_by_its_destination(name: &'static str, fam: &Family) {
    let Some(fx) = node(name).accelerated().start() else { return };

    // Before its first fragment (or long after it): to a node address it goes on untouched,
    // as the node's own fragments must; it cannot reach a backend from there.
    let frames = udp(fam.client, 5004).to(fam.node, fam.remote_port).packet().payload(&big(7)).fragments(0x6666, &fam.three);
    assert_eq!(fx.ingress(&frames[1]), (TC_ACT_UNSPEC, frames[1].clone()));
    assert_eq!(fx.counter(Counter::NpFragUntracked), 1);
    // XDP leaves the judgement to tc.
    assert_eq!(fx.xdp(&frames[2]), (XDP_PASS, frames[2].clone()));

    // A datagram no Service takes leaves nothing behind for its later fragments.
    let other = udp(fam.client, 5005).to(fam.node, 9999).packet().payload(&big(8)).fragments(0x7777, &fam.two);
    assert_eq!(fx.ingress(&other[0]), (TC_ACT_UNSPEC, other[0].clone()));
    assert_eq!(fx.ingress(&other[1]), (TC_ACT_UNSPEC, other[1].clone()));
    assert_eq!(fx.counter(Counter::NpFragUntracked), 2);

    // To a LoadBalancer address, which only Services use, it is dropped: the stack would route
    // it on untranslated.
    let lb = udp(fam.lb_client, 5006).to(fam.lb.0, fam.lb.1).packet().payload(&big(9)).fragments(0x8888, &fam.two);
    assert_eq!(fx.xdp(&lb[1]), (XDP_PASS, lb[1].clone()));
    assert_eq!(fx.ingress(&lb[1]).verdict, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpDropFragUnknown), 1);

    // Egress sees a local backend's fragments in the order it sent them: an unknown one there is
    // not a Service's, and goes on uncounted.
    let out = udp(fam.local_be, 5353).to(fam.client, 5007).packet().payload(&big(10)).fragments(0x9999, &fam.two);
    assert_eq!(fx.egress(&out[1]), (TC_ACT_UNSPEC, out[1].clone()));
    assert_eq!(fx.counters(), vec![(Counter::NpDropFragUnknown, 1), (Counter::NpFragUntracked, 2)]);
}

fn a_blocklist_entry_for_some_ports_catches_the_first_fragment(name: &'static str, fam: &Family) {
    let Some(fx) = node(name).accelerated().start() else { return };
    fx.block(fam.client, &[(fam.remote_port, UDP)]);
    let frames = udp(fam.client, 5009).to(fam.node, fam.remote_port).packet().payload(&big(12)).fragments(0xb10c, &fam.two);
    assert_eq!(fx.xdp(&frames[0]).verdict, XDP_DROP, "the first fragment carries the ports");
    assert_eq!(fx.counter(Counter::XdpDropBlocklist), 1);
    // The later one has none, and no translated first fragment lends it any.
    assert_eq!(fx.xdp(&frames[1]), (XDP_PASS, frames[1].clone()));
    assert_eq!(fx.ingress(&frames[1]), (TC_ACT_UNSPEC, frames[1].clone()));
    // Another port of the same source passes.
    let other = udp(fam.client, 5009).to(fam.node, fam.local_port).packet().payload(&big(12)).fragments(0xb10d, &fam.two);
    assert_eq!(fx.xdp(&other[0]).verdict, XDP_PASS);
    assert_eq!(fx.counter(Counter::XdpDropBlocklist), 1);
}
