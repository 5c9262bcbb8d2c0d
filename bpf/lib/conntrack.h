/* SPDX-License-Identifier: Apache-2.0 */
/*
 * North-south conntrack: which of the three tables a flow is in (established TCP, TCP
 * handshakes, every other protocol; see sluice_abi.h), the keys of a flow's two entries, the
 * lookups, a handshake's completion, and how an entry ages (TCP by its FIN and RST, UDP by
 * epochs).
 */
#ifndef SLUICE_CONNTRACK_H
#define SLUICE_CONNTRACK_H

#include "ctx.h"
#include "packet.h"

/* The tables. A flood of UDP cannot evict a TCP flow, and one of spoofed SYNs fills only the
 * handshake table: a flow that completed its handshake is in a table only such flows enter. */
enum ct_table {
	CT_TCP,
	CT_HANDSHAKE,
	CT_OTHER,
};

static __always_inline enum ct_table ct_table_of(__u8 proto)
{
	return proto == IPPROTO_TCP ? CT_TCP : CT_OTHER;
}

/*
 * A flow a replaced table has (SLUICE_CT_PREVIOUS_*, while an agent resizes the tables) is moved
 * into the table `t` looks in before the lookup: the replaced table's entry is the newer one
 * wherever it has one. The agent copied the entries when it started, seconds before the swap,
 * and the old programs went on changing them meanwhile (a flow closed, a client port reused for
 * a new flow): the copy of such an entry is stale. Once moved, an entry is the new table's, and
 * changes made to it from then on stay. Costs every lookup one inlined array read while no table
 * is offered.
 */
static __always_inline void ct_take_over(enum ct_table t, const struct sluice_ct_key *k)
{
	__u32 slot = t == CT_OTHER ? SLUICE_CT_PREVIOUS_OTHER : SLUICE_CT_PREVIOUS_TCP, only = 0;
	void *previous, *v;
	long err;

	if (t == CT_HANDSHAKE)
		previous = bpf_map_lookup_elem(&SLUICE_MAP_CT_HANDSHAKE_PREVIOUS, &only);
	else
		previous = bpf_map_lookup_elem(&SLUICE_MAP_CT_PREVIOUS, &slot);
	if (!previous)
		return;
	/* Programs of the generation being replaced also read the slot, which holds their own
	 * table until their links are swapped: moving an entry onto itself would delete it. */
	if (previous == (t == CT_TCP ? (void *)&SLUICE_MAP_CT : t == CT_HANDSHAKE ? (void *)&SLUICE_MAP_CT_HANDSHAKE : (void *)&SLUICE_MAP_CT_OTHER))
		return;
	if (!(v = bpf_map_lookup_elem(previous, k)))
		return;
	switch (t) {
	case CT_TCP:
		err = bpf_map_update_elem(&SLUICE_MAP_CT, k, v, BPF_ANY);
		break;
	case CT_HANDSHAKE:
		err = bpf_map_update_elem(&SLUICE_MAP_CT_HANDSHAKE, k, v, BPF_ANY);
		break;
	default:
		err = bpf_map_update_elem(&SLUICE_MAP_CT_OTHER, k, v, BPF_ANY);
	}
	if (err)
		return;
	bpf_map_delete_elem(previous, k);
	sluice_count(SLUICE_CNT_CT_TAKEN_OVER);
}

/* Each branch names its map, so every lookup site keeps one map (which the verifier inlines). A
 * handshake table entry starts with its struct sluice_ct_value. */
static __always_inline struct sluice_ct_value *ct_lookup(enum ct_table t, const struct sluice_ct_key *k)
{
	ct_take_over(t, k);
	switch (t) {
	case CT_TCP:
		return bpf_map_lookup_elem(&SLUICE_MAP_CT, k);
	case CT_HANDSHAKE:
		return bpf_map_lookup_elem(&SLUICE_MAP_CT_HANDSHAKE, k);
	default:
		return bpf_map_lookup_elem(&SLUICE_MAP_CT_OTHER, k);
	}
}

/* Writes an entry of the established TCP or the other table, counting it when its key is new
 * (the agent derives evictions from that count). */
static __always_inline long ct_insert(enum ct_table t, const struct sluice_ct_key *k, const struct sluice_ct_value *v)
{
	if (t == CT_TCP) {
		if (!bpf_map_update_elem(&SLUICE_MAP_CT, k, v, BPF_NOEXIST)) {
			sluice_count(SLUICE_CNT_CT_TCP_INSERTED);
			return 0;
		}
		return bpf_map_update_elem(&SLUICE_MAP_CT, k, v, BPF_ANY);
	}
	if (!bpf_map_update_elem(&SLUICE_MAP_CT_OTHER, k, v, BPF_NOEXIST)) {
		sluice_count(SLUICE_CNT_CT_OTHER_INSERTED);
		return 0;
	}
	return bpf_map_update_elem(&SLUICE_MAP_CT_OTHER, k, v, BPF_ANY);
}

static __always_inline long ct_handshake_insert(const struct sluice_ct_key *k, const struct sluice_ct_handshake *v)
{
	if (!bpf_map_update_elem(&SLUICE_MAP_CT_HANDSHAKE, k, v, BPF_NOEXIST)) {
		sluice_count(SLUICE_CNT_CT_HANDSHAKE_INSERTED);
		return 0;
	}
	return bpf_map_update_elem(&SLUICE_MAP_CT_HANDSHAKE, k, v, BPF_ANY);
}

static __always_inline void ct_handshake_delete(const struct sluice_ct_key *k)
{
	if (!bpf_map_delete_elem(&SLUICE_MAP_CT_HANDSHAKE, k))
		sluice_count(SLUICE_CNT_CT_HANDSHAKE_DELETED);
}

/* A TCP packet that may start a flow: a SYN alone. */
static __always_inline int tcp_pure_syn(const struct pkt *p)
{
	return (p->tcp_flags & (SLUICE_TCP_SYN | SLUICE_TCP_ACK | SLUICE_TCP_RST)) == SLUICE_TCP_SYN;
}

static __always_inline int tcp_syn_ack(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (SLUICE_TCP_SYN | SLUICE_TCP_ACK)) == (SLUICE_TCP_SYN | SLUICE_TCP_ACK);
}

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

static __always_inline int ct_closed(__u8 flags)
{
	return (flags & SLUICE_CT_F_CLOSED) == SLUICE_CT_F_CLOSED;
}

/* Whether a TCP lookup looks in the handshake table too: every packet that is not one pays for
 * the lookup, so only where a packet of a handshake can be. */
enum ct_handshake {
	CT_HS_NO,
	CT_HS_FALLBACK, /* when the established table has no open entry: a handshake on the tuple of
			 * a flow that is over (a client port reused) is the newer flow and wins */
	CT_HS_FIRST,    /* first: a SYN-ACK, which only a handshake expects */
};

/* The entry under `k` in the table of its protocol, or the handshake table as `hs` says. `table`
 * gets its table. */
static __always_inline struct sluice_ct_value *ct_find(__u8 proto, const struct sluice_ct_key *k, enum ct_handshake hs,
						       enum ct_table *table)
{
	struct sluice_ct_value *found, *handshake;

	*table = ct_table_of(proto);
	found = ct_lookup(*table, k);
	if (proto != IPPROTO_TCP || hs == CT_HS_NO || (found && !ct_closed(found->flags) && hs != CT_HS_FIRST))
		return found;
	handshake = ct_lookup(CT_HANDSHAKE, k);
	if (!handshake)
		return found;
	*table = CT_HANDSHAKE;
	return handshake;
}

/*
 * The reverse entry of a packet a backend sent (saddr:sport the backend), when this side
 * translates it: replies of SNATed flows (remote backends) arrive on ingress, those of local
 * backends leave on egress. The one lookup for replies and for the flows ICMP errors quote.
 */
static __always_inline struct sluice_ct_value *ct_reply_lookup(__u8 proto, const struct sluice_addr *saddr, __be16 sport,
							       const struct sluice_addr *daddr, __be16 dport, int egress,
							       enum ct_handshake hs, enum ct_table *table)
{
	struct sluice_ct_key rk;
	struct sluice_ct_value *rev;

	ct_key(&rk, SLUICE_CT_REVERSE, proto, saddr, sport, daddr, dport);
	rev = ct_find(proto, &rk, hs, table);
	if (!rev || !!(rev->flags & SLUICE_CT_F_SNAT) == egress)
		return 0;
	return rev;
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

/* Where a backend's reply looks for its flow: a SYN-ACK in the handshake table first; anything
 * else there when no open established flow has it (a server may send data before the client's
 * ACK arrives, with TCP Fast Open). */
static __always_inline enum ct_handshake ct_reply_handshake(const struct pkt *p)
{
	return tcp_syn_ack(p) ? CT_HS_FIRST : CT_HS_FALLBACK;
}

/* The key of the frontend a client's packet is for. */
static __always_inline void frontend_key(struct sluice_svc_key *key, const struct pkt *p)
{
	key->addr = p->daddr;
	key->port = p->dport;
	key->proto = p->proto;
}

/*
 * The forward entry of the flow `p` continues, if any, and its table; `fk` is left holding its
 * key. A handshake is looked for only for TCP to a frontend; `frontend` says whether `p` is to
 * one when that was looked up (1 or 0), else -1.
 */
static __always_inline struct sluice_ct_value *ct_forward_lookup(struct sluice_ct_key *fk, const struct pkt *p, __u8 now,
								 enum ct_table *table, int *frontend)
{
	struct sluice_ct_value *found;

	ct_key(fk, SLUICE_CT_FORWARD, p->proto, &p->saddr, p->sport, &p->daddr, p->dport);
	found = ct_find(p->proto, fk, CT_HS_NO, table);
	*frontend = -1;
	if (p->proto == IPPROTO_TCP && (!found || ct_closed(found->flags))) {
		struct sluice_svc_key key = {};

		frontend_key(&key, p);
		*frontend = !!lb_header(&key, 0);
		if (*frontend) {
			struct sluice_ct_value *handshake = ct_lookup(CT_HANDSHAKE, fk);

			if (handshake) {
				found = handshake;
				*table = CT_HANDSHAKE;
			}
		}
	}
	/* An idle UDP flow is over: this datagram starts a new one, balanced afresh. */
	if (found && ct_idle(found, now))
		return 0;
	/* A SYN on the tuple of a closed flow is a new connection on a reused client port: it is
	 * balanced afresh, and does not claim back a SNAT port another flow may hold by now. */
	if (found && p->proto == IPPROTO_TCP && ct_closed(found->flags) && tcp_pure_syn(p))
		return 0;
	/* An SCTP INIT starts an association: balanced afresh too, so a client that binds a fixed
	 * port (as SCTP peers often do) gets away from a backend that stopped answering, instead of
	 * retrying into it for as long as it retries. */
	if (found && p->proto == IPPROTO_SCTP && p->sctp_chunk == SLUICE_SCTP_INIT)
		return 0;
	return found;
}

/*
 * A packet of a flow still in the handshake table (`hs_fwd`, keyed `fk`): when it is the
 * client's ACK answering the backend's SYN-ACK, the flow's two entries move to the established
 * table. Returns the flow's entry in the table it is now in (`table`); anything else leaves the
 * flow where it is, still translated, so a retransmission or an early segment loses nothing.
 */
static __always_inline struct sluice_ct_value *ct_establish(ctx_t *ctx, const struct pkt *p, const struct sluice_ct_key *fk,
							    struct sluice_ct_value *hs_fwd, enum ct_table *table)
{
	struct sluice_ct_key rk;
	struct sluice_ct_handshake *hs_rev;
	__be32 ack;

	if ((p->tcp_flags & (SLUICE_TCP_SYN | SLUICE_TCP_RST | SLUICE_TCP_ACK)) != SLUICE_TCP_ACK)
		return hs_fwd;
	ct_reverse_key(&rk, p, hs_fwd);
	hs_rev = (struct sluice_ct_handshake *)ct_lookup(CT_HANDSHAKE, &rk);
	if (!hs_rev || !hs_rev->answered || !ct_reverse_is_flow(&hs_rev->ct, p))
		return hs_fwd;
	if (ctx_load_bytes(ctx, p->l4_off + offsetof(struct tcphdr, ack_seq), &ack, sizeof(ack)) ||
	    ack != bpf_htonl(bpf_ntohl(hs_rev->seq) + 1)) {
		sluice_count(SLUICE_CNT_NP_ACK_UNPROVEN);
		return hs_fwd;
	}
	/* Reverse first, as a new flow's entries are written: no reply finds a half-moved flow. */
	if (ct_insert(CT_TCP, &rk, &hs_rev->ct) || ct_insert(CT_TCP, fk, hs_fwd))
		return hs_fwd; /* the next ACK tries again */
	ct_handshake_delete(fk);
	ct_handshake_delete(&rk);
	sluice_count(SLUICE_CNT_NP_ESTABLISHED);
	*table = CT_TCP;
	return ct_lookup(CT_TCP, fk);
}

/* Now, in handshake ticks (see sluice_ct_handshake.syn_at). */
static __always_inline __u16 ct_handshake_tick(void)
{
	return bpf_ktime_get_coarse_ns() >> SLUICE_CT_HS_TICK_SHIFT;
}

/* The client's SYN of a flow: its sequence number, and now; for both of the flow's entries in the
 * handshake table, written before them. */
static __always_inline void ct_handshake_start(ctx_t *ctx, const struct pkt *p, struct sluice_ct_handshake *hs)
{
	if (ctx_load_bytes(ctx, p->l4_off + offsetof(struct tcphdr, seq), &hs->seq, sizeof(hs->seq)))
		hs->seq = 0;
	hs->syn_at = ct_handshake_tick();
}

/*
 * A SYN on a flow in the handshake table (its entries `hs_fwd` and `hs_rev`): whether it is the
 * client's own SYN sent again, which says that nothing came back in time. If so, both entries
 * learn when, so a client still trying keeps its handshake (and its SNAT port) alive. Spoofed
 * SYNs that happen to repeat a tuple carry another sequence number, or come sooner than TCP
 * sends again.
 */
static __always_inline int ct_handshake_syn_again(ctx_t *ctx, const struct pkt *p, struct sluice_ct_value *hs_fwd,
						  struct sluice_ct_value *hs_rev)
{
	struct sluice_ct_handshake *fwd = (struct sluice_ct_handshake *)hs_fwd;
	__u16 tick = ct_handshake_tick();
	__be32 seq;

	if (ctx_load_bytes(ctx, p->l4_off + offsetof(struct tcphdr, seq), &seq, sizeof(seq)) || seq != fwd->seq ||
	    (__u16)(tick - fwd->syn_at) < SLUICE_CT_HS_RESENT_TICKS)
		return 0;
	fwd->syn_at = tick;
	((struct sluice_ct_handshake *)hs_rev)->syn_at = tick;
	return 1;
}

/* Whether the handshake of reverse entry `hs_rev` is given up (SLUICE_CT_HS_STALE_TICKS). */
static __always_inline int ct_handshake_stale(const struct sluice_ct_value *hs_rev, __u16 tick)
{
	return (__u16)(tick - ((const struct sluice_ct_handshake *)hs_rev)->syn_at) >= SLUICE_CT_HS_STALE_TICKS;
}

/* The backend's SYN-ACK of a flow in the handshake table (`hs_rev`, its reverse entry): what the
 * client's ACK must answer to complete it. */
static __always_inline void ct_handshake_answered(ctx_t *ctx, const struct pkt *p, struct sluice_ct_value *hs_rev)
{
	struct sluice_ct_handshake *hs = (struct sluice_ct_handshake *)hs_rev;
	__be32 seq;

	if (!tcp_syn_ack(p))
		return;
	if (ctx_load_bytes(ctx, p->l4_off + offsetof(struct tcphdr, seq), &seq, sizeof(seq)))
		return;
	hs->seq = seq;
	hs->answered = 1;
}

#endif
