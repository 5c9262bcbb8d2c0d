/* SPDX-License-Identifier: Apache-2.0 */
/*
 * North-south conntrack (sluice_ct_v1): the keys of a flow's two entries, the lookups, and how
 * an entry ages (TCP by its FIN and RST, UDP by epochs). The entries' layout is in
 * sluice_abi.h.
 */
#ifndef SLUICE_CONNTRACK_H
#define SLUICE_CONNTRACK_H

#include "packet.h"

/* The one place a conntrack key is built: every entry is found by the tuple as seen on the
 * wire in its direction. */
static __always_inline void ct_key(struct sluice_ct_key *k, __u8 dir, __u8 proto, const struct sluice_addr *saddr,
				   __be16 sport, const struct sluice_addr *daddr, __be16 dport)
{
	k->saddr = *saddr;
	k->daddr = *daddr;
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->dir = dir;
	k->pad = 0;
}

/* The key of the reverse entry of the flow whose forward entry is `fwd`: what the backend sees,
 * replying to the SNAT address or, without SNAT, to the client itself. */
static __always_inline void ct_reverse_key(struct sluice_ct_key *rk, const struct pkt *p, const struct sluice_ct_value *fwd)
{
	int snat = fwd->flags & SLUICE_CT_F_SNAT;

	ct_key(rk, SLUICE_CT_REVERSE, p->proto, &fwd->addr1, fwd->port1, snat ? &fwd->addr2 : &p->saddr,
	       snat ? fwd->port2 : p->sport);
}

/* The reverse entry for the flow of `p` (client to frontend). */
static __always_inline void ct_reverse_value(struct sluice_ct_value *rev, const struct pkt *p, __u16 rev_nat_id,
					     __u8 flags, __u8 now)
{
	rev->addr1 = p->daddr;
	rev->port1 = p->dport;
	rev->addr2 = p->saddr;
	rev->port2 = p->sport;
	rev->rev_nat_id = rev_nat_id;
	rev->flags = flags;
	rev->epoch = now;
}

/* Whether reverse entry `rev` belongs to the flow of `p`: the same client port towards another
 * frontend of the same backend is another flow, whose replies must carry its own frontend. */
static __always_inline int ct_reverse_is_flow(const struct sluice_ct_value *rev, const struct pkt *p)
{
	return addr_eq(&rev->addr1, &p->daddr) && rev->port1 == p->dport && addr_eq(&rev->addr2, &p->saddr) &&
	       rev->port2 == p->sport;
}

/*
 * The reverse entry of a packet a backend sent (saddr:sport the backend), when this side
 * translates it: replies of SNATed flows (remote backends) arrive on ingress, those of local
 * backends leave on egress. The one lookup for replies and for the flows ICMP errors quote.
 */
static __always_inline struct sluice_ct_value *ct_reply_lookup(__u8 proto, const struct sluice_addr *saddr, __be16 sport,
							       const struct sluice_addr *daddr, __be16 dport, int egress)
{
	struct sluice_ct_key rk;
	struct sluice_ct_value *rev;

	ct_key(&rk, SLUICE_CT_REVERSE, proto, saddr, sport, daddr, dport);
	rev = bpf_map_lookup_elem(&SLUICE_MAP_CT, &rk);
	if (!rev || !!(rev->flags & SLUICE_CT_F_SNAT) == egress)
		return 0;
	return rev;
}

static __always_inline int ct_closed(__u8 flags)
{
	return (flags & SLUICE_CT_F_CLOSED) == SLUICE_CT_F_CLOSED;
}

/* Now, in conntrack epochs (see sluice_ct_value.epoch); 0 for protocols that do not use them.
 * SCTP ages as UDP does: an association sends HEARTBEATs on every idle path (every 30 s and an
 * RTO by default), so one quiet for two epochs is gone, and tracking its SHUTDOWN and ABORT
 * chunks as TCP's FIN and RST would buy little. */
static __always_inline __u8 ct_epoch(__u8 proto)
{
	__u8 now;

	if (proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return 0;
	now = bpf_ktime_get_coarse_ns() >> SLUICE_CT_EPOCH_SHIFT;
	return now ? now : 1;
}

static __always_inline int ct_idle(const struct sluice_ct_value *v, __u8 now)
{
	return now && v->epoch && (__u8)(now - v->epoch) >= SLUICE_CT_UDP_TIMEOUT_EPOCHS;
}

/* Marks a UDP entry as used now; written only when the epoch moved on, so at most once an epoch. */
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

/* The forward entry of the flow `p` continues, if any; `fk` is left holding its key. */
static __always_inline struct sluice_ct_value *ct_forward_lookup(struct sluice_ct_key *fk, const struct pkt *p, __u8 now)
{
	struct sluice_ct_value *found;

	ct_key(fk, SLUICE_CT_FORWARD, p->proto, &p->saddr, p->sport, &p->daddr, p->dport);
	found = bpf_map_lookup_elem(&SLUICE_MAP_CT, fk);
	/* An idle UDP flow is over: this datagram starts a new one, balanced afresh. */
	if (found && ct_idle(found, now))
		return 0;
	/* A SYN on the tuple of a closed flow is a new connection on a reused client port: it is
	 * balanced afresh, and does not claim back a SNAT port another flow may hold by now. */
	if (found && p->proto == IPPROTO_TCP && ct_closed(found->flags) &&
	    (p->tcp_flags & (SLUICE_TCP_SYN | SLUICE_TCP_ACK)) == SLUICE_TCP_SYN)
		return 0;
	/* An SCTP INIT starts an association: balanced afresh too, so a client that binds a fixed
	 * port (as SCTP peers often do) gets away from a backend that stopped answering, instead of
	 * retrying into it for as long as it retries. */
	if (found && p->proto == IPPROTO_SCTP && p->sctp_chunk == SLUICE_SCTP_INIT)
		return 0;
	return found;
}

#endif
