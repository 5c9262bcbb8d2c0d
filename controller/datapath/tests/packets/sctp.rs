//! SCTP NodePorts: the same NAT as TCP and UDP, with the CRC32c patched for every port rewrite
//! (bpf/lib/sctp.h). `parse` checks the CRC of every frame that comes out, so each assertion on
//! a flow also proves the packet would be accepted. First the arithmetic itself, unprivileged.

use crate::harness::*;

/// The reflected CRC32c polynomial (x^32 implied).
const POLY: u32 = 0x82f6_3b78;

/// a * b mod P in the reflected register (bit 31 is x^0), as crc32c_mul in sctp.h.
fn mul(mut a: u32, mut b: u32) -> u32 {
    let mut prod = 0;
    while a != 0 {
        if a >> 31 != 0 {
            prod ^= b;
        }
        a <<= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    prod
}

/// x^n mod P, one step at a time.
fn x_pow(n: u32) -> u32 {
    (0..n).fold(1 << 31, |v, _| if v & 1 != 0 { (v >> 1) ^ POLY } else { v >> 1 })
}

/// The table named `name` in sctp.h.
fn c_table(name: &str) -> Vec<u32> {
    let header = include_str!("../../../../bpf/lib/sctp.h");
    let start = header.find(&format!("{name}[256] = {{")).unwrap_or_else(|| panic!("{name} not in sctp.h"));
    let body = &header[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
    body.split(',').map(|w| u32::from_str_radix(w.trim().trim_start_matches("0x"), 16).unwrap()).collect()
}

#[test]
fn crc32c_is_the_one_sctp_uses() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283, "RFC 9260's check value");
}

#[test]
fn the_crc_tables_of_sctp_h_are_x_to_the_8l() {
    let lo = c_table("sctp_crc_shift_lo");
    let hi = c_table("sctp_crc_shift_hi");
    assert_eq!((lo.len(), hi.len()), (256, 256));
    for i in 0..256u32 {
        assert_eq!(lo[i as usize], x_pow(8 * i), "sctp_crc_shift_lo[{i}]");
    }
    // x^(2048 j) by repeated multiplication rather than 2048 j single steps: a second derivation.
    let step = x_pow(2048);
    let mut v = 1 << 31;
    for (j, &entry) in hi.iter().enumerate() {
        assert_eq!(entry, v, "sctp_crc_shift_hi[{j}]");
        v = mul(v, step);
    }
}

#[test]
fn a_port_rewrite_patched_by_linearity_equals_a_full_recompute() {
    let (lo, hi) = (c_table("sctp_crc_shift_lo"), c_table("sctp_crc_shift_hi"));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Every length class the tables split: below 256, around it, up to a jumbo frame and the
    // 16-bit maximum.
    let random_lengths: Vec<usize> = (0..200).map(|_| 12 + 4 * (next() as usize % 2000)).collect();
    for len in [12usize, 16, 252, 256, 260, 1480, 4096, 9000, 65532].into_iter().chain(random_lengths) {
        let mut pkt: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let crc = sctp_crc(&pkt);
        pkt[8..12].copy_from_slice(&crc.to_le_bytes());
        let new_ports = (next() as u32).to_ne_bytes();
        let d = u32::from_le_bytes(pkt[0..4].try_into().unwrap()) ^ u32::from_le_bytes(new_ports);
        let patched = u32::from_le_bytes(pkt[8..12].try_into().unwrap()) ^ mul(mul(d, lo[len & 0xff]), hi[len >> 8]);
        pkt[0..4].copy_from_slice(&new_ports);
        assert_eq!(patched, sctp_crc(&pkt), "length {len}");
    }
}

#[test]
fn the_packet_checker_rejects_a_wrong_sctp_crc() {
    let good = sctp(CLIENT, 1).to(NODE4, 2).data(b"abcd");
    assert_eq!(parse(&good).payload, b"abcd");
    for at in [14 + 20, 14 + 20 + 4, 14 + 20 + 8, 14 + 20 + 30] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        assert!(std::panic::catch_unwind(|| parse(&bad)).is_err(), "corrupted byte {at} passed");
    }
}

#[test]
fn sctp_nodeport_to_a_local_backend_and_the_reply_on_egress() {
    let Some(fx) = node("sctp-local").start() else { return };
    let c2f = sctp(CLIENT, 40000).to(NODE4, 30869);

    let seen = fx.ingress(&c2f.init()).expect(TC_ACT_OK);
    assert_eq!(seen.flow, sctp(CLIENT, 40000).to(LOCAL_BE, 13868), "DNAT only");
    assert_eq!(seen.payload[0], SCTP_INIT);
    let fwd = fx.ct_get(&c2f.ct_key(abi::CT_FORWARD)).expect("forward entry");
    assert_eq!((fwd.addr1, u16::from_be(fwd.port1_be), fwd.flags), (Addr::from(LOCAL_BE), 13868, abi::CT_F_LOCAL));
    assert_ne!(fwd.epoch, 0, "SCTP ages by epochs, as UDP");

    let b2c = sctp(LOCAL_BE, 13868).to(CLIENT, 40000);
    let seen = fx.egress(&b2c.packet().chunk(SCTP_INIT_ACK, &[0; 16]).build()).expect(TC_ACT_OK);
    assert_eq!(seen.flow, c2f.reply(), "the reply comes from the NodePort again");
    // Bigger than 256 bytes, so the CRC update takes both tables.
    let big = vec![0x5a; 1400];
    assert_eq!(fx.ingress(&c2f.data(&big)).expect(TC_ACT_OK).payload, big);
    assert_eq!(fx.egress(&b2c.data(&big)).expect(TC_ACT_OK).flow, c2f.reply());
    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpForward, 1), (Counter::NpReverse, 2)]);
}

#[test]
fn sctp_nodeport_to_a_remote_backend_is_snated_and_the_reply_reversed_on_ingress() {
    let Some(fx) = node("sctp-remote").start() else { return };
    let c2f = sctp(CLIENT, 40001).to(NODE4, 30868);
    let seen = fx.ingress(&c2f.init()).expect(TC_ACT_OK);
    assert_eq!(seen.flow, sctp(NODE4, 40001).to(REMOTE_BE, 13868));
    let reply = seen.flow.reply();
    assert_eq!(fx.ingress(&reply.data(b"answer")).expect(TC_ACT_OK).flow, c2f.reply());

    // Another client on the same port gets another SNAT port: both ports change at once.
    let other = sctp(Ipv4Addr::new(198, 51, 100, 21), 40001).to(NODE4, 30868);
    let seen = fx.ingress(&other.data(&[7; 300])).expect(TC_ACT_OK);
    assert_eq!((seen.flow.src, seen.flow.dst, seen.flow.dport), (IpAddr::from(NODE4), IpAddr::from(REMOTE_BE), 13868));
    assert_ne!(seen.flow.sport, 40001);
    let back = fx.ingress(&seen.flow.reply().data(&[8; 300])).expect(TC_ACT_OK);
    assert_eq!((back.flow, back.payload), (other.reply(), vec![8; 300]));

    // IPv6 the same way.
    let c6 = sctp(CLIENT6, 40002).to(NODE6, 30870);
    let seen = fx.ingress(&c6.init()).expect(TC_ACT_OK);
    assert_eq!(seen.flow, sctp(NODE6, 40002).to(REMOTE_BE6, 13868));
    assert_eq!(fx.ingress(&seen.flow.reply().data(b"v6")).expect(TC_ACT_OK).flow, c6.reply());
}

#[test]
fn an_offloaded_sctp_crc_is_left_for_the_device_to_fill_in() {
    let Some(fx) = node("sctp-offload").start() else { return };
    let c2f = sctp(CLIENT, 40003).to(NODE4, 30869);
    let seen = fx.ingress(&c2f.packet().payload(b"partial").without_udp_checksum().build()).expect(TC_ACT_OK);
    assert_eq!((seen.flow.dport, seen.l4_csum), (13868, 0));
}

#[test]
fn an_sctp_init_on_a_known_flow_is_balanced_afresh() {
    let Some(fx) = node("sctp-init").start() else { return };
    let c2f = sctp(CLIENT, 40004).to(NODE4, 30868);
    fx.ingress(&c2f.init()).expect(TC_ACT_OK);
    // The flow's backend stops answering; here, its entry names one that is not (any more) the
    // Service's. Chunks of the association follow the entry; a new INIT is balanced again.
    let key = c2f.ct_key(abi::CT_FORWARD);
    let stale = Ipv4Addr::new(10, 244, 2, 99);
    fx.ct_put([(key, abi::CtValue { addr1: Addr::from(stale), ..fx.ct_get(&key).unwrap() })]);
    assert_eq!(fx.ingress(&c2f.data(b"x")).expect(TC_ACT_OK).flow.dst, IpAddr::from(stale));
    assert_eq!(fx.ingress(&c2f.init()).expect(TC_ACT_OK).flow, sctp(NODE4, 40004).to(REMOTE_BE, 13868));
    assert_eq!(fx.ct_get(&key).unwrap().addr1, Addr::from(REMOTE_BE));
}

#[test]
fn xdp_translates_sctp_to_remote_backends_and_leaves_local_ones_to_tc() {
    let Some(fx) = node("sctp-xdp").accelerated().routed().start() else { return };
    let c2f = sctp(CLIENT, 40005).to(NODE4, 30868);
    let out = fx.xdp(&c2f.init());
    let seen = out.expect(XDP_REDIRECT);
    assert_eq!(seen.flow, sctp(NODE4, 40005).to(REMOTE_BE, 13868));
    assert_eq!(fx.ingress(&out.frame), (TC_ACT_UNSPEC, out.frame.clone()), "tc leaves a translated packet alone");
    let big = vec![3; 1200];
    assert_eq!(fx.xdp(&c2f.data(&big)).expect(XDP_REDIRECT).payload, big);
    assert_eq!(fx.xdp(&seen.flow.reply().data(b"r")).expect(XDP_REDIRECT).flow, c2f.reply());
    assert_eq!((fx.counter(Counter::XdpForward), fx.counter(Counter::XdpReverse)), (2, 1));

    let c6 = sctp(CLIENT6, 40006).to(NODE6, 30870);
    assert_eq!(fx.xdp(&c6.data(b"v6")).expect(XDP_REDIRECT).flow, sctp(NODE6, 40006).to(REMOTE_BE6, 13868));

    let local = sctp(CLIENT, 40007).to(NODE4, 30869).init();
    assert_eq!(fx.xdp(&local), (XDP_PASS, local.clone()));
    assert_eq!(fx.ingress(&local).expect(TC_ACT_OK).flow, sctp(CLIENT, 40007).to(LOCAL_BE, 13868));
}

#[test]
fn an_icmp_error_quoting_an_sctp_flow_is_translated() {
    let Some(fx) = node("sctp-icmp").start() else { return };
    let c2f = sctp(CLIENT, 40008).to(NODE4, 30868);
    let sent = fx.ingress(&c2f.data(&[0x55; 64]));
    assert_eq!(sent.seen().flow, sctp(NODE4, 40008).to(REMOTE_BE, 13868));
    // The quote keeps the verification tag (the client's stack matches the error by it).
    let out = fx.ingress(&icmp(REMOTE_BE, NODE4).frag_needed(1400).quoting(&sent.ip()[..20 + 8]));
    let e = out.icmp4();
    assert_eq!((e.src, e.dst, e.quoted), (NODE4, CLIENT, c2f));
    assert_eq!(&out.frame[14 + 20 + 8 + 20 + 4..][..4], &[0x11, 0x22, 0x33, 0x44]);
}
