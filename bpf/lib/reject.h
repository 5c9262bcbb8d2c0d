/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kube-proxy's REJECT for a frontend without a usable endpoint (tc only): the packet is turned
 * into an ICMP or ICMPv6 port unreachable and sent back out of the device it came in on.
 */
#ifndef SLUICE_REJECT_H
#define SLUICE_REJECT_H

#include <linux/pkt_cls.h>
#include "events.h"

/* The first bytes of the rejected packet that its ICMP error quotes: its IP header and the 8
 * bytes after it (the ports), as RFC 792 asks; for IPv6, the headers up to the L4 header (a
 * first fragment's Fragment header too) and its first 8 bytes, so the client's stack can find
 * the socket the error is for. */
#define REJECT_QUOTE_V4 (sizeof(struct iphdr) + 8)
#define REJECT_QUOTE_V6 (sizeof(struct ipv6hdr) + 8)
#define REJECT_QUOTE_V6_MAX (REJECT_QUOTE_V6 + sizeof(struct frag6hdr))

/* Room to build an ICMP error in: tc's stack is nearly all taken by the forward path. */
struct reject_scratch {
	__u8 macs[2 * ETH_ALEN];
	__u8 pad[4];
	struct {
		struct iphdr ip;
		struct icmphdr icmp;
	} v4;
	struct {
		struct ipv6hdr ip;
		struct icmphdr icmp;
	} v6;
	struct {
		struct in6_addr saddr;
		struct in6_addr daddr;
		__be32 len;
		__be32 next;
	} pseudo;
	__u8 quoted[REJECT_QUOTE_V6_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct reject_scratch);
	__uint(max_entries, 1);
} sluice_reject_scratch SEC(".maps");

/* The scratch, with `skb` cut to its first `quote` bytes after Ethernet (kept in the scratch
 * too, as are the MACs) and room made for `room` bytes of new headers in front of them. */
static __always_inline struct reject_scratch *reject_start(struct __sk_buff *skb, __u32 quote, __u32 room)
{
	__u32 zero = 0;
	struct reject_scratch *r = bpf_map_lookup_elem(&sluice_reject_scratch, &zero);

	if (!r || quote > sizeof(r->quoted) || bpf_skb_load_bytes(skb, 0, r->macs, sizeof(r->macs)) ||
	    bpf_skb_load_bytes(skb, L3_OFF, r->quoted, quote) || bpf_skb_change_tail(skb, L3_OFF + quote, 0) ||
	    bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, 0))
		return 0;
	return r;
}

/* Completes the ICMP checksum over `icmp` and the quote (`sum`: what it covers before them,
 * ICMPv6's pseudo-header), writes the new headers, swaps the MACs, and sends the error out of
 * the device the packet came in on. */
static __always_inline int reject_send(struct __sk_buff *skb, struct reject_scratch *r, struct icmphdr *icmp, __u32 sum,
				       __u32 quote, const void *hdr, __u32 len)
{
	sum = bpf_csum_diff(0, 0, (__be32 *)icmp, sizeof(*icmp), sum);
	icmp->checksum = csum_fold(bpf_csum_diff(0, 0, (__be32 *)r->quoted, quote, sum));
	if (bpf_skb_store_bytes(skb, L3_OFF, hdr, len, 0) || bpf_skb_store_bytes(skb, 0, r->macs + ETH_ALEN, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, r->macs, ETH_ALEN, 0))
		return ns_failed(), TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* ICMP port unreachable back to the sender of `skb` (IPv4 without options, as parse() admits). */
static __attribute__((noinline, unused)) int tc_reject4(struct __sk_buff *skb)
{
	struct reject_scratch *r = reject_start(skb, REJECT_QUOTE_V4, sizeof(r->v4));
	struct iphdr *orig;

	if (!r)
		return ns_failed(), TC_ACT_SHOT;
	orig = (struct iphdr *)r->quoted;
	__builtin_memset(&r->v4, 0, sizeof(r->v4));
	r->v4.ip.version = 4;
	r->v4.ip.ihl = 5;
	r->v4.ip.tot_len = bpf_htons(sizeof(r->v4) + REJECT_QUOTE_V4);
	r->v4.ip.ttl = 64;
	r->v4.ip.protocol = IPPROTO_ICMP;
	r->v4.ip.saddr = orig->daddr;
	r->v4.ip.daddr = orig->saddr;
	r->v4.ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r->v4.ip, sizeof(r->v4.ip), 0));
	r->v4.icmp.type = ICMP_DEST_UNREACH;
	r->v4.icmp.code = ICMP_PORT_UNREACH;
	return reject_send(skb, r, &r->v4.icmp, 0, REJECT_QUOTE_V4, &r->v4, sizeof(r->v4));
}

/* ICMPv6 port unreachable back to the sender of `skb`, as tc_reject4, quoting the first
 * `quote` bytes of its IPv6 packet (REJECT_QUOTE_V6 or _MAX). */
static __attribute__((noinline, unused)) int tc_reject6(struct __sk_buff *skb, __u32 quote)
{
	struct reject_scratch *r = reject_start(skb, quote, sizeof(r->v6));
	struct ipv6hdr *orig;

	if (!r)
		return ns_failed(), TC_ACT_SHOT;
	orig = (struct ipv6hdr *)r->quoted;
	__builtin_memset(&r->v6, 0, sizeof(r->v6));
	r->v6.ip.version = 6;
	r->v6.ip.payload_len = bpf_htons(sizeof(r->v6.icmp) + quote);
	r->v6.ip.nexthdr = IPPROTO_ICMPV6;
	r->v6.ip.hop_limit = 64;
	r->v6.ip.saddr = orig->daddr;
	r->v6.ip.daddr = orig->saddr;
	r->v6.icmp.type = ICMP6_DST_UNREACH;
	r->v6.icmp.code = ICMP6_PORT_UNREACH;
	r->pseudo.saddr = r->v6.ip.saddr;
	r->pseudo.daddr = r->v6.ip.daddr;
	r->pseudo.len = bpf_htonl(sizeof(r->v6.icmp) + quote);
	r->pseudo.next = bpf_htonl(IPPROTO_ICMPV6);
	return reject_send(skb, r, &r->v6.icmp, bpf_csum_diff(0, 0, (__be32 *)&r->pseudo, sizeof(r->pseudo), 0),
			   quote, &r->v6, sizeof(r->v6));
}

#endif
