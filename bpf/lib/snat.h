/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Source NAT for flows to remote backends: the node's address, and a source port on it that
 * no other flow to the same backend and no socket of the node itself holds.
 */
#ifndef SLUICE_SNAT_H
#define SLUICE_SNAT_H

#include "ctx.h"
#include "conntrack.h"

/*
 * Whether a socket of the node itself owns this tuple (as seen on a packet arriving:
 * saddr/sport the peer, daddr/dport the node). SNAT borrows the node's address and ports from
 * the same range its own sockets use, so a reply must not be taken for a NAT reply when the
 * node has a connection of that very tuple, and SNAT must not pick such a port. A TCP
 * listener takes any peer, so only a connection counts. A UDP socket counts when connected;
 * with `bound`, when it merely has the port (a reply to that port would reach it), which is
 * what choosing a SNAT port must avoid.
 */
static __always_inline int node_owns(ctx_t *ctx, __u8 proto, const struct sluice_addr *saddr, __be16 sport,
				     const struct sluice_addr *daddr, __be16 dport, int v6, int bound)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	int owned;

	/* No helper looks up SCTP sockets; the node's own associations are not seen. */
	if (proto == IPPROTO_SCTP)
		return 0;
	if (!v6) {
		t.ipv4.saddr = saddr->words[3];
		t.ipv4.daddr = daddr->words[3];
		t.ipv4.sport = sport;
		t.ipv4.dport = dport;
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, saddr->words, 16);
		__builtin_memcpy(t.ipv6.daddr, daddr->words, 16);
		t.ipv6.sport = sport;
		t.ipv6.dport = dport;
		size = sizeof(t.ipv6);
	}
	if (proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (proto == IPPROTO_TCP)
		owned = sk->state != BPF_TCP_LISTEN;
	else
		owned = bound || sk->state == BPF_TCP_ESTABLISHED;
	bpf_sk_release(sk);
	return owned;
}

/* Whether the node has no address of this family to SNAT to. An IPv6 node address may well
 * end in a zero word; only 0.0.0.0 or :: mean unset. */
static __always_inline int snat_addr_unset(const struct sluice_addr *snat, int v6)
{
	return snat->words[3] == 0 && (!v6 || (snat->words[0] | snat->words[1] | snat->words[2]) == 0);
}

/* XDP tries only the client's own port and leaves the search to tc: its stack has no room for
 * it, and a new flow's first packet through the stack costs little. */
#define SNAT_PORT_TRIES (CTX_XDP ? 1 : 4)

/*
 * Finds a source port on the node address that no other flow to this backend uses: the
 * client's own first, then random ones of the SNAT range. Entries live until the LRU evicts
 * them, so after enough flows to one backend most ports are held by flows long over: when no
 * free port turns up, one whose TCP flow has closed, whose handshake was given up, or whose UDP
 * flow has been idle too long, is taken over (tc only: XDP cannot tell the flow that held it).
 */
static __always_inline int snat_port(ctx_t *ctx, const struct pkt *p, const struct sluice_backend *be,
				     const struct sluice_addr *snat, __be16 *port)
{
	struct sluice_ct_key rk;
	struct sluice_ct_value *taken;
	enum ct_table table;
	__u16 candidate = bpf_ntohs(p->sport);
	__be16 finished = 0;
	__u8 now = ct_epoch(p->proto);

	ct_key(&rk, SLUICE_CT_REVERSE, p->proto, &be->addr, be->port, snat, 0);
#pragma unroll
	for (int i = 0; i < SNAT_PORT_TRIES; i++) {
		rk.dport = bpf_htons(candidate);
		taken = ct_find(p->proto, &rk, CT_HS_FALLBACK, &table);
		/* Free, or already this very flow's (its forward entry was evicted). */
		int ours = !taken || ct_reverse_is_flow(taken, p);

		if ((ours || (!CTX_XDP && !finished &&
			      (ct_closed(taken->flags) || ct_idle(taken, now) ||
			       (table == CT_HANDSHAKE && ct_handshake_stale(taken, ct_handshake_tick()))))) &&
		    !node_owns(ctx, p->proto, &be->addr, be->port, snat, rk.dport, p->v6, 1)) {
			if (ours) {
				*port = rk.dport;
				return 0;
			}
			finished = rk.dport;
		}
		candidate = SLUICE_SNAT_PORT_MIN + (bpf_get_prandom_u32() % (SLUICE_SNAT_PORT_MAX - SLUICE_SNAT_PORT_MIN + 1));
	}
	if (finished) {
		*port = finished;
		return 0;
	}
	return -1;
}

#endif
