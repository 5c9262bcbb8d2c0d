/* SPDX-License-Identifier: Apache-2.0 */
/*
 * North-south load balancing (NodePort, ExternalIP, LoadBalancer), the flows themselves:
 * a client's packet to a frontend (ns_forward) and a backend's reply (ns_reverse). Shared by
 * the tc programs and, for remote backends, by XDP acceleration; the object's ctx.h context
 * decides which hook's variant each step takes.
 */
#ifndef SLUICE_NODEPORT_H
#define SLUICE_NODEPORT_H

#include "conntrack.h"
#include "events.h"
#include "fib.h"
#include "nat.h"
#include "snat.h"

static __always_inline __u32 hash_mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	h ^= h >> 16;
	return h;
}

/* The flow's addresses, ports and protocol in 32 bits, never 0 (0 means "no hash": random). The
 * same on every node, so Maglev sends a flow to the same backend whichever node it reaches. */
static __always_inline __u32 flow_hash(const struct pkt *p)
{
	__u32 h = 0x9e3779b9;

	h = hash_mix(h ^ p->saddr.words[0]);
	h = hash_mix(h ^ p->saddr.words[1]);
	h = hash_mix(h ^ p->saddr.words[2]);
	h = hash_mix(h ^ p->saddr.words[3]);
	h = hash_mix(h ^ p->daddr.words[0]);
	h = hash_mix(h ^ p->daddr.words[1]);
	h = hash_mix(h ^ p->daddr.words[2]);
	h = hash_mix(h ^ p->daddr.words[3]);
	h = hash_mix(h ^ (((__u32)p->sport << 16) | p->dport));
	h = hash_mix(h ^ p->proto);
	return h ? h : 1;
}

static __always_inline int bit_in(const __u64 *bits, __u16 n)
{
	return (bits[(n >> 6) & (SLUICE_PORT_FILTER_WORDS - 1)] >> (n & 63)) & 1;
}

/* An address's bit in the filter's `lb_addr`: its words folded, times 2^32 / the golden ratio,
 * the top 16 bits. sluice-abi's Addr::hash16 is the agent's copy; the packet tests of XDP's
 * drops fail if the two differ. */
static __always_inline __u16 addr_hash16(const struct sluice_addr *a)
{
	__u32 h = a->words[0] ^ a->words[1] ^ a->words[2] ^ a->words[3];

	return (h * 0x9e3779b1u) >> 16;
}

/* The port filter (struct sluice_port_filter), or 0 while it is not complete: then every
 * packet may be a north-south flow's. */
static __always_inline const struct sluice_port_filter *port_filter(void)
{
	__u32 zero = 0;
	const struct sluice_port_filter *f = bpf_map_lookup_elem(&SLUICE_MAP_PORT_FILTER, &zero);

	return f && (f->flags & SLUICE_PORT_FILTER_F_COMPLETE) ? f : 0;
}

/* Whether `p` may be a packet of a north-south flow, from its port alone: on ingress, to a
 * frontend's port; on egress, from a local backend's. */
static __always_inline int ns_port_possible(const struct sluice_port_filter *f, const struct pkt *p, int egress)
{
	if (!f)
		return 1;
	return egress ? bit_in(f->local_backend, bpf_ntohs(p->sport)) : bit_in(f->frontend, bpf_ntohs(p->dport));
}

/* Whether `a` may be a LoadBalancer or ExternalIP address (sluice_lb_addrs_v1). */
static __always_inline int lb_addr_possible(const struct sluice_port_filter *f, const struct sluice_addr *a)
{
	return !f || bit_in(f->lb_addr, addr_hash16(a));
}

/*
 * A packet of a known flow (its forward entry `found`, in `table`): records a close, keeps both
 * entries fresh, and copies the entry to `fwd` for the rewrite. NS_TRANSLATE, or the verdict.
 */
static __always_inline enum ns_action ns_follow(ctx_t *ctx, const struct pkt *p, struct sluice_ct_value *found,
						enum ct_table table, __u8 now, struct sluice_ct_value *fwd)
{
	struct sluice_ct_key rk;
	struct sluice_ct_value *rev;
	/* XDP leaves FIN and RST to tc, so only tc records closes. */
	__u8 close_bits = CTX_XDP ? 0 : ct_close_bits(p, SLUICE_CT_F_FIN_FWD);

	if (close_bits)
		found->flags |= close_bits;
	ct_touch(found, now);
	*fwd = *found;
	if (CTX_XDP && (fwd->flags & SLUICE_CT_F_LOCAL))
		return NS_PASS; /* tc delivers to local backends */
	/*
	 * The reverse entry is keyed by what the backend sees, which a later flow from the
	 * same client port to another frontend of the same backend may have taken over.
	 * Claim it back, or this flow's replies would carry the other frontend's address.
	 */
	ct_reverse_key(&rk, p, fwd);
	rev = ct_lookup(table, &rk);
	if (rev && ct_reverse_is_flow(rev, p)) {
		if (table == CT_HANDSHAKE && tcp_pure_syn(p) && ct_handshake_syn_again(ctx, p, found, rev) && CTX_XDP &&
		    (rev->flags & SLUICE_CT_F_XDP_UNANSWERED))
			sluice_count(SLUICE_CNT_XDP_SYN_UNANSWERED);
		if (close_bits)
			rev->flags |= close_bits;
		ct_touch(rev, now);
	} else if (!ct_closed(fwd->flags) && table != CT_HANDSHAKE) {
		/* (A closed flow's last ACK must not take back a port a new flow now holds; a
		 * handshake is too young to have lost its entry to a later flow.) */
		struct sluice_ct_value fresh = {};

		ct_reverse_value(&fresh, p, fwd->rev_nat_id, fwd->flags, now);
		ct_insert(table, &rk, &fresh);
	}
	if (!CTX_XDP)
		sluice_count(SLUICE_CNT_NP_FORWARD);
	return NS_TRANSLATE;
}

/* Select: the frontend `p` is for, and a backend of it. NS_TRANSLATE with `be` and
 * `rev_nat_id` set, or the verdict (NS_PASS: not a frontend). */
static __always_inline enum ns_action ns_select(const struct pkt *p, struct sluice_backend *be, __u32 *rev_nat_id)
{
	struct sluice_svc_key key = {};
	struct sluice_svc_value *svc;
	__u16 flags;

	frontend_key(&key, p);
	svc = lb_header(&key, 0);
	if (!svc)
		return NS_PASS;
	flags = svc->flags;
	*rev_nat_id = svc_rev_nat_id(svc);
	switch (lb_pick(&key, svc, be, &p->saddr, 0, svc->lb_alg == SLUICE_LB_ALG_MAGLEV ? flow_hash(p) : 0, 0)) {
	case LB_PICKED:
		break;
	case LB_NO_BACKEND:
		/* externalTrafficPolicy Local with endpoints only on other nodes drops, as
		 * kube-proxy does; no endpoint anywhere is rejected, as kube-proxy's REJECT (tc
		 * writes the ICMP error; XDP leaves the packet to it). */
		if ((flags & SLUICE_SVC_F_EXT_LOCAL) && !(flags & SLUICE_SVC_F_NO_ENDPOINTS))
			return ns_refuse(NS_DROP, SLUICE_CNT_NP_DROP_LOCAL_NONE, p, *rev_nat_id);
		if (CTX_XDP)
			return NS_PASS;
		return ns_refuse(NS_REJECT, SLUICE_CNT_NP_REJECT_NO_BACKEND, p, *rev_nat_id);
	default:
		return ns_refuse(NS_DROP, SLUICE_CNT_SOCK_MISSING_SLOT, p, *rev_nat_id);
	}
	if (addr_is_v4mapped(&be->addr) == p->v6)
		return ns_failed();
	return NS_TRANSLATE;
}

/*
 * NAT plan of a new flow to `be`: its forward entry in `fwd` (keyed `fk`) and its reverse
 * entry, with the node's address and a free port as source for a remote backend. Both are
 * written before the packet is touched, the reply path first so no reply can arrive before
 * it is known. NS_TRANSLATE, or the verdict.
 */
static __always_inline enum ns_action ns_plan(ctx_t *ctx, const struct pkt *p, const struct sluice_ct_key *fk,
					      const struct sluice_backend *be, __u32 rev_nat_id, __u8 now,
					      struct sluice_ct_value *fwd)
{
	struct sluice_ct_key rk;
	struct sluice_ct_handshake rev = {};

	fwd->addr1 = be->addr;
	fwd->port1 = be->port;
	fwd->rev_nat_id = narrow_rev_nat_id(rev_nat_id);
	fwd->epoch = now;
	if (be->flags & SLUICE_BACKEND_F_LOCAL) {
		fwd->flags = SLUICE_CT_F_LOCAL;
	} else {
		struct sluice_config *cfg = node_config();
		struct sluice_addr snat;

		if (!cfg)
			return ns_failed();
		snat = p->v6 ? cfg->node_ip6 : cfg->node_ip4;
		if (snat_addr_unset(&snat, p->v6))
			return ns_refuse(NS_DROP, SLUICE_CNT_NP_DROP_SNAT_PORT, p, rev_nat_id);
		if (snat_port(ctx, p, be, &snat, &fwd->port2)) {
			if (CTX_XDP)
				return NS_PASS; /* tc searches further */
			return ns_refuse(NS_DROP, SLUICE_CNT_NP_DROP_SNAT_PORT, p, rev_nat_id);
		}
		fwd->addr2 = snat;
		fwd->flags = SLUICE_CT_F_SNAT;
	}
	ct_reverse_value(&rev.ct, p, narrow_rev_nat_id(rev_nat_id),
			 fwd->flags | (CTX_XDP && (fwd->flags & SLUICE_CT_F_SNAT) ? SLUICE_CT_F_XDP_UNANSWERED : 0), now);
	ct_reverse_key(&rk, p, fwd);
	/* TCP starts in the handshake table (only a SYN gets here, see ns_forward). */
	if (p->proto == IPPROTO_TCP) {
		__be32 syn_seq;

		ct_handshake_start(ctx, p, &rev);
		syn_seq = rev.seq;
		rev.seq = 0; /* on the reverse entry: the SYN-ACK's, once answered */
		if (ct_handshake_insert(&rk, &rev))
			return ns_failed();
		rev.ct = *fwd;
		rev.seq = syn_seq;
		if (ct_handshake_insert(fk, &rev))
			return ns_failed();
	} else if (ct_insert(CT_OTHER, &rk, &rev.ct) || ct_insert(CT_OTHER, fk, fwd)) {
		return ns_failed();
	}
	pkt_event(SLUICE_CNT_NP_NEW_FLOW, p, rev_nat_id, &be->addr, be->port);
	/* XDP records its pick even for a local backend: tc then follows the entry instead of
	 * drawing again, which would skew the split towards remote backends. */
	if (CTX_XDP && (fwd->flags & SLUICE_CT_F_LOCAL)) {
		sluice_count(SLUICE_CNT_XDP_PASS_LOCAL);
		return NS_PASS;
	}
	if (!CTX_XDP)
		sluice_count(SLUICE_CNT_NP_NEW_FLOW);
	return NS_TRANSLATE;
}

/* Apply: the packet rewritten to the backend, and from the SNAT source if the flow has one. */
static __always_inline enum ns_action ns_apply(ctx_t *ctx, struct pkt *p, const struct sluice_ct_value *fwd,
					       struct bpf_fib_lookup *fib)
{
	if (route_translated(ctx, p, &fwd->addr2, &fwd->addr1, fib))
		return NS_PASS;
	/* Counted only when XDP really sends it; otherwise tc does and counts. */
	if (CTX_XDP)
		sluice_count(SLUICE_CNT_XDP_FORWARD);
	if (set_addr(ctx, p, DIR_DST, &p->daddr, &fwd->addr1))
		return ns_failed();
	if (fwd->flags & SLUICE_CT_F_SNAT) {
		if (set_addr(ctx, p, DIR_SRC, &p->saddr, &fwd->addr2) || set_ports(ctx, p, fwd->port2, fwd->port1))
			return ns_failed();
		return NS_REDIRECT;
	}
	if (set_ports(ctx, p, p->sport, fwd->port1))
		return ns_failed();
	return NS_TO_STACK;
}

/* A TCP packet other than a SYN, of no flow conntrack knows: to a frontend it is dropped and
 * starts nothing (spoofed ACKs cannot fill conntrack); to anything else it is not ours. To a
 * frontend without endpoints it goes on to ns_select (NS_TRANSLATE), refused as every packet
 * to such a Service is. */
static __always_inline enum ns_action ns_untracked(const struct pkt *p, int frontend)
{
	struct sluice_svc_key key = {};
	struct sluice_svc_value *svc;

	if (!frontend)
		return NS_PASS;
	frontend_key(&key, p);
	svc = lb_header(&key, 0);
	if (!svc)
		return NS_PASS;
	if (!svc->count)
		return NS_TRANSLATE;
	return ns_refuse(NS_DROP, CTX_XDP ? SLUICE_CNT_XDP_DROP_NOT_SYN : SLUICE_CNT_NP_DROP_NOT_SYN, p, svc_rev_nat_id(svc));
}

/* A packet from a client to a frontend: lookup of its flow, or select and NAT plan for a new
 * one; then apply. XDP gets the route of the translated packet back in `fib` (tc: unused). */
static __always_inline enum ns_action ns_forward(ctx_t *ctx, struct pkt *p, struct bpf_fib_lookup *fib)
{
	struct sluice_ct_key fk;
	struct sluice_ct_value *found, fwd = {};
	struct sluice_backend be;
	__u8 now = ct_epoch(p->proto);
	__u32 rev_nat_id = 0;
	enum ct_table table;
	enum ns_action act;
	int frontend;

	found = ct_forward_lookup(&fk, p, now, &table, &frontend);
	/* A handshake completes in tc (XDP has no stack left for it); a SYN sent again is
	 * followed where it is seen. */
	if (found && table == CT_HANDSHAKE && !tcp_pure_syn(p)) {
		if (CTX_XDP)
			return NS_PASS;
		found = ct_establish(ctx, p, &fk, found, &table);
		if (!found)
			return ns_failed();
	}
	if (found)
		act = ns_follow(ctx, p, found, table, now, &fwd);
	else if (p->proto == IPPROTO_TCP && !tcp_pure_syn(p) && (act = ns_untracked(p, frontend)) != NS_TRANSLATE)
		return act;
	else if (!frontend)
		return NS_PASS; /* looked up above: no frontend (a SYN between pods, say) */
	else if ((act = ns_select(p, &be, &rev_nat_id)) == NS_TRANSLATE)
		act = ns_plan(ctx, p, &fk, &be, rev_nat_id, now, &fwd);
	if (act != NS_TRANSLATE)
		return act;
	return ns_apply(ctx, p, &fwd, fib);
}

/* A reply from a backend: on ingress the SNATed ones (remote backends), on egress the ones
 * from local backends. Restores the frontend as source (and the client as destination). */
static __always_inline enum ns_action ns_reverse(ctx_t *ctx, struct pkt *p, int egress, struct bpf_fib_lookup *fib)
{
	struct sluice_ct_value *found, rev;
	enum ct_table table;
	int snat;

	/* On ingress only the replies of SNATed flows are translated, and they are addressed to the
	 * node's SNAT address: anything else (traffic between pods of different nodes above all)
	 * leaves without a conntrack lookup. */
	if (!egress) {
		struct sluice_config *cfg = node_config();

		if (!cfg || !addr_eq(&p->daddr, p->v6 ? &cfg->node_ip6 : &cfg->node_ip4))
			return NS_PASS;
	}
	found = ct_reply_lookup(p->proto, &p->saddr, p->sport, &p->daddr, p->dport, egress, ct_reply_handshake(p), &table);
	if (!found)
		return NS_PASS;
	if (table == CT_HANDSHAKE) {
		/* tc records the SYN-ACK the client's ACK must answer. */
		if (CTX_XDP)
			return NS_TO_STACK;
		ct_handshake_answered(ctx, p, found);
	}
	rev = *found;
	snat = !!(rev.flags & SLUICE_CT_F_SNAT);
	if (snat && node_owns(ctx, p->proto, &p->saddr, p->sport, &p->daddr, p->dport, p->v6, 0))
		return NS_PASS; /* the node's own connection reusing a port a NAT flow once had */
	if (found->flags & SLUICE_CT_F_XDP_UNANSWERED) {
		found->flags &= ~SLUICE_CT_F_XDP_UNANSWERED;
		sluice_count(SLUICE_CNT_XDP_FLOW_ANSWERED);
	}
	{
		__u8 close_bits = ct_close_bits(p, SLUICE_CT_F_FIN_REV);
		__u8 now = ct_epoch(p->proto);

		/* A close, or a UDP flow's first reply of an epoch: both entries learn of it (a
		 * flow whose client only listens must not look idle). XDP has no stack left for the
		 * second key: it hands these rare packets to the stack and tc (it never sees a FIN
		 * or RST here; those go to tc before). */
		if (close_bits || (now && found->epoch != now)) {
			struct sluice_ct_key fk;
			struct sluice_ct_value *fwd;

			if (CTX_XDP)
				return NS_TO_STACK;
			found->flags |= close_bits;
			ct_touch(found, now);
			ct_key(&fk, SLUICE_CT_FORWARD, p->proto, &rev.addr2, rev.port2, &rev.addr1, rev.port1);
			fwd = ct_lookup(table, &fk);
			if (fwd) {
				fwd->flags |= close_bits;
				ct_touch(fwd, now);
			}
		}
	}
	if (route_translated(ctx, p, &rev.addr1, &rev.addr2, fib))
		return NS_PASS;
	if (set_addr(ctx, p, DIR_SRC, &p->saddr, &rev.addr1) || (snat && set_addr(ctx, p, DIR_DST, &p->daddr, &rev.addr2)) ||
	    set_ports(ctx, p, rev.port1, snat ? rev.port2 : p->dport))
		return ns_failed();
	sluice_count(CTX_XDP ? SLUICE_CNT_XDP_REVERSE : SLUICE_CNT_NP_REVERSE);
	return snat ? NS_REDIRECT : NS_TO_STACK;
}

#endif
