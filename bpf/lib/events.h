/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What became of a north-south packet: the verdict each step of the datapath returns, and how
 * a decision is told (its counter, and an event for a listening `sluice monitor`).
 */
#ifndef SLUICE_EVENTS_H
#define SLUICE_EVENTS_H

#include "ctx.h"
#include "packet.h"

enum ns_action {
	NS_PASS,      /* not ours: leave the packet alone */
	NS_DROP,
	NS_TO_STACK,  /* translated; the stack delivers it (local backend, or reply to it) */
	NS_REDIRECT,  /* translated; forward it out of the device the FIB picks */
	NS_REJECT,    /* answer the sender with an ICMP port unreachable (tc only) */
	NS_TRANSLATE, /* between the steps of ns_forward only: go on, the flow is known */
};

/* Tells a listening `sluice monitor` what became of a packet (to: where it was sent, if anywhere). */
static __always_inline void pkt_event(__u32 reason, const struct pkt *p, __u32 rev_nat_id,
				      const struct sluice_addr *to, __be16 to_port)
{
	struct sluice_event *ev;

	if (!sluice_monitored() || !(ev = sluice_event_start(reason, CTX_HOOK)))
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

/* A deliberate refusal (drop or reject), counted under `reason` and told to the monitor. */
static __always_inline enum ns_action ns_refuse(enum ns_action act, __u32 reason, const struct pkt *p, __u32 rev_nat_id)
{
	sluice_count(reason);
	pkt_event(reason, p, rev_nat_id, 0, 0);
	return act;
}

/* A drop that should never happen (a rewrite, a map update or a bounds check failed): counted,
 * so a zero counter proves no packet was lost this way. */
static __always_inline enum ns_action ns_failed(void)
{
	sluice_count(SLUICE_CNT_NP_DROP_ERROR);
	return NS_DROP;
}

#endif
