/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Address and port rewrites with checksum fix-up, one flavour per hook (ctx.h): tc uses the
 * kernel's checksum helpers (correct for every skb checksum state, including CHECKSUM_PARTIAL
 * from local senders); XDP sees raw frames with complete checksums and patches them
 * incrementally.
 */
#ifndef SLUICE_NAT_H
#define SLUICE_NAT_H

#include <linux/pkt_cls.h>
#include "ctx.h"
#include "packet.h"
#include "sctp.h"

#define DIR_SRC 0
#define DIR_DST 1

#if CTX_XDP

/* RFC 1624 incremental update of a checksum field for `len` bytes changing from old to new. */
static __always_inline void csum_patch(__sum16 *field, void *old, void *new, __u32 len)
{
	__u32 seed = (__u16)~(*field);

	*field = csum_fold(bpf_csum_diff(old, len, new, len, seed));
}

/* Patches the L4 checksum at csum_off (if any). */
static __always_inline int patch_l4(ctx_t *ctx, const struct pkt *p, void *old, void *new, __u32 len)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	__u32 csum_off = l4_csum_off(p);
	__sum16 *csum;

	if (!csum_off)
		return 0;
	/* Below 128 by construction. A mask, not a comparison: clang may compare one copy of the
	 * value and build the pointer from another, which the verifier then cannot bound. */
	csum = data + (csum_off & 0x7f);
	if ((void *)(csum + 1) > data_end)
		return -1;
	/* UDP over IPv4 may carry no checksum; keep it that way. */
	if (p->proto == IPPROTO_UDP && !p->v6 && *csum == 0)
		return 0;
	csum_patch(csum, old, new, len);
	if (p->proto == IPPROTO_UDP && *csum == 0)
		*csum = 0xffff;
	return 0;
}

static __always_inline int set_addr(ctx_t *ctx, const struct pkt *p, int which,
				    const struct sluice_addr *old, const struct sluice_addr *new)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);

	if (!p->v6) {
		struct iphdr *ip = data + L3_OFF;
		__be32 o = old->words[3], n = new->words[3];

		if ((void *)(ip + 1) > data_end)
			return -1;
		csum_patch(&ip->check, &o, &n, sizeof(n));
		if (which == DIR_DST)
			ip->daddr = n;
		else
			ip->saddr = n;
		return patch_l4(ctx, p, &o, &n, sizeof(n));
	}
	struct ipv6hdr *ip6 = data + L3_OFF;
	struct sluice_addr o = *old, n = *new;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	if (which == DIR_DST)
		__builtin_memcpy(&ip6->daddr, &n, 16);
	else
		__builtin_memcpy(&ip6->saddr, &n, 16);
	return patch_l4(ctx, p, o.words, n.words, 16);
}

static __always_inline int store_port(ctx_t *ctx, const struct pkt *p, int which, __be16 old, __be16 new)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	__be16 *ports;
	__u32 o = old, n = new; /* bpf_csum_diff wants 4-byte multiples */

	if (p->l4_off > 64)
		return -1;
	ports = data + p->l4_off;
	if ((void *)(ports + 2) > data_end)
		return -1;
	ports[which == DIR_DST ? 1 : 0] = new;
	return patch_l4(ctx, p, &o, &n, sizeof(o));
}

#else /* tc */

static __always_inline int set_addr(ctx_t *skb, const struct pkt *p, int which,
				    const struct sluice_addr *old, const struct sluice_addr *new)
{
	__u32 csum_off = l4_csum_off(p);
	__u64 l4_flags = BPF_F_PSEUDO_HDR | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);

	if (!p->v6) {
		__be32 o = old->words[3], n = new->words[3];
		__u32 off = L3_OFF + (which == DIR_DST ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));

		if (csum_off && bpf_l4_csum_replace(skb, csum_off, o, n, l4_flags | sizeof(n)))
			return -1;
		if (bpf_l3_csum_replace(skb, L3_OFF + offsetof(struct iphdr, check), o, n, sizeof(n)))
			return -1;
		return bpf_skb_store_bytes(skb, off, &n, sizeof(n), 0);
	}
	__u32 off = L3_OFF + (which == DIR_DST ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr));
	if (csum_off) {
		__s64 diff = bpf_csum_diff((__be32 *)old->words, 16, (__be32 *)new->words, 16, 0);

		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, l4_flags))
			return -1;
	}
	/* Nothing in an SCTP packet sums the addresses to balance a CHECKSUM_COMPLETE sum. */
	return bpf_skb_store_bytes(skb, off, (void *)new->words, 16, p->proto == IPPROTO_SCTP ? BPF_F_RECOMPUTE_CSUM : 0);
}

static __always_inline int store_port(ctx_t *skb, const struct pkt *p, int which, __be16 old, __be16 new)
{
	__u32 csum_off = l4_csum_off(p);
	__u64 flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (csum_off && bpf_l4_csum_replace(skb, csum_off, old, new, flags | sizeof(new)))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + (which == DIR_DST ? 2 : 0), &new, sizeof(new), 0);
}

#endif

static __always_inline int set_port(ctx_t *ctx, const struct pkt *p, int which, __be16 old, __be16 new)
{
	/* A later fragment has no ports of its own: the first fragment's rewrite covers them. */
	if (old == new || p->frag == PKT_FRAG_LATER)
		return 0;
	return store_port(ctx, p, which, old, new);
}

/* Both ports at once, so SCTP's CRC is patched once per packet rather than once per port. */
static __always_inline int set_ports(ctx_t *ctx, const struct pkt *p, __be16 sport, __be16 dport)
{
	if (p->proto == IPPROTO_SCTP)
		return sctp_set_ports(ctx, p, sport, dport);
	return set_port(ctx, p, DIR_SRC, p->sport, sport) || set_port(ctx, p, DIR_DST, p->dport, dport);
}

#endif
