/* SPDX-License-Identifier: Apache-2.0 */
/* tc (tcx) programs on the node's external devices: NodePort, ExternalIP, LoadBalancer. */
#define SLUICE_CTX_TC
#include "lib/nodeport.h"
#include "lib/icmp.h"
#include "lib/reject.h"

/* Headers we read must be in the linear part of the skb. */
static __always_inline void pull_headers(struct __sk_buff *skb)
{
	__u32 want = L4_OFF_V6 + 48;

	bpf_skb_pull_data(skb, skb->len < want ? skb->len : want);
}

static __always_inline int tc_verdict(struct __sk_buff *skb, enum ns_action act, int v6)
{
	switch (act) {
	case NS_DROP:
		return TC_ACT_SHOT;
	case NS_REDIRECT:
		return tc_forward(skb, v6);
	case NS_TO_STACK:
		return TC_ACT_OK;
	case NS_REJECT:
		return v6 ? tc_reject6(skb) : tc_reject4(skb);
	default:
		return TC_ACT_UNSPEC; /* untouched: next program, or the stack */
	}
}

/* Clients reach frontends on ingress only; egress sees the replies of local backends. */
static __always_inline int tc_nodeport(struct __sk_buff *skb, int egress)
{
	struct pkt p = {};
	enum ns_action act;

	pull_headers(skb);
	if (parse(ctx_data(skb), ctx_data_end(skb), &p) != PARSE_OK)
		return TC_ACT_UNSPEC;
	if (p.proto == (p.v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP))
		return tc_verdict(skb, tc_icmp_error(skb, &p, egress), p.v6);
	if (!has_ports(p.proto))
		return TC_ACT_UNSPEC;
	act = ns_reverse(skb, &p, egress, 0);
	if (act == NS_PASS && !egress)
		act = ns_forward(skb, &p, 0);
	return tc_verdict(skb, act, p.v6);
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
