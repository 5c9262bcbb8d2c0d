/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Forwarding a translated packet out of the device the kernel's FIB picks. XDP must know the
 * way before it rewrites (route_translated); tc asks after rewriting (tc_forward), where a
 * missing neighbour can still be resolved.
 */
#ifndef SLUICE_FIB_H
#define SLUICE_FIB_H

#include <linux/pkt_cls.h>
#include "ctx.h"
#include "events.h"

#define AF_INET 2
#define AF_INET6 10

#if CTX_XDP

static __always_inline int set_macs(void *data, void *data_end, const struct bpf_fib_lookup *fib)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return 0;
}

static __always_inline long fib_route(ctx_t *ctx, const struct pkt *p, const struct sluice_addr *src,
				      const struct sluice_addr *dst, struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->ifindex = ctx->ingress_ifindex;
	fib->l4_protocol = p->proto;
	if (!p->v6) {
		fib->family = AF_INET;
		fib->ipv4_src = src->words[3];
		fib->ipv4_dst = dst->words[3];
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, src->words, 16);
		__builtin_memcpy(fib->ipv6_dst, dst->words, 16);
	}
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/*
 * XDP sends a translated packet out itself, so it must know the way before it rewrites: a
 * packet it could not send would reach the stack with the node's own address as source and
 * be dropped as martian. Without a FIB answer (no neighbour yet, say) XDP leaves the packet
 * untouched and tc translates it from the conntrack entry, resolving the neighbour.
 */
static __always_inline int route_translated(ctx_t *ctx, const struct pkt *p, const struct sluice_addr *src,
					    const struct sluice_addr *dst, struct bpf_fib_lookup *fib)
{
	if (fib_route(ctx, p, src, dst, fib) != BPF_FIB_LKUP_RET_SUCCESS) {
		sluice_count(SLUICE_CNT_NP_FIB_FAIL);
		return -1;
	}
	return 0;
}

/* Sends a translated frame where route_translated said: back out of the same device, or another. */
static __always_inline int xdp_send(ctx_t *ctx, const struct bpf_fib_lookup *fib)
{
	if (set_macs(ctx_data(ctx), ctx_data_end(ctx), fib))
		return ns_failed(), XDP_DROP;
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

#else /* tc */

static __always_inline int route_translated(ctx_t *ctx, const struct pkt *p, const struct sluice_addr *src,
					    const struct sluice_addr *dst, struct bpf_fib_lookup *fib)
{
	return 0;
}

/* Fills a FIB query from the (already translated) IP header; 0 on success. */
static __always_inline int fib_params(void *data, void *data_end, int v6, struct bpf_fib_lookup *fib)
{
	if (!v6) {
		struct iphdr *ip = data + L3_OFF;

		if ((void *)(ip + 1) > data_end)
			return -1;
		fib->family = AF_INET;
		fib->tos = ip->tos;
		fib->l4_protocol = ip->protocol;
		fib->tot_len = bpf_ntohs(ip->tot_len);
		fib->ipv4_src = ip->saddr;
		fib->ipv4_dst = ip->daddr;
		return 0;
	}
	struct ipv6hdr *ip6 = data + L3_OFF;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	fib->family = AF_INET6;
	fib->l4_protocol = ip6->nexthdr;
	fib->tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	__builtin_memcpy(fib->ipv6_src, &ip6->saddr, 16);
	__builtin_memcpy(fib->ipv6_dst, &ip6->daddr, 16);
	return 0;
}

static __always_inline int tc_forward(ctx_t *skb, int v6)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	if (fib_params(ctx_data(skb), ctx_data_end(skb), v6, &fib))
		return ns_failed(), TC_ACT_SHOT;
	fib.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		/* Through the helper, never a direct write: one direct write anywhere in a tc program
		 * makes the kernel unclone every packet the program sees (a copy of its head, for
		 * each TCP segment on egress, the original waiting for its ACK), ours or not. */
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
			return ns_failed(), TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
	/* No route known to the FIB helper: let the stack try. */
	sluice_count(SLUICE_CNT_NP_FIB_FAIL);
	return TC_ACT_OK;
}

#endif

#endif
