/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the kernel loses of the frames XDP sends. An XDP program's verdict is its last word:
 * when the driver cannot transmit an XDP_TX frame (a veth whose peer runs neither XDP nor
 * GRO drops them all), or a redirect target refuses one, the program never learns of it. The
 * kernel says so in its xdp tracepoints; these BTF tracepoint programs count what concerns the
 * node's --devices (their ifindex in sluice_xdp_devices_v1, in the node's own network
 * namespace) into the datapath counters, by reason. They only count.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps.h"

/* Just the kernel fields read here; CO-RE relocates them against the running kernel's BTF. */
struct net {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

/* Whether `dev` is one of this node's --devices. */
static __always_inline int ours(const struct net_device *dev)
{
	__u32 zero = 0, ifindex;
	__u64 *host = bpf_map_lookup_elem(&SLUICE_MAP_HOST_NETNS, &zero);

	if (!dev || !host)
		return 0;
	if (dev->nd_net.net->net_cookie != *host)
		return 0;
	ifindex = dev->ifindex;
	return bpf_map_lookup_elem(&SLUICE_MAP_XDP_DEVICES, &ifindex) != 0;
}

static __always_inline void count_n(__u32 idx, int n)
{
	__u64 *c = bpf_map_lookup_elem(&SLUICE_MAP_COUNTERS, &idx);

	if (c && n > 0)
		*c += n;
}

/* A driver flushed its XDP_TX queue (veth, among others): `drops` of the frames were lost. */
SEC("tp_btf/xdp_bulk_tx")
int sluice_watch_bulk_tx(__u64 *ctx)
{
	const struct net_device *dev = (void *)ctx[0];
	int drops = (int)ctx[2];

	if (drops > 0 && ours(dev))
		count_n(SLUICE_CNT_XDP_LOST_TX, drops);
	return 0;
}

/* Redirected frames flushed to their target device; `drops` of them were refused. */
SEC("tp_btf/xdp_devmap_xmit")
int sluice_watch_devmap_xmit(__u64 *ctx)
{
	const struct net_device *from = (void *)ctx[0];
	int drops = (int)ctx[3];

	if (drops > 0 && ours(from))
		count_n(SLUICE_CNT_XDP_LOST_REDIRECT, drops);
	return 0;
}

/* A redirect that failed at once (no such device, no XDP transmit on it). */
SEC("tp_btf/xdp_redirect_err")
int sluice_watch_redirect_err(__u64 *ctx)
{
	if (ours((void *)ctx[0]))
		count_n(SLUICE_CNT_XDP_LOST_REDIRECT, 1);
	return 0;
}

/* A driver could not carry out a verdict (most drivers report a failed XDP_TX here). */
SEC("tp_btf/xdp_exception")
int sluice_watch_exception(__u64 *ctx)
{
	__u32 act = (__u32)ctx[2];

	if (!ours((void *)ctx[0]))
		return 0;
	if (act == XDP_TX)
		count_n(SLUICE_CNT_XDP_LOST_TX, 1);
	else if (act == XDP_REDIRECT)
		count_n(SLUICE_CNT_XDP_LOST_REDIRECT, 1);
	else
		count_n(SLUICE_CNT_XDP_LOST_OTHER, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
