//! Building the frames the programs are sent. A `Flow` is a 5-tuple, written the way it reads:
//! `tcp(CLIENT, 40000).to(NODE4, 30081)`; its packets come from it:
//!
//! - `flow.syn()`: a TCP flow's first segment;
//! - `flow.data(b"...")`: a segment (PSH|ACK) or datagram carrying that payload;
//! - `flow.segment(FIN | ACK)`: a TCP segment with just these flags;
//! - `flow.packet()...build()`: anything else (flags with a payload, no UDP checksum);
//! - `flow.init()`: an SCTP flow's first packet (an INIT chunk); `flow.data(..)` of an SCTP flow
//!   is a DATA chunk.
//! - `flow.packet().payload(..).fragments(id, &[cuts])`: an IPv4 or IPv6 packet cut into fragments.
//!
//! Every frame goes from MAC_CLIENT to MAC_NODE with correct checksums, so a wrong checksum in
//! what comes out is the program's. ICMP errors come from `icmp(src, dst)`.

use std::net::IpAddr;

use sluice_abi::{Addr, CtKey};

use super::net::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: u8,
}

/// The sending half of a flow, waiting for `.to(dst, dport)`.
#[derive(Clone, Copy)]
pub struct Source {
    src: IpAddr,
    sport: u16,
    proto: u8,
}

pub fn tcp(src: impl Into<IpAddr>, sport: u16) -> Source {
    Source { src: src.into(), sport, proto: TCP }
}

pub fn udp(src: impl Into<IpAddr>, sport: u16) -> Source {
    Source { src: src.into(), sport, proto: UDP }
}

pub fn sctp(src: impl Into<IpAddr>, sport: u16) -> Source {
    Source { src: src.into(), sport, proto: SCTP }
}

impl Source {
    pub fn to(self, dst: impl Into<IpAddr>, dport: u16) -> Flow {
        Flow { src: self.src, sport: self.sport, dst: dst.into(), dport, proto: self.proto }
    }
}

impl Flow {
    /// The same flow seen the other way round (a reply).
    pub fn reply(self) -> Flow {
        Flow { src: self.dst, sport: self.dport, dst: self.src, dport: self.sport, proto: self.proto }
    }

    /// The conntrack key of this tuple in direction `dir` (abi::CT_FORWARD or CT_REVERSE).
    pub fn ct_key(self, dir: u8) -> CtKey {
        CtKey {
            saddr: Addr::from(self.src),
            daddr: Addr::from(self.dst),
            sport_be: self.sport.to_be(),
            dport_be: self.dport.to_be(),
            proto: self.proto,
            dir,
            pad: 0,
        }
    }

    pub fn packet(self) -> Packet {
        Packet { flow: self, payload: Vec::new(), tcp_flags: None, seq: TCP_SEQ, ack: None, udp_checksum: true, chunk: None }
    }

    pub fn syn(self) -> Vec<u8> {
        self.packet().flags(SYN).build()
    }

    /// An SCTP INIT, the first packet of an association.
    pub fn init(self) -> Vec<u8> {
        self.packet().chunk(SCTP_INIT, &[0x11, 0x22, 0x33, 0x44, 0, 1, 0, 0, 0, 10, 0, 10, 0xaa, 0xbb, 0xcc, 0xdd]).build()
    }

    /// A TCP segment with these flags and nothing else.
    pub fn segment(self, flags: u8) -> Vec<u8> {
        self.packet().flags(flags).build()
    }

    /// The client's ACK that completes a handshake: it answers a SYN-ACK built here.
    pub fn handshake_ack(self) -> Vec<u8> {
        self.packet().flags(ACK).ack(TCP_SEQ.wrapping_add(1)).build()
    }

    /// A datagram, a TCP segment (PSH|ACK; SYN if `payload` is empty) or an SCTP DATA chunk,
    /// carrying `payload`.
    pub fn data(self, payload: &[u8]) -> Vec<u8> {
        self.packet().payload(payload).build()
    }
}

pub struct Packet {
    flow: Flow,
    payload: Vec<u8>,
    tcp_flags: Option<u8>,
    /// TCP's sequence number.
    seq: u32,
    /// TCP's acknowledgment number (else 0, or a fixed one with a payload).
    ack: Option<u32>,
    udp_checksum: bool,
    /// SCTP: the one chunk's type and value, instead of a DATA chunk carrying the payload.
    chunk: Option<(u8, Vec<u8>)>,
}

impl Packet {
    pub fn payload(mut self, payload: &[u8]) -> Packet {
        self.payload = payload.to_vec();
        self
    }

    pub fn flags(mut self, flags: u8) -> Packet {
        self.tcp_flags = Some(flags);
        self
    }

    pub fn seq(mut self, seq: u32) -> Packet {
        self.seq = seq;
        self
    }

    pub fn ack(mut self, ack: u32) -> Packet {
        self.ack = Some(ack);
        self
    }

    /// UDP over IPv4 may go without a checksum (0); the datapath must keep it that way. For
    /// SCTP: a CRC field left 0, as by a sender offloading it.
    pub fn without_udp_checksum(mut self) -> Packet {
        self.udp_checksum = false;
        self
    }

    /// SCTP: this chunk instead of DATA.
    pub fn chunk(mut self, typ: u8, value: &[u8]) -> Packet {
        self.chunk = Some((typ, value.to_vec()));
        self
    }

    pub fn build(self) -> Vec<u8> {
        let f = self.flow;
        let flags = self.tcp_flags.unwrap_or(if self.payload.is_empty() { SYN } else { PSH | ACK });
        let l4 = if f.proto == SCTP {
            sctp_packet(&f, self.chunk.unwrap_or_else(|| (SCTP_DATA, data_chunk_value(&self.payload))), self.udp_checksum)
        } else {
            segment(&f, &self.payload, self.udp_checksum, flags, self.seq, self.ack)
        };
        frame(MAC_NODE, MAC_CLIENT, f.src, f.dst, f.proto, &l4)
    }

    /// The packet as fragments with identification `id`, as a router (IPv4) or the sender
    /// (IPv6, a Fragment header right after the fixed one) would cut it: the L4 segment (header,
    /// payload) split after each of `cuts` bytes (multiples of 8), in sending order.
    pub fn fragments(self, id: u32, cuts: &[usize]) -> Vec<Vec<u8>> {
        let f = self.flow;
        let flags = self.tcp_flags.unwrap_or(if self.payload.is_empty() { SYN } else { PSH | ACK });
        let l4 = segment(&f, &self.payload, self.udp_checksum, flags, self.seq, self.ack);
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(l4.len());
        bounds
            .windows(2)
            .map(|w| {
                assert!(w[0] % 8 == 0 && w[0] < w[1], "fragment offsets are multiples of 8, increasing: {cuts:?}");
                let more = w[1] < l4.len();
                let chunk = &l4[w[0]..w[1]];
                if f.src.is_ipv6() {
                    let mut fh = vec![f.proto, 0];
                    fh.extend((w[0] as u16 | u16::from(more)).to_be_bytes());
                    fh.extend(id.to_be_bytes());
                    fh.extend(chunk);
                    return frame(MAC_NODE, MAC_CLIENT, f.src, f.dst, IPV6_FRAGMENT, &fh);
                }
                let id = u16::try_from(id).expect("an IPv4 id has 16 bits");
                let mut p = frame(MAC_NODE, MAC_CLIENT, f.src, f.dst, f.proto, chunk);
                p[18..20].copy_from_slice(&id.to_be_bytes());
                p[20..22].copy_from_slice(&(if more { 0x2000 } else { 0 } | (w[0] / 8) as u16).to_be_bytes());
                p[24..26].copy_from_slice(&[0, 0]);
                let c = csum_fold(csum_add(0, &p[14..34]));
                p[24..26].copy_from_slice(&c.to_be_bytes());
                p
            })
            .collect()
    }
}

/// An ICMP error from `src` to `dst` (ICMPv6 for IPv6 addresses), sent by a backend or a router
/// on its way: `icmp(REMOTE_BE, NODE4).frag_needed(1400).quoting(&sent[14..])`.
pub fn icmp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Icmp {
    Icmp { src: src.into(), dst: dst.into(), typ: 0, code: 0, rest: [0; 4] }
}

pub struct Icmp {
    src: IpAddr,
    dst: IpAddr,
    typ: u8,
    code: u8,
    rest: [u8; 4],
}

impl Icmp {
    /// ICMPv4 destination unreachable, fragmentation needed, with the next hop's MTU.
    pub fn frag_needed(self, mtu: u16) -> Icmp {
        self.message(3, 4, u32::from(mtu).to_be_bytes())
    }

    /// ICMPv4 destination unreachable with this code.
    pub fn unreachable(self, code: u8) -> Icmp {
        self.message(3, code, [0; 4])
    }

    /// ICMPv6 packet too big.
    pub fn too_big(self, mtu: u32) -> Icmp {
        self.message(2, 0, mtu.to_be_bytes())
    }

    /// Any message: type, code and the 4 bytes after the checksum.
    pub fn message(self, typ: u8, code: u8, rest: [u8; 4]) -> Icmp {
        Icmp { typ, code, rest, ..self }
    }

    /// The frame, quoting `quoted` (an IP packet without Ethernet header) after the header.
    pub fn quoting(self, quoted: &[u8]) -> Vec<u8> {
        let mut m = vec![self.typ, self.code, 0, 0];
        m.extend(self.rest);
        m.extend(quoted);
        let proto = if self.src.is_ipv4() { ICMP } else { ICMP6 };
        // ICMPv6 sums the pseudo-header, ICMPv4 only the message.
        let start = if proto == ICMP6 { csum_add(0, &pseudo_header(self.src, self.dst, proto, m.len())) } else { 0 };
        let c = csum_fold(csum_add(start, &m));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        frame(MAC_NODE, MAC_BACKEND, self.src, self.dst, proto, &m)
    }
}

// ------------------------------------------------------------------ wire format

pub(super) fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from(chunk[0]) << 8 };
        sum += u32::from(word);
    }
    sum
}

pub(super) fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(super) fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
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

/// The sequence number of every TCP segment built here (a backend's SYN-ACK included) unless
/// [`Packet::seq`] says otherwise.
pub const TCP_SEQ: u32 = 0x1000_0000;

/// A TCP or UDP segment of `f` with a correct checksum (or none, for UDP without one).
fn segment(f: &Flow, payload: &[u8], udp_checksum: bool, tcp_flags: u8, seq: u32, ack: Option<u32>) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(f.sport.to_be_bytes());
    s.extend(f.dport.to_be_bytes());
    let csum_at = match f.proto {
        TCP => {
            s.extend(seq.to_be_bytes());
            s.extend(ack.unwrap_or(if payload.is_empty() { 0u32 } else { 0x2000_0000 }).to_be_bytes());
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
    if f.proto == TCP || udp_checksum {
        let mut c = csum_fold(csum_add(csum_add(0, &pseudo_header(f.src, f.dst, f.proto, s.len())), &s));
        if f.proto == UDP && c == 0 {
            c = 0xffff;
        }
        s[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    s
}

/// CRC32c as SCTP uses it (RFC 9260, appendix A), bit by bit: slow and plainly right.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

/// The CRC32c an SCTP packet must carry: over the packet with its checksum field zero, stored
/// little-endian.
pub fn sctp_crc(packet: &[u8]) -> u32 {
    let mut zeroed = packet.to_vec();
    zeroed[8..12].fill(0);
    crc32c(&zeroed)
}

/// A DATA chunk's value: TSN, stream, stream sequence, payload protocol, then the user data.
fn data_chunk_value(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 46];
    v.extend(payload);
    v
}

/// An SCTP packet of `f` with one chunk (padded to 4 bytes) and its CRC32c (or 0 if not).
fn sctp_packet(f: &Flow, (typ, value): (u8, Vec<u8>), with_crc: bool) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(f.sport.to_be_bytes());
    s.extend(f.dport.to_be_bytes());
    s.extend(if typ == SCTP_INIT { [0; 4] } else { [0x11, 0x22, 0x33, 0x44] }); // verification tag
    s.extend([0; 4]);
    // DATA flags: unfragmented (B|E).
    s.extend([typ, if typ == SCTP_DATA { 3 } else { 0 }]);
    s.extend(((4 + value.len()) as u16).to_be_bytes());
    s.extend(&value);
    s.resize(s.len().next_multiple_of(4), 0);
    if with_crc {
        let crc = sctp_crc(&s);
        s[8..12].copy_from_slice(&crc.to_le_bytes());
    }
    s
}

fn ipv4_header(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, proto: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend(((20 + payload_len) as u16).to_be_bytes());
    h.extend([0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
    h.extend(src.octets());
    h.extend(dst.octets());
    let c = csum_fold(csum_add(0, &h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

pub(super) fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
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
