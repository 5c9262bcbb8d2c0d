/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fragments of north-south datagrams, IPv4 and IPv6. kube-proxy's conntrack reassembles them
 * before it translates; tc and XDP see each fragment alone, and only the first one carries the
 * ports that say which flow it belongs to. So the first fragment of a datagram Sluice
 * translates leaves its ports in sluice_frag_v2, under what every fragment carries (addresses,
 * identification and protocol as they arrived), and the later ones borrow them and go the same
 * way: the same conntrack entry, addresses rewritten (and IPv4's header checksum fixed; IPv6
 * has none). They have no L4 header to rewrite: the datagram's checksum sits in the first
 * fragment, and its incremental update there, pseudo-header included, is right for the whole
 * datagram.
 *
 * IPv6 fragments are seen only when the Fragment header directly follows the fixed header
 * (packet.h); behind other extension headers they pass untranslated, as any packet with those
 * headers always has.
 */
#ifndef SLUICE_FRAG_H
#define SLUICE_FRAG_H

#include "events.h"

static __always_inline void frag_key(struct sluice_frag_key *k, const struct pkt *p)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->id = p->frag_id;
	k->proto = p->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/*
 * parse(), and the ports of its datagram for a later fragment whose first fragment was
 * translated. PARSE_FRAGMENT: a later TCP or UDP fragment whose ports are not known.
 */
static __always_inline enum parse_result parse_frag(void *data, void *data_end, struct pkt *p)
{
	enum parse_result r = parse(data, data_end, p);
	struct sluice_frag_key k;
	struct sluice_frag_ports *ports;

	if (r != PARSE_FRAGMENT)
		return r;
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return PARSE_OTHER;
	frag_key(&k, p);
	ports = bpf_map_lookup_elem(&SLUICE_MAP_FRAG, &k);
	if (!ports)
		return PARSE_FRAGMENT;
	p->sport = ports->sport;
	p->dport = ports->dport;
	return PARSE_OK;
}

/*
 * Called once a packet is translated: a first fragment leaves its ports for the rest of its
 * datagram. Only translated datagrams are remembered, so the node's own and routed fragmented
 * traffic cannot evict a Service's.
 */
static __always_inline void frag_translated(const struct pkt *p)
{
	struct sluice_frag_key k;
	struct sluice_frag_ports ports;

	if (p->frag != PKT_FRAG_FIRST)
		return;
	frag_key(&k, p);
	ports.sport = p->sport;
	ports.dport = p->dport;
	/* A failed update leaves the later fragments untracked, where they are counted. */
	bpf_map_update_elem(&SLUICE_MAP_FRAG, &k, &ports, BPF_ANY);
}

/*
 * A later fragment arriving whose ports are not known: its first fragment has not come yet
 * (reordered), its entry was evicted, or its datagram is no Service's (the node's own, or
 * routed); without ports nothing tells these apart. To a LoadBalancer or ExternalIP address,
 * which only Services use, it is dropped: the stack would route it on untranslated. Anything
 * else goes on untouched, as before: the node's own traffic must keep working (reassembled by
 * the node, in whatever order it arrives), and the piece of a Service datagram that goes to a
 * node address waits in the node's reassembly queue until it expires, never reaching a backend
 * (its datagram is lost either way).
 */
static __always_inline enum ns_action frag_untracked(const struct pkt *p)
{
	if (bpf_map_lookup_elem(&SLUICE_MAP_LB_ADDRS, &p->daddr))
		return ns_refuse(NS_DROP, SLUICE_CNT_NP_DROP_FRAG_UNKNOWN, p, 0);
	sluice_count(SLUICE_CNT_NP_FRAG_UNTRACKED);
	return NS_PASS;
}

#endif
