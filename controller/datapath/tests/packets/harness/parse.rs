//! Reading what came out of a program. Every parser checks every checksum it passes (IPv4
//! header, L4, ICMP, the quoted header), so an assertion on addresses also proves the frame is
//! one a peer would accept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::net::*;
use super::packet::{Flow, csum_add, csum_fold, frame, pseudo_header, sctp_crc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub flow: Flow,
    /// The L4 checksum field as it is (to tell "left zero" from "recomputed"); for SCTP, the
    /// CRC32c field.
    pub l4_csum: u32,
    pub payload: Vec<u8>,
}

/// An ICMP error as it came out: outer addresses, type, code, the 4 bytes after the checksum,
/// and the flow of the packet it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenError<A> {
    pub src: A,
    pub dst: A,
    pub typ: u8,
    pub code: u8,
    pub rest: [u8; 4],
    pub quoted: Flow,
}

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

fn ports(proto: u8, src: IpAddr, dst: IpAddr, l4: &[u8]) -> Flow {
    Flow { src, sport: u16::from_be_bytes([l4[0], l4[1]]), dst, dport: u16::from_be_bytes([l4[2], l4[3]]), proto }
}

/// Parses a TCP, UDP or SCTP frame and checks the IPv4 header and L4 checksums (SCTP's CRC32c
/// unless it is 0, a sender's offloaded CRC).
pub fn parse(pkt: &[u8]) -> Seen {
    let ip = &pkt[14..];
    let (src, dst, proto, hl) = parse_ip(ip, "packet");
    let total = if ip[0] >> 4 == 4 { usize::from(u16::from_be_bytes([ip[2], ip[3]])) } else { 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])) };
    assert_eq!(total, ip.len(), "IP length field vs frame");
    let seg = &ip[hl..];
    let l4_csum = match proto {
        TCP => u32::from(u16::from_be_bytes([seg[16], seg[17]])),
        UDP => u32::from(u16::from_be_bytes([seg[6], seg[7]])),
        SCTP => u32::from_le_bytes(seg[8..12].try_into().unwrap()),
        p => panic!("proto {p}"),
    };
    if proto == SCTP {
        if l4_csum != 0 {
            assert_eq!(l4_csum, sctp_crc(seg), "SCTP CRC32c of {src}:{} -> {dst}:{} is wrong", u16::from_be_bytes([seg[0], seg[1]]), u16::from_be_bytes([seg[2], seg[3]]));
        }
    } else if !(proto == UDP && src.is_ipv4() && l4_csum == 0) {
        let sum = csum_add(csum_add(0, &pseudo_header(src, dst, proto, seg.len())), seg);
        assert_eq!(
            csum_fold(sum),
            0,
            "L4 checksum of {src}:{} -> {dst}:{} is wrong",
            u16::from_be_bytes([seg[0], seg[1]]),
            u16::from_be_bytes([seg[2], seg[3]])
        );
    }
    let payload = match proto {
        TCP => seg[20..].to_vec(),
        UDP => seg[8..].to_vec(),
        // A DATA chunk's user data (unpadded), or the whole chunk of any other.
        _ if seg[12] == SCTP_DATA => seg[28..12 + usize::from(u16::from_be_bytes([seg[14], seg[15]]))].to_vec(),
        _ => seg[12..].to_vec(),
    };
    Seen {
        dst_mac: pkt[0..6].try_into().unwrap(),
        src_mac: pkt[6..12].try_into().unwrap(),
        flow: ports(proto, src, dst, seg),
        l4_csum,
        payload,
    }
}

/// One fragment as it came out, its IPv4 header checksum checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// The IPv4 id (16 bits) or the IPv6 Fragment header's identification.
    pub id: u32,
    /// In bytes of the datagram's L4 segment.
    pub offset: usize,
    pub more: bool,
    pub data: Vec<u8>,
}

/// An IPv4 fragment, or an IPv6 one whose Fragment header follows the fixed header.
pub fn parse_fragment(pkt: &[u8]) -> Fragment {
    let ip = &pkt[14..];
    let (src, dst, proto, hl) = parse_ip(ip, "fragment");
    let (proto, id, frag, more, data) = if src.is_ipv4() {
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len(), "IP length field vs frame");
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        (proto, u32::from(u16::from_be_bytes([ip[4], ip[5]])), usize::from(frag & 0x1fff) * 8, frag & 0x2000 != 0, &ip[hl..])
    } else {
        assert_eq!(40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])), ip.len(), "IPv6 payload length vs frame");
        assert_eq!(proto, IPV6_FRAGMENT, "no Fragment header");
        let fh = &ip[40..48];
        let frag = u16::from_be_bytes([fh[2], fh[3]]);
        (fh[0], u32::from_be_bytes(fh[4..8].try_into().unwrap()), usize::from(frag & 0xfff8), frag & 1 != 0, &ip[48..])
    };
    Fragment { dst_mac: pkt[0..6].try_into().unwrap(), src_mac: pkt[6..12].try_into().unwrap(), src, dst, proto, id, offset: frag, more, data: data.to_vec() }
}

/// The datagram that these fragments (in any order) make, as a receiver would reassemble it:
/// every fragment must carry the same addresses, protocol and id, and they must cover the
/// datagram once; the whole is then checked as `parse` checks a packet (L4 checksum included).
pub fn reassemble(frames: &[Vec<u8>]) -> Seen {
    let mut frags: Vec<Fragment> = frames.iter().map(|f| parse_fragment(f)).collect();
    frags.sort_by_key(|f| f.offset);
    let first = &frags[0];
    let mut l4: Vec<u8> = Vec::new();
    for f in &frags {
        assert_eq!((f.src, f.dst, f.proto, f.id), (first.src, first.dst, first.proto, first.id), "fragments of one datagram disagree: {f:?}");
        assert_eq!(f.offset, l4.len(), "a gap or overlap before offset {}", f.offset);
        assert_eq!(f.more, f.offset != frags.last().unwrap().offset, "more fragments flagged on all but the last fragment");
        l4.extend(&f.data);
    }
    parse(&frame(first.dst_mac, first.src_mac, first.src, first.dst, first.proto, &l4))
}

/// Parses an ICMPv4 error frame, checking the outer IP, ICMP and inner IP checksums.
pub fn parse_icmp4_error(pkt: &[u8]) -> SeenError<Ipv4Addr> {
    let ip = &pkt[14..];
    let (src, dst, proto, hl) = parse_ip(ip, "outer header");
    assert_eq!(proto, ICMP);
    let m = &ip[hl..];
    assert_eq!(csum_fold(csum_add(0, m)), 0, "ICMP checksum is wrong");
    let inner = &m[8..];
    let (isrc, idst, iproto, ihl) = parse_ip(inner, "quoted header");
    let quoted = ports(iproto, isrc, idst, &inner[ihl..]);
    SeenError { src: v4(src), dst: v4(dst), typ: m[0], code: m[1], rest: m[4..8].try_into().unwrap(), quoted }
}

/// Parses an ICMPv6 error frame, checking the checksum over the pseudo-header of the addresses
/// it now carries. The quoted packet may be a first fragment (its ports behind a Fragment header).
pub fn parse_icmp6_error(pkt: &[u8]) -> SeenError<Ipv6Addr> {
    let ip = &pkt[14..];
    assert_eq!(ip[6], ICMP6, "next header ICMPv6");
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let m = &ip[40..];
    let sum = csum_add(csum_add(0, &pseudo_header(src.into(), dst.into(), ICMP6, m.len())), m);
    assert_eq!(csum_fold(sum), 0, "ICMPv6 checksum is wrong");
    let inner = &m[8..];
    let isrc = Ipv6Addr::from(<[u8; 16]>::try_from(&inner[8..24]).unwrap());
    let idst = Ipv6Addr::from(<[u8; 16]>::try_from(&inner[24..40]).unwrap());
    let (iproto, l4) = if inner[6] == IPV6_FRAGMENT { (inner[40], &inner[48..]) } else { (inner[6], &inner[40..]) };
    let quoted = ports(iproto, isrc.into(), idst.into(), l4);
    SeenError { src, dst, typ: m[0], code: m[1], rest: m[4..8].try_into().unwrap(), quoted }
}

pub fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}

/// The checker itself: a test that cannot fail proves nothing.
#[test]
fn the_packet_checker_rejects_wrong_checksums() {
    use super::packet::{icmp, tcp, udp};
    let good = tcp(CLIENT, 1).to(NODE4, 2).data(b"abc");
    parse(&good);
    for (what, at) in [("IPv4 header", 14 + 10), ("TCP", 14 + 20 + 16), ("address", 14 + 12), ("port", 14 + 20)] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        assert!(std::panic::catch_unwind(|| parse(&bad)).is_err(), "a corrupted {what} passed");
    }
    let mut bad = udp(CLIENT6, 1).to(NODE6, 2).data(b"abc");
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(std::panic::catch_unwind(|| parse(&bad)).is_err(), "a corrupted UDP/IPv6 payload passed");
    let datagram = udp(CLIENT, 1).to(NODE4, 2).packet().payload(&[7; 40]).fragments(9, &[16, 32]);
    assert_eq!(reassemble(&[datagram[2].clone(), datagram[0].clone(), datagram[1].clone()]).payload, [7; 40], "in any order");
    for (what, frag, at) in [("payload", 2, 14 + 20 + 3), ("IPv4 header", 1, 14 + 10)] {
        let mut bad = datagram.clone();
        bad[frag][at] ^= 0x40;
        assert!(std::panic::catch_unwind(|| reassemble(&bad)).is_err(), "a corrupted {what} of a fragment passed");
    }
    assert!(std::panic::catch_unwind(|| reassemble(&datagram[..2])).is_err(), "a datagram without its last fragment passed");
    let datagram6 = udp(CLIENT6, 1).to(NODE6, 2).packet().payload(&[7; 40]).fragments(0x1234_5678, &[16, 32]);
    assert_eq!(reassemble(&[datagram6[1].clone(), datagram6[2].clone(), datagram6[0].clone()]).payload, [7; 40], "IPv6, in any order");
    for (what, frag, at) in [("payload", 2, 14 + 48 + 3), ("identification", 1, 14 + 40 + 7)] {
        let mut bad = datagram6.clone();
        bad[frag][at] ^= 0x40;
        assert!(std::panic::catch_unwind(|| reassemble(&bad)).is_err(), "an IPv6 fragment with a corrupted {what} passed");
    }
    let quoted = &good[14..];
    let err = icmp(REMOTE_BE, NODE4).message(3, 4, [0; 4]).quoting(quoted);
    parse_icmp4_error(&err);
    for at in [14 + 20 + 2, 14 + 20 + 8 + 10, 14 + 20 + 8 + 12] {
        let mut bad = err.clone();
        bad[at] ^= 0x40;
        assert!(std::panic::catch_unwind(|| parse_icmp4_error(&bad)).is_err(), "corrupted byte {at} of an ICMP error passed");
    }
}
