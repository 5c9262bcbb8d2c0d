/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ICMP errors about tracked flows (tc only): fragmentation needed or Packet Too Big,
 * unreachable, time exceeded. The error quotes the packet as the backend side saw it; the
 * quote is rewritten to what the client sent, with the checksums that cover it, and the outer
 * header to reach the client, so path MTU discovery and connection errors work through NAT.
 * Only the packet layout differs between ICMPv4 and ICMPv6: finding the quoted flow and what
 * it becomes is shared.
 */
#ifndef SLUICE_ICMP_H
#define SLUICE_ICMP_H

#include "conntrack.h"
#include "events.h"
#include "nat.h"

#define ICMP4_CSUM (L4_OFF_V4 + offsetof(struct icmphdr, checksum))
#define ICMP4_QUOTE (L4_OFF_V4 + sizeof(struct icmphdr))
#define ICMP4_QUOTE_PORTS (ICMP4_QUOTE + sizeof(struct iphdr))
#define ICMP6_CSUM (L4_OFF_V6 + ICMP6_CSUM_OFF)
#define ICMP6_QUOTE (L4_OFF_V6 + sizeof(struct icmphdr))
#define ICMP6_QUOTE_PORTS (ICMP6_QUOTE + sizeof(struct ipv6hdr))

/* The quoted packet's tuple (it went backend-ward), and what it must read instead. */
struct icmp_quote {
	struct sluice_addr src;
	struct sluice_addr dst;
	struct sluice_addr new_src;
	struct sluice_addr new_dst;
	__be16 sport;
	__be16 dport;
	__be16 new_sport;
	__be16 new_dport;
	__u8 proto;
	__u8 snat;
};

/* Reads the tuple an ICMPv4 error quotes; -1 when it is no error about a TCP, UDP or SCTP
 * packet. (The quote of an SCTP packet keeps its CRC: the 8 bytes quoted cannot be summed, and
 * the sender's stack checks only the verification tag.) */
static __always_inline int icmp4_quote(struct __sk_buff *skb, const struct pkt *p, struct icmp_quote *q)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct iphdr *iip = data + ICMP4_QUOTE;
	__be16 *iports = data + ICMP4_QUOTE_PORTS;

	if (p->icmp_type != ICMP_DEST_UNREACH && p->icmp_type != ICMP_TIME_EXCEEDED)
		return -1;
	if ((void *)(iports + 2) > data_end || iip->ihl != 5 ||
	    !has_ports(iip->protocol))
		return -1;
	addr_set_v4mapped(&q->src, iip->saddr);
	addr_set_v4mapped(&q->dst, iip->daddr);
	q->sport = iports[0];
	q->dport = iports[1];
	q->proto = iip->protocol;
	return 0;
}

/* The ICMPv6 counterpart of icmp4_quote. */
static __always_inline int icmp6_quote(struct __sk_buff *skb, const struct pkt *p, struct icmp_quote *q)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct ipv6hdr *iip = data + ICMP6_QUOTE;
	__be16 *iports = data + ICMP6_QUOTE_PORTS;

	if (p->icmp_type != ICMP6_DST_UNREACH && p->icmp_type != ICMP6_PACKET_TOO_BIG && p->icmp_type != ICMP6_TIME_EXCEEDED)
		return -1;
	if ((void *)(iports + 2) > data_end || !has_ports(iip->nexthdr))
		return -1;
	__builtin_memcpy(&q->src, &iip->saddr, 16);
	__builtin_memcpy(&q->dst, &iip->daddr, 16);
	q->sport = iports[0];
	q->dport = iports[1];
	q->proto = iip->nexthdr;
	return 0;
}

/* What the quote becomes, from its flow's reverse entry (the backend replying): the frontend
 * as destination and, under SNAT, the client as source. -1 when no tracked flow is quoted. */
static __always_inline int icmp_quote_translate(struct icmp_quote *q, int egress)
{
	enum ct_table table;
	struct sluice_ct_value *rev = ct_reply_lookup(q->proto, &q->dst, q->dport, &q->src, q->sport, egress, CT_HS_FALLBACK, &table);

	if (!rev)
		return -1;
	q->snat = !!(rev->flags & SLUICE_CT_F_SNAT);
	q->new_dst = rev->addr1;
	q->new_dport = rev->port1;
	q->new_src = q->snat ? rev->addr2 : q->src;
	q->new_sport = q->snat ? rev->port2 : q->sport;
	return 0;
}

/* The quoted ports, and the ICMP checksum that covers them. */
static __always_inline int icmp_quote_set_ports(struct __sk_buff *skb, __u32 icmp_csum, __u32 ports,
						const struct icmp_quote *q)
{
	return bpf_l4_csum_replace(skb, icmp_csum, q->sport, q->new_sport, 2) ||
	       bpf_l4_csum_replace(skb, icmp_csum, q->dport, q->new_dport, 2) ||
	       bpf_skb_store_bytes(skb, ports, &q->new_sport, 2, 0) ||
	       bpf_skb_store_bytes(skb, ports + 2, &q->new_dport, 2, 0);
}

/* The quoted IPv4 header's addresses and its own checksum, which the ICMP checksum covers too. */
static __always_inline int icmp4_quote_rewrite(struct __sk_buff *skb, const struct icmp_quote *q)
{
	const __u32 check = ICMP4_QUOTE + offsetof(struct iphdr, check);
	__be32 src = q->src.words[3], dst = q->dst.words[3];
	__be32 new_src = q->new_src.words[3], new_dst = q->new_dst.words[3];
	__sum16 old_check, new_check;
	struct iphdr *iip;

	iip = ctx_data(skb) + ICMP4_QUOTE;
	if ((void *)(iip + 1) > ctx_data_end(skb))
		return -1;
	old_check = iip->check;
	if (bpf_l3_csum_replace(skb, check, dst, new_dst, 4) || bpf_l3_csum_replace(skb, check, src, new_src, 4) ||
	    bpf_skb_store_bytes(skb, ICMP4_QUOTE + offsetof(struct iphdr, daddr), &new_dst, 4, 0) ||
	    bpf_skb_store_bytes(skb, ICMP4_QUOTE + offsetof(struct iphdr, saddr), &new_src, 4, 0))
		return -1;
	iip = ctx_data(skb) + ICMP4_QUOTE;
	if ((void *)(iip + 1) > ctx_data_end(skb))
		return -1;
	new_check = iip->check;
	return bpf_l4_csum_replace(skb, ICMP4_CSUM, dst, new_dst, 4) || bpf_l4_csum_replace(skb, ICMP4_CSUM, src, new_src, 4) ||
	       bpf_l4_csum_replace(skb, ICMP4_CSUM, old_check, new_check, 2) ||
	       icmp_quote_set_ports(skb, ICMP4_CSUM, ICMP4_QUOTE_PORTS, q);
}

static __always_inline int csum6_replace(struct __sk_buff *skb, __u32 csum_off, const struct sluice_addr *old,
					 const struct sluice_addr *new)
{
	__s64 diff = bpf_csum_diff((__be32 *)old->words, 16, (__be32 *)new->words, 16, 0);

	return bpf_l4_csum_replace(skb, csum_off, 0, diff, 0);
}

/* The quoted IPv6 header's addresses (it has no checksum of its own). */
static __always_inline int icmp6_quote_rewrite(struct __sk_buff *skb, const struct icmp_quote *q)
{
	return csum6_replace(skb, ICMP6_CSUM, &q->dst, &q->new_dst) || csum6_replace(skb, ICMP6_CSUM, &q->src, &q->new_src) ||
	       bpf_skb_store_bytes(skb, ICMP6_QUOTE + offsetof(struct ipv6hdr, daddr), q->new_dst.words, 16, 0) ||
	       bpf_skb_store_bytes(skb, ICMP6_QUOTE + offsetof(struct ipv6hdr, saddr), q->new_src.words, 16, 0) ||
	       icmp_quote_set_ports(skb, ICMP6_CSUM, ICMP6_QUOTE_PORTS, q);
}

/* An ICMP or ICMPv6 error `p` (its family's own protocol); NS_PASS unless it quotes a flow
 * this side translates. */
static __always_inline enum ns_action tc_icmp_error(struct __sk_buff *skb, struct pkt *p, int egress)
{
	struct icmp_quote q = {};

	if ((p->v6 ? icmp6_quote(skb, p, &q) : icmp4_quote(skb, p, &q)) || icmp_quote_translate(&q, egress))
		return NS_PASS;
	if (p->v6 ? icmp6_quote_rewrite(skb, &q) : icmp4_quote_rewrite(skb, &q))
		return ns_failed();
	/* Outer header: an error the backend itself sent appears to come from the frontend, and
	 * one for a SNATed flow goes to the client. set_addr fixes what covers the addresses (the
	 * IPv4 header checksum; ICMPv6's pseudo-header). */
	if (addr_eq(&p->saddr, &q.dst) && set_addr(skb, p, DIR_SRC, &p->saddr, &q.new_dst))
		return ns_failed();
	if (q.snat && set_addr(skb, p, DIR_DST, &p->daddr, &q.new_src))
		return ns_failed();
	sluice_count(SLUICE_CNT_NP_ICMP_ERROR);
	return q.snat ? NS_REDIRECT : NS_TO_STACK;
}

#endif
