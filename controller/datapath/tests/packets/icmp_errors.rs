//! ICMP errors about a translated flow are translated with it: the client must see an error
//! about the packet it sent (its own addresses and ports) from the address it sent it to.

use crate::harness::*;

#[test]
fn icmp_fragmentation_needed_from_a_remote_backend_is_translated() {
    let Some(fx) = node("icmp").start() else { return };
    // Through the LoadBalancer address, so the frontend differs from the SNAT address.
    let c2f = tcp(CLIENT_IN_RANGE, 43000).to(LB_REMOTE, 80);
    fx.ingress(&c2f.syn());
    let sent = fx.ingress(&c2f.data(&[0x55; 64]));
    assert_eq!(sent.seen().flow, tcp(NODE4, 43000).to(REMOTE_BE, 8080));

    // The backend says the SNATed packet was too big; Linux quotes as much as fits.
    let quoted = sent.ip();
    let err = icmp(REMOTE_BE, NODE4).frag_needed(1400).quoting(quoted);
    let out = fx.ingress(&err);
    assert_eq!(out.verdict, TC_ACT_OK, "translated towards the client, FIB miss -> stack");
    let e = out.icmp4();
    assert_eq!((e.src, e.dst), (LB_REMOTE, CLIENT_IN_RANGE), "an error from the backend itself comes from the frontend");
    assert_eq!((e.typ, e.code, e.rest), (3, 4, [0, 0, 0x05, 0x78]));
    assert_eq!(e.quoted, c2f, "the quoted packet is what the client sent");
    assert_eq!(out.frame.len(), err.len());
    assert_eq!(&out.frame[14 + 20 + 8 + 20 + 20..], &[0x55; 64], "quoted payload untouched");
    assert_eq!(fx.counter(Counter::NpIcmpError), 1);

    // From a router on the way: the outer source stays the router.
    let router = Ipv4Addr::new(10, 244, 2, 1);
    let out = fx.ingress(&icmp(router, NODE4).frag_needed(1400).quoting(&quoted[..28]));
    assert_eq!(out.verdict, TC_ACT_OK);
    let e = out.icmp4();
    assert_eq!((e.src, e.dst, e.quoted), (router, CLIENT_IN_RANGE, c2f));
    assert_eq!(fx.counter(Counter::NpIcmpError), 2);

    // An error quoting a flow nobody tracks is left alone.
    let mut unknown = quoted[..28].to_vec();
    unknown[20..22].copy_from_slice(&9999u16.to_be_bytes());
    let err = icmp(REMOTE_BE, NODE4).frag_needed(1400).quoting(&unknown);
    assert_eq!(fx.ingress(&err), (TC_ACT_UNSPEC, err.clone()));
    assert_eq!(fx.counter(Counter::NpIcmpError), 2);
}

#[test]
fn icmpv6_packet_too_big_from_a_remote_backend_is_translated() {
    let Some(fx) = node("icmp6").start() else { return };
    let c2f = tcp(CLIENT6, 43100).to(NODE6, 30084);
    fx.ingress(&c2f.syn());
    let sent = fx.ingress(&c2f.data(&[0x66; 32]));
    assert_eq!(sent.seen().flow, tcp(NODE6, 43100).to(REMOTE_BE6, 8080));

    let out = fx.ingress(&icmp(REMOTE_BE6, NODE6).too_big(1280).quoting(sent.ip()));
    assert_eq!(out.verdict, TC_ACT_OK, "translated towards the client, FIB miss -> stack");
    let e = out.icmp6();
    assert_eq!((e.src, e.dst), (NODE6, CLIENT6), "from the frontend, to the client");
    assert_eq!((e.typ, e.rest), (2, [0, 0, 0x05, 0x00]));
    assert_eq!(e.quoted, c2f, "the quoted packet is what the client sent");
    assert_eq!(fx.counter(Counter::NpIcmpError), 1);

    // Neighbour discovery and other ICMPv6 is none of the datapath's business.
    let ns = icmp(REMOTE_BE6, NODE6).message(135, 0, [0; 4]).quoting(&[0u8; 16]);
    assert_eq!(fx.ingress(&ns), (TC_ACT_UNSPEC, ns.clone()));
}

#[test]
fn icmp_unreachable_from_a_local_backend_is_translated_on_egress() {
    let Some(fx) = node("icmp-local").start() else { return };
    let c2f = tcp(CLIENT, 44000).to(NODE4, 30081);
    fx.ingress(&c2f.syn());
    let sent = fx.ingress(&c2f.data(b"ping"));
    assert_eq!(sent.seen().flow, tcp(CLIENT, 44000).to(LOCAL_BE, 8080));
    // "Communication administratively prohibited" from the local backend, quoting what it got.
    let err = icmp(LOCAL_BE, CLIENT).unreachable(13).quoting(sent.ip());
    let out = fx.egress(&err);
    assert_eq!(out.verdict, TC_ACT_OK);
    let e = out.icmp4();
    assert_eq!((e.src, e.dst, e.typ, e.code), (NODE4, CLIENT, 3, 13));
    assert_eq!(e.quoted, c2f);
    // Ingress does not touch errors about local flows.
    assert_eq!(fx.ingress(&err), (TC_ACT_UNSPEC, err.clone()));
    assert_eq!(fx.counter(Counter::NpIcmpError), 1);
}
