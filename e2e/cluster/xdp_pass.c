/* SPDX-License-Identifier: Apache-2.0 */
/* Attached to the fabric's side of each node's veth: a veth delivers what the node's XDP sends
 * with XDP_TX only when an XDP program runs on the receiving peer. A physical wire has no such
 * condition; this stands in for it. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
