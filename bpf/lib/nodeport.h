/* SPDX-License-Identifier: Apache-2.0 */
/*
 * North-south load balancing (NodePort, ExternalIP, LoadBalancer): conntrack, DNAT to a backend,
 * SNAT to the node address for remote backends, reverse NAT of replies, FIB-based forwarding.
 * Shared by the tc programs and, for remote backends, by XDP acceleration.
 */
#ifndef SLUICE_NODEPORT_H
#define SLUICE_NODEPORT_H

#include "nat.h"

#define AF_INET 2
#define AF_INET6 10

enum ns_action {
	NS_PASS,     /* not ours: leave the packet alone */
	NS_DROP,
	NS_TO_STACK, /* translated; the stack delivers it (local backend, or reply to it) */
	NS_REDIRECT, /* translated; forward it out of the device the FIB picks */
	NS_REJECT,   /* answer the sender with an ICMP port unreachable (tc only) */
};

/* Tells a listening `sluice monitor` what became of a packet (to: where it was sent, if anywhere). */
static __always_inline void pkt_event(__u32 reason, int xdp, const struct pkt *p, __u16 rev_nat_id,
				      const struct sluice_addr *to, __be16 to_port)
{
	struct sluice_event *ev;

	if (!sluice_monitored() || !(ev = sluice_event_start(reason, xdp ? SLUICE_HOOK_XDP : SLUICE_HOOK_TC)))
		return;
	ev->proto = p->proto;
	ev->rev_nat_id = rev_nat_id;
	ev->saddr = p->saddr;
	ev->sport = p->sport;
	ev->daddr = p->daddr;
	ev->dport = p->dport;
	if (to) {
		ev->to_addr = *to;
		ev->to_port = to_port;
	}
	sluice_event_submit(ev);
}

/* A drop that should never happen (a rewrite, a map update or a bounds check failed): counted,
 * so a zero counter proves no packet was lost this way. */
static __always_inline enum ns_action ns_failed(void)
{
	sluice_count(SLUICE_CNT_NP_DROP_ERROR);
	return NS_DROP;
}

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

static __always_inline struct sluice_config *ns_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&SLUICE_MAP_CONFIG, &zero);
}

static __always_inline void ct_key_of(struct sluice_ct_key *k, const struct pkt *p, __u8 dir)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
}

/*
 * Whether a socket of the node itself owns this tuple (as seen on a packet arriving:
 * saddr/sport the peer, daddr/dport the node). SNAT borrows the node's address and ports from
 * the same range its own sockets use, so a reply must not be taken for a NAT reply when the
 * node has a connection of that very tuple, and SNAT must not pick such a port. A TCP
 * listener takes any peer, so only a connection counts. A UDP socket counts when connected;
 * with `bound`, when it merely has the port (a reply to that port would reach it), which is
 * what choosing a SNAT port must avoid.
 */
static __always_inline int node_owns(void *ctx, __u8 proto, const struct sluice_addr *saddr, __be16 sport,
				     const struct sluice_addr *daddr, __be16 dport, int v6, int bound)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	int owned;

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

static __always_inline int ct_closed(__u8 flags)
{
	return (flags & SLUICE_CT_F_CLOSED) == SLUICE_CT_F_CLOSED;
}

/* Now, in conntrack epochs (see sluice_ct_value.epoch); 0 for protocols that do not use them. */
static __always_inline __u8 ct_epoch(__u8 proto)
{
	__u8 now;

	if (proto != IPPROTO_UDP)
		return 0;
	now = bpf_ktime_get_coarse_ns() >> SLUICE_CT_EPOCH_SHIFT;
	return now ? now : 1;
}

static __always_inline int ct_idle(const struct sluice_ct_value *v, __u8 now)
{
	return now && v->epoch && (__u8)(now - v->epoch) >= SLUICE_CT_UDP_TIMEOUT_EPOCHS;
}

/* Marks a UDP entry as used now; written only when the epoch moved on, so at most once a minute. */
static __always_inline void ct_touch(struct sluice_ct_value *v, __u8 now)
{
	if (now && v->epoch != now)
		v->epoch = now;
}

/* The conntrack flags a TCP FIN or RST adds; `fin` is the bit of the side that sent it. */
static __always_inline __u8 ct_close_bits(const struct pkt *p, __u8 fin)
{
	if (p->proto != IPPROTO_TCP)
		return 0;
	if (p->tcp_flags & SLUICE_TCP_RST)
		return SLUICE_CT_F_CLOSED;
	return (p->tcp_flags & SLUICE_TCP_FIN) ? fin : 0;
}

/*
 * Finds a source port on the node address that no other flow to this backend uses. Entries
 * live until the LRU evicts them, so after enough flows to one backend most ports are held by
 * flows long over: when no free port turns up, one whose TCP flow has closed, or whose UDP
 * flow has been idle too long, is taken over.
 * XDP tries only the client's own port and leaves the search to tc: its stack has no room
 * for it, and a new flow's first packet through the stack costs little.
 */
static __always_inline int snat_port(void *ctx, int xdp, const struct pkt *p, const struct sluice_backend *be,
				     const struct sluice_addr *snat, __be16 *port)
{
	struct sluice_ct_key rk = {};
	struct sluice_ct_value *taken;
	__u16 candidate = bpf_ntohs(p->sport);
	__be16 finished = 0;
	__u8 now = ct_epoch(p->proto);

	rk.saddr = be->addr;
	rk.daddr = *snat;
	rk.sport = be->port;
	rk.proto = p->proto;
	rk.dir = SLUICE_CT_REVERSE;
#pragma unroll
	for (int i = 0; i < (xdp ? 1 : 4); i++) {
		rk.dport = bpf_htons(candidate);
		taken = bpf_map_lookup_elem(&SLUICE_MAP_CT, &rk);
		/* Free, or already this very flow's (its forward entry was evicted). The same client
		 * port towards another frontend is another flow: sharing the SNAT tuple would send
		 * its replies back with the wrong source. */
		int ours = !taken || (addr_eq(&taken->addr2, &p->saddr) && taken->port2 == p->sport &&
				      addr_eq(&taken->addr1, &p->daddr) && taken->port1 == p->dport);

		if ((ours || (!xdp && !finished && (ct_closed(taken->flags) || ct_idle(taken, now)))) &&
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

/*
 * XDP sends a translated packet out itself, so it must know the way before it rewrites:
 * a packet it could not send would reach the stack with the node's own address as source
 * and be dropped as martian. Without a FIB answer (no neighbour yet, say) XDP leaves the
 * packet untouched and tc translates it from the conntrack entry, resolving the neighbour.
 */
static __always_inline long fib_route(struct xdp_md *ctx, const struct pkt *p, const struct sluice_addr *src,
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

static __always_inline int xdp_route(struct xdp_md *ctx, const struct pkt *p, const struct sluice_addr *src,
				     const struct sluice_addr *dst, struct bpf_fib_lookup *fib)
{
	if (fib_route(ctx, p, src, dst, fib) != BPF_FIB_LKUP_RET_SUCCESS) {
		sluice_count(SLUICE_CNT_NP_FIB_FAIL);
		return -1;
	}
	return 0;
}

/* A packet from a client to a frontend: find or create its flow, then translate. XDP passes
 * `fib` and gets the route of the translated packet back in it. */
static __always_inline enum ns_action ns_forward(void *ctx, int xdp, struct pkt *p, struct bpf_fib_lookup *fib)
{
	struct sluice_ct_key fk = {};
	struct sluice_ct_value *found, fwd = {};
	__u8 now = ct_epoch(p->proto);

	ct_key_of(&fk, p, SLUICE_CT_FORWARD);
	found = bpf_map_lookup_elem(&SLUICE_MAP_CT, &fk);
	/* An idle UDP flow is over: this datagram starts a new one, balanced afresh. */
	if (found && ct_idle(found, now))
		found = 0;
	/* A SYN on the tuple of a closed flow is a new connection on a reused client port: it is
	 * balanced afresh, and does not claim back a SNAT port another flow may hold by now. */
	if (found && p->proto == IPPROTO_TCP && ct_closed(found->flags) &&
	    (p->tcp_flags & (SLUICE_TCP_SYN | SLUICE_TCP_ACK)) == SLUICE_TCP_SYN)
		found = 0;
	if (found) {
		struct sluice_ct_key rk = {};
		struct sluice_ct_value *rev;
		/* XDP leaves FIN and RST to tc, so only tc records closes. */
		__u8 close_bits = xdp ? 0 : ct_close_bits(p, SLUICE_CT_F_FIN_FWD);

		if (close_bits)
			found->flags |= close_bits;
		ct_touch(found, now);
		fwd = *found;
		if (xdp && (fwd.flags & SLUICE_CT_F_LOCAL))
			return NS_PASS; /* tc delivers to local backends */
		/*
		 * The reverse entry is keyed by what the backend sees, which a later flow from the
		 * same client port to another frontend of the same backend may have taken over.
		 * Claim it back, or this flow's replies would carry the other frontend's address.
		 */
		rk.saddr = fwd.addr1;
		rk.sport = fwd.port1;
		rk.proto = p->proto;
		rk.dir = SLUICE_CT_REVERSE;
		rk.daddr = (fwd.flags & SLUICE_CT_F_SNAT) ? fwd.addr2 : p->saddr;
		rk.dport = (fwd.flags & SLUICE_CT_F_SNAT) ? fwd.port2 : p->sport;
		rev = bpf_map_lookup_elem(&SLUICE_MAP_CT, &rk);
		if (rev && addr_eq(&rev->addr1, &p->daddr) && rev->port1 == p->dport &&
		    addr_eq(&rev->addr2, &p->saddr) && rev->port2 == p->sport) {
			if (xdp && (rev->flags & SLUICE_CT_F_XDP_UNANSWERED) &&
			    (p->tcp_flags & (SLUICE_TCP_SYN | SLUICE_TCP_ACK)) == SLUICE_TCP_SYN)
				sluice_count(SLUICE_CNT_XDP_SYN_UNANSWERED);
			if (close_bits)
				rev->flags |= close_bits;
			ct_touch(rev, now);
		} else if (!ct_closed(fwd.flags)) {
			/* (A closed flow's last ACK must not take back a port a new flow now holds.) */
			struct sluice_ct_value fresh = {};

			fresh.addr1 = p->daddr;
			fresh.port1 = p->dport;
			fresh.addr2 = p->saddr;
			fresh.port2 = p->sport;
			fresh.rev_nat_id = fwd.rev_nat_id;
			fresh.flags = fwd.flags;
			fresh.epoch = now;
			bpf_map_update_elem(&SLUICE_MAP_CT, &rk, &fresh, BPF_ANY);
		}
		if (!xdp)
			sluice_count(SLUICE_CNT_NP_FORWARD);
	} else {
		struct sluice_svc_key key = {};
		struct sluice_svc_value *svc;
		struct sluice_backend be;
		struct sluice_ct_key rk = {};
		struct sluice_ct_value rev = {};
		__u16 flags, rev_nat_id;
		__u32 reason;

		key.addr = p->daddr;
		key.port = p->dport;
		key.proto = p->proto;
		svc = lb_header(&key, 0);
		if (!svc)
			return NS_PASS;
		flags = svc->flags;
		rev_nat_id = svc->rev_nat_id;
		switch (lb_pick(&key, svc, &be, &p->saddr, 0, svc->lb_alg == SLUICE_LB_ALG_MAGLEV ? flow_hash(p) : 0, 0)) {
		case LB_PICKED:
			break;
		case LB_NO_BACKEND:
			/* externalTrafficPolicy Local with endpoints only on other nodes drops, as
			 * kube-proxy does; no endpoint anywhere is rejected, as kube-proxy's REJECT (tc
			 * writes the ICMP error; XDP leaves the packet to it). */
			if ((flags & SLUICE_SVC_F_EXT_LOCAL) && !(flags & SLUICE_SVC_F_NO_ENDPOINTS)) {
				reason = SLUICE_CNT_NP_DROP_LOCAL_NONE;
				goto drop;
			}
			if (xdp)
				return NS_PASS;
			sluice_count(SLUICE_CNT_NP_REJECT_NO_BACKEND);
			pkt_event(SLUICE_CNT_NP_REJECT_NO_BACKEND, xdp, p, rev_nat_id, 0, 0);
			return NS_REJECT;
		default:
			reason = SLUICE_CNT_SOCK_MISSING_SLOT;
			goto drop;
		}
		if (addr_is_v4mapped(&be.addr) == p->v6)
			return ns_failed();
		fwd.addr1 = be.addr;
		fwd.port1 = be.port;
		fwd.rev_nat_id = rev_nat_id;
		fwd.epoch = now;
		rev.epoch = now;
		rev.addr1 = p->daddr;
		rev.port1 = p->dport;
		rev.addr2 = p->saddr;
		rev.port2 = p->sport;
		rev.rev_nat_id = rev_nat_id;
		rk.saddr = be.addr;
		rk.sport = be.port;
		rk.proto = p->proto;
		rk.dir = SLUICE_CT_REVERSE;
		if (be.flags & SLUICE_BACKEND_F_LOCAL) {
			fwd.flags = SLUICE_CT_F_LOCAL;
			rev.flags = SLUICE_CT_F_LOCAL;
			rk.daddr = p->saddr;
			rk.dport = p->sport;
		} else {
			struct sluice_config *cfg = ns_config();
			struct sluice_addr snat;

			if (!cfg)
				return ns_failed();
			snat = p->v6 ? cfg->node_ip6 : cfg->node_ip4;
			/* An IPv6 node address may well end in a zero word; only 0.0.0.0 or :: mean unset. */
			if (snat.words[3] == 0 && (!p->v6 || (snat.words[0] | snat.words[1] | snat.words[2]) == 0)) {
				reason = SLUICE_CNT_NP_DROP_SNAT_PORT;
				goto drop;
			}
			if (snat_port(ctx, xdp, p, &be, &snat, &fwd.port2)) {
				if (xdp)
					return NS_PASS; /* tc searches further */
				reason = SLUICE_CNT_NP_DROP_SNAT_PORT;
				goto drop;
			}
			fwd.addr2 = snat;
			fwd.flags = SLUICE_CT_F_SNAT;
			rev.flags = SLUICE_CT_F_SNAT | (xdp ? SLUICE_CT_F_XDP_UNANSWERED : 0);
			rk.daddr = snat;
			rk.dport = fwd.port2;
		}
		/* The reply path first, so no reply can arrive before it is known. */
		if (bpf_map_update_elem(&SLUICE_MAP_CT, &rk, &rev, BPF_ANY) ||
		    bpf_map_update_elem(&SLUICE_MAP_CT, &fk, &fwd, BPF_ANY))
			return ns_failed();
		pkt_event(SLUICE_CNT_NP_NEW_FLOW, xdp, p, rev_nat_id, &be.addr, be.port);
		/* XDP records its pick even for a local backend: tc then follows the entry instead of
		 * drawing again, which would skew the split towards remote backends. */
		if (xdp && (fwd.flags & SLUICE_CT_F_LOCAL)) {
			sluice_count(SLUICE_CNT_XDP_PASS_LOCAL);
			return NS_PASS;
		}
		if (!xdp)
			sluice_count(SLUICE_CNT_NP_NEW_FLOW);
		goto translate;
drop:
		sluice_count(reason);
		pkt_event(reason, xdp, p, rev_nat_id, 0, 0);
		return NS_DROP;
	}
translate:
	if (xdp) {
		/* Counted only when XDP really sends it; otherwise tc does and counts. */
		if (xdp_route(ctx, p, &fwd.addr2, &fwd.addr1, fib))
			return NS_PASS;
		sluice_count(SLUICE_CNT_XDP_FORWARD);
	}
	if (set_addr(ctx, xdp, p, DIR_DST, &p->daddr, &fwd.addr1) ||
	    set_port(ctx, xdp, p, DIR_DST, p->dport, fwd.port1))
		return ns_failed();
	if (fwd.flags & SLUICE_CT_F_SNAT) {
		if (set_addr(ctx, xdp, p, DIR_SRC, &p->saddr, &fwd.addr2) ||
		    set_port(ctx, xdp, p, DIR_SRC, p->sport, fwd.port2))
			return ns_failed();
		return NS_REDIRECT;
	}
	return NS_TO_STACK;
}

/* A reply from a backend: on ingress the SNATed ones (remote backends), on egress the ones
 * from local backends. Restores the frontend as source (and the client as destination). */
static __always_inline enum ns_action ns_reverse(void *ctx, int xdp, struct pkt *p, int egress, struct bpf_fib_lookup *fib)
{
	struct sluice_ct_key rk = {};
	struct sluice_ct_value *found, rev;
	int snat;

	ct_key_of(&rk, p, SLUICE_CT_REVERSE);
	found = bpf_map_lookup_elem(&SLUICE_MAP_CT, &rk);
	if (!found)
		return NS_PASS;
	rev = *found;
	snat = !!(rev.flags & SLUICE_CT_F_SNAT);
	if (snat == egress)
		return NS_PASS;
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
			struct sluice_ct_key fk = {};
			struct sluice_ct_value *fwd;

			if (xdp)
				return NS_TO_STACK;
			found->flags |= close_bits;
			ct_touch(found, now);
			fk.saddr = rev.addr2;
			fk.sport = rev.port2;
			fk.daddr = rev.addr1;
			fk.dport = rev.port1;
			fk.proto = p->proto;
			fk.dir = SLUICE_CT_FORWARD;
			fwd = bpf_map_lookup_elem(&SLUICE_MAP_CT, &fk);
			if (fwd) {
				fwd->flags |= close_bits;
				ct_touch(fwd, now);
			}
		}
	}
	if (xdp && xdp_route(ctx, p, &rev.addr1, &rev.addr2, fib))
		return NS_PASS;
	if (set_addr(ctx, xdp, p, DIR_SRC, &p->saddr, &rev.addr1) ||
	    set_port(ctx, xdp, p, DIR_SRC, p->sport, rev.port1))
		return ns_failed();
	if (snat) {
		if (set_addr(ctx, xdp, p, DIR_DST, &p->daddr, &rev.addr2) ||
		    set_port(ctx, xdp, p, DIR_DST, p->dport, rev.port2))
			return ns_failed();
	}
	sluice_count(xdp ? SLUICE_CNT_XDP_REVERSE : SLUICE_CNT_NP_REVERSE);
	return snat ? NS_REDIRECT : NS_TO_STACK;
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

static __always_inline int set_macs(void *data, void *data_end, const struct bpf_fib_lookup *fib)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return 0;
}

static __always_inline int tc_forward(struct __sk_buff *skb, int v6)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	if (fib_params((void *)(long)skb->data, (void *)(long)skb->data_end, v6, &fib))
		return ns_failed(), TC_ACT_SHOT;
	fib.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (set_macs((void *)(long)skb->data, (void *)(long)skb->data_end, &fib))
			return ns_failed(), TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
	/* No route known to the FIB helper: let the stack try. */
	sluice_count(SLUICE_CNT_NP_FIB_FAIL);
	return TC_ACT_OK;
}

static __always_inline __sum16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* The first bytes of the rejected packet that its ICMP error quotes: its IP header and the 8
 * bytes after it (the ports), as RFC 792 asks. */
#define REJECT_QUOTE_V4 (sizeof(struct iphdr) + 8)
#define REJECT_QUOTE_V6 (sizeof(struct ipv6hdr) + 8)

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
		struct icmphdr icmp; /* ICMPv6's first 8 bytes have the same shape */
	} v6;
	struct {
		struct in6_addr saddr;
		struct in6_addr daddr;
		__be32 len;
		__be32 next;
	} pseudo;
	__u8 quoted[REJECT_QUOTE_V6];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct reject_scratch);
	__uint(max_entries, 1);
} sluice_reject_scratch SEC(".maps");

/* Cuts `skb` to its first `quote` bytes after Ethernet, makes room for `room` bytes of new
 * headers in front of them, and keeps the MACs and the quote in `r`. */
static __always_inline int reject_prepare(struct __sk_buff *skb, struct reject_scratch *r, __u32 quote, __u32 room)
{
	if (quote > sizeof(r->quoted))
		return -1;
	return bpf_skb_load_bytes(skb, 0, r->macs, sizeof(r->macs)) || bpf_skb_load_bytes(skb, L3_OFF, r->quoted, quote) ||
	       bpf_skb_change_tail(skb, L3_OFF + quote, 0) || bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, 0);
}

/* Writes the new headers and swaps the MACs, then sends the error out of the device the
 * packet came in on. */
static __always_inline int reject_send(struct __sk_buff *skb, struct reject_scratch *r, const void *hdr, __u32 len)
{
	if (bpf_skb_store_bytes(skb, L3_OFF, hdr, len, 0) || bpf_skb_store_bytes(skb, 0, r->macs + ETH_ALEN, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, r->macs, ETH_ALEN, 0))
		return ns_failed(), TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* ICMP port unreachable back to the sender of `skb` (IPv4 without options, as parse() admits),
 * out of the device it came in on: kube-proxy's REJECT. */
static __attribute__((noinline, unused)) int tc_reject4(struct __sk_buff *skb)
{
	__u32 zero = 0, sum;
	struct reject_scratch *r = bpf_map_lookup_elem(&sluice_reject_scratch, &zero);
	struct iphdr *orig;

	if (!r || reject_prepare(skb, r, REJECT_QUOTE_V4, sizeof(r->v4)))
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
	r->v4.ip.check = csum_fold32(bpf_csum_diff(0, 0, (__be32 *)&r->v4.ip, sizeof(r->v4.ip), 0));
	r->v4.icmp.type = ICMP_DEST_UNREACH;
	r->v4.icmp.code = 3; /* port unreachable */
	sum = bpf_csum_diff(0, 0, (__be32 *)&r->v4.icmp, sizeof(r->v4.icmp), 0);
	r->v4.icmp.checksum = csum_fold32(bpf_csum_diff(0, 0, (__be32 *)r->quoted, REJECT_QUOTE_V4, sum));
	return reject_send(skb, r, &r->v4, sizeof(r->v4));
}

/* ICMPv6 port unreachable back to the sender of `skb`, as tc_reject4. */
static __attribute__((noinline, unused)) int tc_reject6(struct __sk_buff *skb)
{
	__u32 zero = 0, sum;
	struct reject_scratch *r = bpf_map_lookup_elem(&sluice_reject_scratch, &zero);
	struct ipv6hdr *orig;

	if (!r || reject_prepare(skb, r, REJECT_QUOTE_V6, sizeof(r->v6)))
		return ns_failed(), TC_ACT_SHOT;
	orig = (struct ipv6hdr *)r->quoted;
	__builtin_memset(&r->v6, 0, sizeof(r->v6));
	r->v6.ip.version = 6;
	r->v6.ip.payload_len = bpf_htons(sizeof(r->v6.icmp) + REJECT_QUOTE_V6);
	r->v6.ip.nexthdr = IPPROTO_ICMPV6;
	r->v6.ip.hop_limit = 64;
	r->v6.ip.saddr = orig->daddr;
	r->v6.ip.daddr = orig->saddr;
	r->v6.icmp.type = 1; /* destination unreachable */
	r->v6.icmp.code = 4; /* port unreachable */
	r->pseudo.saddr = r->v6.ip.saddr;
	r->pseudo.daddr = r->v6.ip.daddr;
	r->pseudo.len = bpf_htonl(sizeof(r->v6.icmp) + REJECT_QUOTE_V6);
	r->pseudo.next = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(0, 0, (__be32 *)&r->pseudo, sizeof(r->pseudo), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&r->v6.icmp, sizeof(r->v6.icmp), sum);
	r->v6.icmp.checksum = csum_fold32(bpf_csum_diff(0, 0, (__be32 *)r->quoted, REJECT_QUOTE_V6, sum));
	return reject_send(skb, r, &r->v6, sizeof(r->v6));
}

/* Sends a translated frame where xdp_route said: back out of the same device, or another. */
static __always_inline int xdp_send(struct xdp_md *ctx, const struct bpf_fib_lookup *fib)
{
	if (set_macs((void *)(long)ctx->data, (void *)(long)ctx->data_end, fib))
		return ns_failed(), XDP_DROP;
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

/*
 * An ICMPv4 error quoting a tracked flow (fragmentation needed, unreachable, time exceeded):
 * the quoted packet is rewritten to what the client sent, the ICMP and inner IP checksums are
 * fixed, and the outer destination becomes the client. Returns the action, NS_PASS if untracked.
 */
static __always_inline enum ns_action tc_icmp4_error(struct __sk_buff *skb, struct pkt *p, int egress)
{
	const __u32 icmp_csum = L4_OFF_V4 + offsetof(struct icmphdr, checksum);
	const __u32 inner = L4_OFF_V4 + sizeof(struct icmphdr);
	const __u32 inner_ports = inner + sizeof(struct iphdr);
	struct sluice_ct_key rk = {};
	struct sluice_ct_value *found, rev;
	void *data, *data_end;
	struct iphdr *iip;
	__be16 *iports;
	__be32 old_isrc, old_idst, new_isrc, new_idst, outer_src, outer_dst;
	__be16 old_isport, old_idport, new_isport, new_idport;
	__sum16 old_icheck, new_icheck;
	int snat;

	if (p->icmp_type != ICMP_DEST_UNREACH && p->icmp_type != ICMP_TIME_EXCEEDED)
		return NS_PASS;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	iip = data + inner;
	iports = data + inner_ports;
	if ((void *)(iports + 2) > data_end || iip->ihl != 5 ||
	    (iip->protocol != IPPROTO_TCP && iip->protocol != IPPROTO_UDP))
		return NS_PASS;
	/* The quoted packet went backend-ward; its reverse entry is keyed the other way round. */
	addr_set_v4mapped(&rk.saddr, iip->daddr);
	addr_set_v4mapped(&rk.daddr, iip->saddr);
	rk.sport = iports[1];
	rk.dport = iports[0];
	rk.proto = iip->protocol;
	rk.dir = SLUICE_CT_REVERSE;
	found = bpf_map_lookup_elem(&SLUICE_MAP_CT, &rk);
	if (!found)
		return NS_PASS;
	rev = *found;
	snat = !!(rev.flags & SLUICE_CT_F_SNAT);
	if (snat == egress)
		return NS_PASS;
	old_isrc = iip->saddr;
	old_idst = iip->daddr;
	old_isport = iports[0];
	old_idport = iports[1];
	old_icheck = iip->check;
	outer_src = p->saddr.words[3];
	outer_dst = p->daddr.words[3];
	new_idst = rev.addr1.words[3];
	new_idport = rev.port1;
	new_isrc = snat ? rev.addr2.words[3] : old_isrc;
	new_isport = snat ? rev.port2 : old_isport;

	/* Inner header: addresses (with its own checksum), then ports. */
	if (bpf_l3_csum_replace(skb, inner + offsetof(struct iphdr, check), old_idst, new_idst, 4) ||
	    bpf_l3_csum_replace(skb, inner + offsetof(struct iphdr, check), old_isrc, new_isrc, 4) ||
	    bpf_skb_store_bytes(skb, inner + offsetof(struct iphdr, daddr), &new_idst, 4, 0) ||
	    bpf_skb_store_bytes(skb, inner + offsetof(struct iphdr, saddr), &new_isrc, 4, 0) ||
	    bpf_skb_store_bytes(skb, inner_ports, &new_isport, 2, 0) ||
	    bpf_skb_store_bytes(skb, inner_ports + 2, &new_idport, 2, 0))
		return ns_failed();
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	iip = data + inner;
	if ((void *)(iip + 1) > data_end)
		return ns_failed();
	new_icheck = iip->check;
	/* The ICMP checksum covers every byte that changed inside it. */
	if (bpf_l4_csum_replace(skb, icmp_csum, old_idst, new_idst, 4) ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_isrc, new_isrc, 4) ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_isport, new_isport, 2) ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_idport, new_idport, 2) ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_icheck, new_icheck, 2))
		return ns_failed();
	/* Outer header: an error the backend itself sent appears to come from the frontend. */
	if (outer_src == old_idst) {
		if (bpf_l3_csum_replace(skb, L3_OFF + offsetof(struct iphdr, check), outer_src, new_idst, 4) ||
		    bpf_skb_store_bytes(skb, L3_OFF + offsetof(struct iphdr, saddr), &new_idst, 4, 0))
			return ns_failed();
	}
	if (snat) {
		if (bpf_l3_csum_replace(skb, L3_OFF + offsetof(struct iphdr, check), outer_dst, new_isrc, 4) ||
		    bpf_skb_store_bytes(skb, L3_OFF + offsetof(struct iphdr, daddr), &new_isrc, 4, 0))
			return ns_failed();
	}
	sluice_count(SLUICE_CNT_NP_ICMP_ERROR);
	return snat ? NS_REDIRECT : NS_TO_STACK;
}

/* The IPv6 counterpart: Packet Too Big, Destination Unreachable and Time Exceeded quoting a
 * tracked flow. ICMPv6's checksum covers a pseudo-header, so outer address changes count too. */
#define ICMP6_DST_UNREACH 1
#define ICMP6_PACKET_TOO_BIG 2
#define ICMP6_TIME_EXCEEDED 3

static __always_inline int csum6_replace(struct __sk_buff *skb, __u32 csum_off, struct sluice_addr *old,
					 struct sluice_addr *new, __u64 flags)
{
	__s64 diff = bpf_csum_diff((__be32 *)old->words, 16, (__be32 *)new->words, 16, 0);

	return bpf_l4_csum_replace(skb, csum_off, 0, diff, flags);
}

static __always_inline enum ns_action tc_icmp6_error(struct __sk_buff *skb, struct pkt *p, int egress)
{
	const __u32 icmp_csum = L4_OFF_V6 + ICMP6_CSUM_OFF;
	const __u32 inner = L4_OFF_V6 + 8;
	const __u32 inner_ports = inner + sizeof(struct ipv6hdr);
	struct sluice_ct_key rk = {};
	struct sluice_ct_value *found, rev;
	struct sluice_addr isrc, idst, new_isrc, new_idst, outer_src, outer_dst;
	__be16 old_isport, old_idport, new_isport, new_idport;
	void *data, *data_end;
	struct ipv6hdr *iip;
	__be16 *iports;
	int snat;

	if (p->icmp_type != ICMP6_DST_UNREACH && p->icmp_type != ICMP6_PACKET_TOO_BIG && p->icmp_type != ICMP6_TIME_EXCEEDED)
		return NS_PASS;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	iip = data + inner;
	iports = data + inner_ports;
	if ((void *)(iports + 2) > data_end || (iip->nexthdr != IPPROTO_TCP && iip->nexthdr != IPPROTO_UDP))
		return NS_PASS;
	__builtin_memcpy(&isrc, &iip->saddr, 16);
	__builtin_memcpy(&idst, &iip->daddr, 16);
	old_isport = iports[0];
	old_idport = iports[1];
	rk.saddr = idst;
	rk.daddr = isrc;
	rk.sport = old_idport;
	rk.dport = old_isport;
	rk.proto = iip->nexthdr;
	rk.dir = SLUICE_CT_REVERSE;
	found = bpf_map_lookup_elem(&SLUICE_MAP_CT, &rk);
	if (!found)
		return NS_PASS;
	rev = *found;
	snat = !!(rev.flags & SLUICE_CT_F_SNAT);
	if (snat == egress)
		return NS_PASS;
	outer_src = p->saddr;
	outer_dst = p->daddr;
	new_idst = rev.addr1;
	new_idport = rev.port1;
	new_isrc = snat ? rev.addr2 : isrc;
	new_isport = snat ? rev.port2 : old_isport;

	if (csum6_replace(skb, icmp_csum, &idst, &new_idst, 0) || csum6_replace(skb, icmp_csum, &isrc, &new_isrc, 0) ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_isport, new_isport, 2) ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_idport, new_idport, 2) ||
	    bpf_skb_store_bytes(skb, inner + offsetof(struct ipv6hdr, daddr), new_idst.words, 16, 0) ||
	    bpf_skb_store_bytes(skb, inner + offsetof(struct ipv6hdr, saddr), new_isrc.words, 16, 0) ||
	    bpf_skb_store_bytes(skb, inner_ports, &new_isport, 2, 0) ||
	    bpf_skb_store_bytes(skb, inner_ports + 2, &new_idport, 2, 0))
		return ns_failed();
	/* Outer header: the pseudo-header part of the checksum moves with the addresses. */
	if (addr_eq(&outer_src, &idst)) {
		if (csum6_replace(skb, icmp_csum, &outer_src, &new_idst, BPF_F_PSEUDO_HDR) ||
		    bpf_skb_store_bytes(skb, L3_OFF + offsetof(struct ipv6hdr, saddr), new_idst.words, 16, 0))
			return ns_failed();
	}
	if (snat) {
		if (csum6_replace(skb, icmp_csum, &outer_dst, &new_isrc, BPF_F_PSEUDO_HDR) ||
		    bpf_skb_store_bytes(skb, L3_OFF + offsetof(struct ipv6hdr, daddr), new_isrc.words, 16, 0))
			return ns_failed();
	}
	sluice_count(SLUICE_CNT_NP_ICMP_ERROR);
	return snat ? NS_REDIRECT : NS_TO_STACK;
}

#endif
