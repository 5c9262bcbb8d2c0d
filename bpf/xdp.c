/* SPDX-License-Identifier: Apache-2.0 */
/*
 * XDP on the node's external devices: the earliest point a packet can be judged. Drops what
 * must be dropped (loadBalancerSourceRanges, unknown ports on frontend addresses) before the
 * kernel allocates anything, and with acceleration on, translates flows to remote backends and
 * sends them back out without entering the stack. Local backends are left to tc.
 */
#define SLUICE_CTX_XDP
#include "lib/nodeport.h"
#include "lib/frag.h"

/*
 * SourceBlocklist, the first decision on every frame: any IP packet from a listed source is
 * dropped, or only those to the listed ports. Reads just what it needs, so fragments and IPv4
 * options cannot slip past an entry that covers every port; a first IPv6 fragment is judged by
 * the ports behind its Fragment header, as the datapath translates it by them.
 */
static __always_inline int blocklisted(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct sluice_block_key key = {};
	struct sluice_block_value *entry;
	__be16 dport = 0;
	__u8 proto = 0;
	__u32 id;
	__u64 *hits;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return 0;
		addr_set_v4mapped(&key.addr, ip->saddr);
		proto = ip->protocol;
		if (ip->ihl == 5 && !(ip->frag_off & bpf_htons(0x1fff)) && has_ports(proto)) {
			__be16 *ports = (void *)(ip + 1);

			if ((void *)(ports + 2) <= data_end)
				dport = ports[1];
		}
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__be16 *ports = (void *)(ip6 + 1);
		struct frag6hdr *fh;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		__builtin_memcpy(&key.addr, &ip6->saddr, 16);
		proto = ip6->nexthdr;
		fh = ipv6_frag_hdr(ip6, data_end);
		if (fh) {
			proto = fh->nexthdr;
			ports = (fh->frag_off & bpf_htons(IP6_OFFSET)) ? 0 : (void *)(fh + 1);
		}
		if (ports && has_ports(proto) && (void *)(ports + 2) <= data_end)
			dport = ports[1];
	} else {
		return 0;
	}
	key.prefixlen = 128;
	entry = bpf_map_lookup_elem(&SLUICE_MAP_BLOCKLIST, &key);
	if (!entry)
		return 0;
	if (entry->nports) {
		int match = 0;

#pragma unroll
		for (int i = 0; i < SLUICE_BLOCK_PORTS; i++) {
			if (i < entry->nports && dport && entry->ports[i].port == dport && entry->ports[i].proto == proto)
				match = 1;
		}
		if (!match)
			return 0;
	}
	id = entry->id;
	hits = bpf_map_lookup_elem(&SLUICE_MAP_BLOCK_HITS, &id);
	if (hits)
		*hits += 1;
	sluice_count(SLUICE_CNT_XDP_DROP_BLOCKLIST);
	if (sluice_monitored()) {
		struct sluice_event *ev = sluice_event_start(SLUICE_CNT_XDP_DROP_BLOCKLIST, SLUICE_HOOK_XDP);

		if (ev) {
			ev->proto = proto;
			ev->saddr = key.addr;
			ev->dport = dport;
			sluice_event_submit(ev);
		}
	}
	return 1;
}

/* Whether the agent has proven that what XDP sends from this device arrives. */
static __always_inline int device_accelerated(ctx_t *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct sluice_xdp_device *dev = bpf_map_lookup_elem(&SLUICE_MAP_XDP_DEVICES, &ifindex);

	return dev && (dev->flags & SLUICE_XDP_DEV_F_ACCEL);
}

SEC("xdp")
int sluice_xdp(ctx_t *ctx)
{
	const struct sluice_port_filter *filter;
	struct sluice_svc_key key = {};
	struct sluice_svc_value *svc;
	struct sluice_config *cfg;
	struct bpf_fib_lookup fib;
	struct pkt p = {};
	int may_accel;

	if (blocklisted(ctx_data(ctx), ctx_data_end(ctx)))
		return XDP_DROP;
	/* A later fragment whose ports are not known is tc's to judge (frag_untracked). */
	if (parse_frag(ctx_data(ctx), ctx_data_end(ctx), &p) != PARSE_OK)
		return XDP_PASS;
	if (!has_ports(p.proto))
		return XDP_PASS;
	cfg = node_config();
	/* FIN and RST go on to tc, which records that the flow closed (rare packets; XDP's stack
	 * has no room for that bookkeeping). Whether the device is proven is looked up only for a
	 * packet XDP would translate. */
	may_accel = cfg && (cfg->flags & SLUICE_CFG_F_XDP_ACCEL) &&
		    !(p.proto == IPPROTO_TCP && (p.tcp_flags & (SLUICE_TCP_FIN | SLUICE_TCP_RST)));

	/* Replies first, as tc does: the SNAT port keeps the client's port when it is free, so a
	 * reply can be addressed to node-IP:port that is also a NodePort, and must not be taken for
	 * a new flow to that frontend. (They are addressed to the node: anything else is no reply
	 * XDP translates.) */
	if (may_accel && addr_eq(&p.daddr, p.v6 ? &cfg->node_ip6 : &cfg->node_ip4) && device_accelerated(ctx)) {
		switch (ns_reverse(ctx, &p, 0, &fib)) {
		case NS_REDIRECT:
			frag_translated(&p);
			return xdp_send(ctx, &fib);
		case NS_DROP:
			return XDP_DROP;
		case NS_TO_STACK:
			return XDP_PASS; /* a reply tc must see (it updates both conntrack entries) */
		default:
			break;
		}
	}
	filter = port_filter();
	frontend_key(&key, &p);
	svc = ns_port_possible(filter, &p, 0) ? lb_header(&key, 0) : 0;
	if (!svc) {
		if (lb_addr_possible(filter, &p.daddr) && bpf_map_lookup_elem(&SLUICE_MAP_LB_ADDRS, &p.daddr)) {
			sluice_count(SLUICE_CNT_XDP_DROP_UNKNOWN_PORT);
			pkt_event(SLUICE_CNT_XDP_DROP_UNKNOWN_PORT, &p, 0, 0, 0);
			return XDP_DROP;
		}
		return XDP_PASS;
	}
	if (svc->flags & SLUICE_SVC_F_SOURCE_RANGES) {
		struct sluice_src_range_key rk = {};

		rk.prefixlen = 32 + 128;
		rk.rev_nat_id = svc_rev_nat_id(svc);
		rk.addr = p.saddr;
		if (!bpf_map_lookup_elem(&SLUICE_MAP_SRC_RANGES, &rk)) {
			sluice_count(SLUICE_CNT_XDP_DROP_SOURCE_RANGE);
			pkt_event(SLUICE_CNT_XDP_DROP_SOURCE_RANGE, &p, svc_rev_nat_id(svc), 0, 0);
			return XDP_DROP;
		}
	}
	if (!may_accel || !device_accelerated(ctx))
		return XDP_PASS;
	switch (ns_forward(ctx, &p, &fib)) {
	case NS_REDIRECT:
		frag_translated(&p);
		return xdp_send(ctx, &fib);
	case NS_DROP:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
}

/*
 * The agent's proof that XDP's frames leave this device and arrive: it hands this program an
 * ICMP echo request from the node's SNAT address to a remote backend through
 * BPF_PROG_TEST_RUN with live frames, on the device's ingress. The frame takes the way a
 * translated flow takes (the same FIB lookup, MAC rewrite and XDP_TX or redirect), and the
 * agent waits for the echo reply. Never attached; without a route it drops, counting nothing.
 */
SEC("xdp")
int sluice_xdp_probe(ctx_t *ctx)
{
	struct bpf_fib_lookup fib;
	struct pkt p = {};

	if (parse(ctx_data(ctx), ctx_data_end(ctx), &p) != PARSE_OK)
		return XDP_DROP;
	if (fib_route(ctx, &p, &p.saddr, &p.daddr, &fib) != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_DROP;
	return xdp_send(ctx, &fib);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
