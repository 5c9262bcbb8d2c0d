/* SPDX-License-Identifier: Apache-2.0 */
/* Parsing shared by tc and XDP. Only the common shapes are handled (Ethernet, IPv4 without
 * options, IPv6 without extension headers but a Fragment header right after the fixed one);
 * anything else is passed on untouched, which keeps every header at one of a few constant
 * offsets the verifier can check. */
#ifndef SLUICE_PACKET_H
#define SLUICE_PACKET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "lb.h"

/* linux/icmp.h and linux/icmpv6.h drag in libc headers that do not exist for the BPF target;
 * these are all we use. ICMPv6's first 8 bytes have the shape of struct icmphdr. */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};
#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3 /* code */
#define ICMP_TIME_EXCEEDED 11
#define ICMP6_DST_UNREACH 1
#define ICMP6_PORT_UNREACH 4 /* code */
#define ICMP6_PACKET_TOO_BIG 2
#define ICMP6_TIME_EXCEEDED 3
#define ICMP6_CSUM_OFF 2

/* IPv4 frag_off bits (the kernel's net/ip.h is not a UAPI header). */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* IPv6's Fragment extension header (RFC 8200, 4.5); the kernel's is not a UAPI header either. */
struct frag6hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units, shifted left by 3; M in bit 0 */
	__be32 id;
};
#define IP6_MF 0x0001
#define IP6_OFFSET 0xfff8

#define L3_OFF ETH_HLEN
#define L4_OFF_V4 (ETH_HLEN + sizeof(struct iphdr))
#define L4_OFF_V6 (ETH_HLEN + sizeof(struct ipv6hdr))

#define SLUICE_TCP_FIN 0x01
#define SLUICE_TCP_SYN 0x02
#define SLUICE_TCP_RST 0x04
#define SLUICE_TCP_ACK 0x10
#define SLUICE_SCTP_INIT 1 /* chunk type */

struct pkt {
	struct sluice_addr saddr;
	struct sluice_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 v6;
	union {
		__u8 icmp_type;	 /* when proto is ICMP/ICMPv6 */
		__u8 sctp_chunk; /* when proto is SCTP: its first chunk's type (0 if cut short) */
	};
	__u8 tcp_flags; /* when proto is TCP: FIN, SYN, RST, ... (0 if the header is cut short) */
	__u8 frag;      /* PKT_FRAG_*: a fragment, which frag.h tracks by frag_id */
	__be32 frag_id; /* IPv4's 16-bit identification as a number, or IPv6's */
	__u32 l4_off;
};

#define PKT_FRAG_FIRST 1 /* offset 0, more to come: carries the ports */
#define PKT_FRAG_LATER 2 /* no L4 header: its ports are the first fragment's (frag.h) */

enum parse_result {
	PARSE_OK,
	PARSE_OTHER,    /* not something we translate */
	PARSE_FRAGMENT, /* a later fragment: addresses and protocol only, no ports */
};

/* The protocols NAT translates: those with ports. */
static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/*
 * The Fragment header that directly follows `ip6`, or 0. Other extension headers are not
 * walked, before it or without it: hop-by-hop, routing and destination options are rare on
 * north-south traffic, and parse() has never gone past them.
 */
static __always_inline struct frag6hdr *ipv6_frag_hdr(struct ipv6hdr *ip6, void *data_end)
{
	struct frag6hdr *fh = (void *)(ip6 + 1);

	if (ip6->nexthdr != IPPROTO_FRAGMENT || (void *)(fh + 1) > data_end)
		return 0;
	return fh;
}

static __always_inline enum parse_result parse(void *data, void *data_end, struct pkt *p)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return PARSE_OTHER;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return PARSE_OTHER;
		addr_set_v4mapped(&p->saddr, ip->saddr);
		addr_set_v4mapped(&p->daddr, ip->daddr);
		p->proto = ip->protocol;
		p->v6 = 0;
		p->l4_off = L4_OFF_V4;
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) {
			p->frag_id = bpf_htonl(bpf_ntohs(ip->id));
			p->frag = ip->frag_off & bpf_htons(IP_OFFSET) ? PKT_FRAG_LATER : PKT_FRAG_FIRST;
		}
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct frag6hdr *fh;

		if ((void *)(ip6 + 1) > data_end)
			return PARSE_OTHER;
		__builtin_memcpy(&p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(&p->daddr, &ip6->daddr, 16);
		p->proto = ip6->nexthdr;
		p->v6 = 1;
		p->l4_off = L4_OFF_V6;
		fh = ipv6_frag_hdr(ip6, data_end);
		if (fh) {
			/* ICMPv6 errors fit the minimum MTU, so are never fragmented, and icmp.h reads
			 * them at fixed offsets. */
			if (fh->nexthdr == IPPROTO_ICMPV6)
				return PARSE_OTHER;
			p->proto = fh->nexthdr;
			p->l4_off = L4_OFF_V6 + sizeof(*fh);
			/* Offset 0 and no more to come (an atomic fragment) is a whole datagram. */
			if (fh->frag_off & bpf_htons(IP6_MF | IP6_OFFSET)) {
				p->frag_id = fh->id;
				p->frag = fh->frag_off & bpf_htons(IP6_OFFSET) ? PKT_FRAG_LATER : PKT_FRAG_FIRST;
			}
		}
	} else {
		return PARSE_OTHER;
	}
	/* SCTP sizes its packets to the path itself; the CRC32c of one IP fragmented anyway covers
	 * the whole packet, which a fragment cannot patch. */
	if (p->frag && p->proto == IPPROTO_SCTP)
		return PARSE_OTHER;
	if (p->frag == PKT_FRAG_LATER)
		return PARSE_FRAGMENT;
	if (has_ports(p->proto)) {
		/* TCP, UDP and SCTP all start with the two ports. */
		__be16 *ports = data + p->l4_off;

		if ((void *)(ports + 2) > data_end)
			return PARSE_OTHER;
		p->sport = ports[0];
		p->dport = ports[1];
		if (p->proto == IPPROTO_TCP) {
			__u8 *flags = data + p->l4_off + 13;

			if ((void *)(flags + 1) <= data_end)
				p->tcp_flags = *flags;
		} else if (p->proto == IPPROTO_SCTP) {
			__u8 *chunk = data + p->l4_off + 12;

			if ((void *)(chunk + 1) <= data_end)
				p->sctp_chunk = *chunk;
		}
		return PARSE_OK;
	}
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		__u8 *type = data + p->l4_off;

		if ((void *)(type + 1) > data_end)
			return PARSE_OTHER;
		p->icmp_type = *type;
		p->sport = 0;
		p->dport = 0;
		return PARSE_OK;
	}
	return PARSE_OTHER;
}

static __always_inline __u16 csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* Offset of the L4 checksum field, or 0 when there is none to fix. */
static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	/* A later fragment's datagram checksum is in the first fragment, which covers it. */
	if (p->frag == PKT_FRAG_LATER)
		return 0;
	switch (p->proto) {
	case IPPROTO_TCP:
		return p->l4_off + offsetof(struct tcphdr, check);
	case IPPROTO_UDP:
		return p->l4_off + offsetof(struct udphdr, check);
	case IPPROTO_ICMPV6:
		return p->l4_off + ICMP6_CSUM_OFF;
	default:
		/* ICMPv4's checksum does not cover the IP header; SCTP's CRC covers neither the
		 * addresses nor a pseudo-header (ports: sctp.h). */
		return 0;
	}
}

#endif
