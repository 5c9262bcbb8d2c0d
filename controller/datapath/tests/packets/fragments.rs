//! IPv4 fragments of NodePort datagrams (bpf/lib/frag.h): only the first fragment carries the
//! ports, so it leaves them for the later ones, and every fragment is translated as the whole
//! datagram would be; through tc and XDP, to a local and to a remote backend, and back. What
//! comes out is reassembled as the receiver would, and the datagram's UDP checksum checked.

use crate::harness::*;

/// A datagram too big for a 1500-byte MTU, with a payload that differs per `tag`.
fn big(tag: u8) -> Vec<u8> {
    (0..3000u32).map(|i| (i % 251) as u8 ^ tag).collect()
}

/// Where a 1500-byte MTU cuts its 3008-byte UDP segment: 1480, 1480, 48.
const THREE: [usize; 2] = [1480, 2960];
/// As a 2000-byte MTU would: two fragments.
const TWO: [usize; 1] = [1976];

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
fn fragmented<'a>(flow: Flow, payload: &[u8], id: u16, cuts: &[usize], verdict: i32, send: impl Fn(&[u8]) -> Outcome<'a>) -> Seen {
    let out = through(&flow.packet().payload(payload).fragments(id, cuts), verdict, send);
    for f in &out {
        assert_eq!(parse_fragment(f).id, id, "the IP id stays, or the receiver cannot reassemble");
    }
    let seen = reassemble(&out);
    assert_eq!(seen.payload, payload);
    seen
}

#[test]
fn udp_fragments_to_a_remote_backend_are_all_translated_and_so_are_the_replys() {
    let Some(fx) = node("frag-remote").start() else { return };
    let c2f = udp(CLIENT, 5000).to(NODE4, 30053);

    let seen = fragmented(c2f, &big(1), 0x4242, &THREE, TC_ACT_OK, |f| fx.ingress(f));
    assert_eq!(seen.flow, udp(NODE4, 5000).to(REMOTE_BE, 5353), "DNAT and SNAT on every fragment");
    let back = fragmented(seen.flow.reply(), &big(2), 0x0707, &TWO, TC_ACT_OK, |f| fx.ingress(f));
    assert_eq!(back.flow, c2f.reply());

    // One flow, every fragment through its conntrack entries; no fragment untracked.
    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpForward, 2), (Counter::NpReverse, 2), (Counter::NpFibFail, 5)]);
}

#[test]
fn udp_fragments_to_a_local_backend_are_dnated_and_the_replys_restored_on_egress() {
    let Some(fx) = node("frag-local").start() else { return };
    let c2f = udp(CLIENT, 5001).to(NODE4, 30055);

    let seen = fragmented(c2f, &big(3), 0x1111, &TWO, TC_ACT_OK, |f| fx.ingress(f));
    assert_eq!(seen.flow, udp(CLIENT, 5001).to(LOCAL_BE, 5353), "DNAT only");
    let back = fragmented(seen.flow.reply(), &big(4), 0x2222, &THREE, TC_ACT_OK, |f| fx.egress(f));
    assert_eq!(back.flow, c2f.reply());
    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpForward, 1), (Counter::NpReverse, 3)]);
}

#[test]
fn xdp_translates_the_fragments_of_remote_flows_and_leaves_local_ones_to_tc() {
    let Some(fx) = node("frag-xdp").accelerated().routed().start() else { return };
    let c2f = udp(CLIENT, 5002).to(NODE4, 30053);

    let seen = fragmented(c2f, &big(5), 0x3333, &THREE, XDP_REDIRECT, |f| fx.xdp(f));
    assert_eq!(seen.flow, udp(NODE4, 5002).to(REMOTE_BE, 5353));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, MAC_S0), "every fragment sent on towards the backend");
    let back = fragmented(seen.flow.reply(), &big(6), 0x4444, &THREE, XDP_REDIRECT, |f| fx.xdp(f));
    assert_eq!(back.flow, c2f.reply());
    assert_eq!(fx.counter(Counter::XdpForward), 3);
    assert_eq!(fx.counter(Counter::XdpReverse), 3);

    // A local backend is tc's: XDP passes every fragment untouched (the first one having
    // recorded the flow), and tc, which sees each right after XDP, translates them.
    let local = udp(CLIENT, 5003).to(NODE4, 30055);
    let after_xdp = |f: &[u8]| {
        assert_eq!(fx.xdp(f), (XDP_PASS, f.to_vec()));
        fx.ingress(f)
    };
    assert_eq!(fragmented(local, &big(7), 0x5555, &THREE, TC_ACT_OK, after_xdp).flow, udp(CLIENT, 5003).to(LOCAL_BE, 5353));
    assert_eq!(fx.counter(Counter::XdpPassLocal), 1);
    assert_eq!(fx.counter(Counter::NpFragUntracked), 0);
}

#[test]
fn a_later_fragment_whose_first_was_not_translated_is_passed_or_dropped_by_its_destination() {
    let Some(fx) = node("frag-unknown").accelerated().start() else { return };

    // Before its first fragment (or long after it): to a node address it goes on untouched,
    // as the node's own fragments must; it cannot reach a backend from there.
    let frames = udp(CLIENT, 5004).to(NODE4, 30053).packet().payload(&big(7)).fragments(0x6666, &THREE);
    assert_eq!(fx.ingress(&frames[1]), (TC_ACT_UNSPEC, frames[1].clone()));
    assert_eq!(fx.counter(Counter::NpFragUntracked), 1);
    // XDP leaves the judgement to tc.
    assert_eq!(fx.xdp(&frames[2]), (XDP_PASS, frames[2].clone()));

    // A datagram no Service takes leaves nothing behind for its later fragments.
    let other = udp(CLIENT, 5005).to(NODE4, 9999).packet().payload(&big(8)).fragments(0x7777, &TWO);
    assert_eq!(fx.ingress(&other[0]), (TC_ACT_UNSPEC, other[0].clone()));
    assert_eq!(fx.ingress(&other[1]), (TC_ACT_UNSPEC, other[1].clone()));
    assert_eq!(fx.counter(Counter::NpFragUntracked), 2);

    // To a LoadBalancer address, which only Services use, it is dropped: the stack would route
    // it on untranslated.
    let lb = udp(CLIENT_IN_RANGE, 5006).to(LB_REMOTE, 80).packet().payload(&big(9)).fragments(0x8888, &TWO);
    assert_eq!(fx.xdp(&lb[1]), (XDP_PASS, lb[1].clone()));
    assert_eq!(fx.ingress(&lb[1]).verdict, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpDropFragUnknown), 1);

    // Egress sees a local backend's fragments in the order it sent them: an unknown one there is
    // not a Service's, and goes on uncounted.
    let out = udp(LOCAL_BE, 5353).to(CLIENT, 5007).packet().payload(&big(10)).fragments(0x9999, &TWO);
    assert_eq!(fx.egress(&out[1]), (TC_ACT_UNSPEC, out[1].clone()));
    assert_eq!(fx.counters(), vec![(Counter::NpDropFragUnknown, 1), (Counter::NpFragUntracked, 2)]);
}
