/* SPDX-License-Identifier: Apache-2.0 */
/* tc (tcx) programs on the node's external devices: NodePort, ExternalIP, LoadBalancer. */
#define SLUICE_CTX_TC
#include "lib/nodeport.h"
#include "lib/frag.h"
#include "lib/icmp.h"
#include "lib/reject.h"

/* Headers we read must be in the linear part of the skb. Pulled only when they are not: a pull
 * also makes the head private, a copy of it for a cloned skb (every TCP segment on egress: the
 * original waits for its ACK), which would cost every packet, ours or not. */
static __always_inline void pull(struct __sk_buff *skb, __u32 want)
{
	if (skb->len < want)
		want = skb->len;
	if (ctx_data(skb) + want > ctx_data_end(skb))
		bpf_skb_pull_data(skb, want);
}

/* What every packet needs: the IP header and the first 20 bytes of the L4 header (ports, TCP's
 * flags and sequence numbers, its checksum; SCTP's common header and chunk type). No more: a
 * TCP segment's linear part holds its headers, its payload sits in page fragments, and asking
 * for bytes of payload would pull them in, copying the head of every cloned segment. */
static __always_inline void pull_headers(struct __sk_buff *skb)
{
	pull(skb, (skb->protocol == bpf_htons(ETH_P_IPV6) ? L4_OFF_V6 : L4_OFF_V4) + 20);
}

/* An ICMP error's quote: the quoted IP header and ports behind the ICMP header. Parsed again,
 * as a pull moves the packet. */
static __always_inline int pull_icmp_quote(struct __sk_buff *skb, struct pkt *p)
{
	pull(skb, p->v6 ? ICMP6_QUOTE_PORTS + 4 : ICMP4_QUOTE_PORTS + 4);
	return parse_frag(ctx_data(skb), ctx_data_end(skb), p) == PARSE_OK ? 0 : -1;
}

static __always_inline int tc_verdict(struct __sk_buff *skb, enum ns_action act, const struct pkt *p)
{
	switch (act) {
	case NS_DROP:
		return TC_ACT_SHOT;
	case NS_REDIRECT:
		return tc_forward(skb, p->v6);
	case NS_TO_STACK:
		return TC_ACT_OK;
	case NS_REJECT:
		if (!p->v6)
			return tc_reject4(skb);
		return tc_reject6(skb, p->l4_off == L4_OFF_V6 ? REJECT_QUOTE_V6 : REJECT_QUOTE_V6_MAX);
	default:
		return TC_ACT_UNSPEC; /* untouched: next program, or the stack */
	}
}

/* Clients reach frontends on ingress only; egress sees the replies of local backends. */
static __always_inline int tc_nodeport(struct __sk_buff *skb, int egress)
{
	const struct sluice_port_filter *filter;
	struct pkt p = {};
	enum ns_action act;

	/* Egress translates the replies of local backends, which reach this device from a pod's
	 * veth or the node itself, never from the device they leave by: a packet that came in here
	 * is one ingress just sent back out (a remote backend's request or its reply, already
	 * translated), and is left alone without a lookup. */
	if (egress && skb->ingress_ifindex == skb->ifindex)
		return TC_ACT_UNSPEC;
	pull_headers(skb);
	switch (parse_frag(ctx_data(skb), ctx_data_end(skb), &p)) {
	case PARSE_OK:
		break;
	case PARSE_FRAGMENT:
		/* Egress sees a local backend's reply fragments in the order the backend sent them,
		 * so an unknown one there is not a Service's (or outlived its entry). */
		return egress ? TC_ACT_UNSPEC : tc_verdict(skb, frag_untracked(&p), &p);
	default:
		return TC_ACT_UNSPEC;
	}
	if (p.proto == (p.v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP)) {
		if (pull_icmp_quote(skb, &p))
			return TC_ACT_UNSPEC;
		return tc_verdict(skb, tc_icmp_error(skb, &p, egress), &p);
	}
	if (!has_ports(p.proto))
		return TC_ACT_UNSPEC;
	/* On ingress the replies of SNATed flows, addressed to the node, are judged before the
	 * filter: their port is a SNAT port, not a frontend's. */
	filter = port_filter();
	if (egress && !ns_port_possible(filter, &p, 1))
		return TC_ACT_UNSPEC;
	act = ns_reverse(skb, &p, egress, 0);
	if (act == NS_PASS && !egress) {
		if (!ns_port_possible(filter, &p, 0))
			return TC_ACT_UNSPEC;
		act = ns_forward(skb, &p, 0);
	}
	if (act == NS_TO_STACK || act == NS_REDIRECT)
		frag_translated(&p);
	return tc_verdict(skb, act, &p);
}

SEC("classifier")
int sluice_nodeport_ingress(struct __sk_buff *skb)
{
	return tc_nodeport(skb, 0);
}

SEC("classifier")
int sluice_nodeport_egress(struct __sk_buff *skb)
{
	return tc_nodeport(skb, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
