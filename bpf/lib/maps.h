/* SPDX-License-Identifier: Apache-2.0 */
/* Map definitions shared by every program object. The agent pins each map by its name
 * under --bpf-root, so all objects (and agent restarts) share one instance. */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "sluice_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sluice_svc_key);
	__type(value, struct sluice_svc_value);
	__uint(max_entries, SLUICE_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_SERVICES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sluice_backend);
	__uint(max_entries, SLUICE_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_BACKENDS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sluice_revnat_key);
	__type(value, struct sluice_revnat_value);
	__uint(max_entries, SLUICE_REVNAT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_REVNAT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sluice_revnat_key);
	__type(value, struct sluice_frontend_name);
	__uint(max_entries, SLUICE_REVNAT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_NAMES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sluice_sock_revnat_key);
	__type(value, struct sluice_sock_revnat_value);
	__uint(max_entries, SLUICE_SOCK_REVNAT_MAX);
} SLUICE_MAP_SOCK_REVNAT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sluice_src_range_key);
	__type(value, __u8);
	__uint(max_entries, SLUICE_SRC_RANGES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_SRC_RANGES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sluice_addr);
	__type(value, struct sluice_frontend_addr_value);
	__uint(max_entries, SLUICE_LB_ADDRS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_LB_ADDRS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sluice_nodeport_key);
	__type(value, __u8);
	__uint(max_entries, SLUICE_NODEPORTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_NODEPORTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_port_filter);
	__uint(max_entries, 1);
} SLUICE_MAP_PORT_FILTER SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sluice_ct_key);
	__type(value, struct sluice_ct_value);
	__uint(max_entries, SLUICE_CT_MAX);
} SLUICE_MAP_CT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sluice_ct_key);
	__type(value, struct sluice_ct_handshake);
	__uint(max_entries, SLUICE_CT_HANDSHAKE_MAX);
} SLUICE_MAP_CT_HANDSHAKE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sluice_ct_key);
	__type(value, struct sluice_ct_value);
	__uint(max_entries, SLUICE_CT_OTHER_MAX);
} SLUICE_MAP_CT_OTHER SEC(".maps");

/* The inner maps' shape; their size may be any (the kernel compares the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, SLUICE_CT_PREVIOUS_SLOTS);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LRU_HASH);
		__type(key, struct sluice_ct_key);
		__type(value, struct sluice_ct_value);
		__uint(max_entries, 1);
	});
} SLUICE_MAP_CT_PREVIOUS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LRU_HASH);
		__type(key, struct sluice_ct_key);
		__type(value, struct sluice_ct_handshake);
		__uint(max_entries, 1);
	});
} SLUICE_MAP_CT_HANDSHAKE_PREVIOUS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SLUICE_COUNTERS_SIZE);
} SLUICE_MAP_COUNTERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_config);
	__uint(max_entries, 1);
} SLUICE_MAP_CONFIG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sluice_block_key);
	__type(value, struct sluice_block_value);
	__uint(max_entries, SLUICE_BLOCKLIST_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_BLOCKLIST SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SLUICE_BLOCKLIST_MAX);
} SLUICE_MAP_BLOCK_HITS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} SLUICE_MAP_HOST_NETNS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct sluice_netns_addrs);
	__uint(max_entries, SLUICE_NETNS_ADDRS_MAX);
} SLUICE_MAP_NETNS_ADDRS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sluice_xdp_device);
	__uint(max_entries, SLUICE_XDP_DEVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_XDP_DEVICES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SLUICE_EVENTS_BYTES);
} SLUICE_MAP_EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} SLUICE_MAP_MONITOR SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sluice_maglev_key);
	__type(value, struct sluice_maglev_table);
	__uint(max_entries, SLUICE_MAGLEV_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_MAGLEV SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sluice_frag_key);
	__type(value, struct sluice_frag_ports);
	__uint(max_entries, SLUICE_FRAG_MAX);
} SLUICE_MAP_FRAG SEC(".maps");

/* Per-CPU room for the keys and values of backend selection beyond "random" (affinity,
 * Maglev): tc and XDP have no stack left for them. */
struct sluice_lb_scratch {
	struct sluice_affinity_key key;
	struct sluice_affinity_value value;
	struct sluice_maglev_key maglev;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_lb_scratch);
	__uint(max_entries, 1);
} sluice_lb_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sluice_affinity_key);
	__type(value, struct sluice_affinity_value);
	__uint(max_entries, SLUICE_AFFINITY_MAX);
} SLUICE_MAP_AFFINITY SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_agent_status);
	__uint(max_entries, 1);
} SLUICE_MAP_AGENT_STATUS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sluice_problem);
	__uint(max_entries, SLUICE_PROBLEMS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} SLUICE_MAP_PROBLEMS SEC(".maps");

static __always_inline void sluice_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&SLUICE_MAP_COUNTERS, &idx);
	if (c)
		*c += 1;
}

static __always_inline struct sluice_config *node_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&SLUICE_MAP_CONFIG, &zero);
}

/* Whether a `sluice monitor` holds the lease; the clock is read only while one does. */
static __always_inline int sluice_monitored(void)
{
	__u32 zero = 0;
	__u64 *until = bpf_map_lookup_elem(&SLUICE_MAP_MONITOR, &zero);

	return until && *until && *until > bpf_ktime_get_ns();
}

/* Hands a filled-in event to the monitor. Not inlined on purpose: its prototype is what puts
 * struct sluice_event into the object's BTF, where the ABI layout test checks the Rust mirror. */
static __attribute__((noinline, unused)) void sluice_event_submit(struct sluice_event *ev)
{
	bpf_ringbuf_submit(ev, 0);
}

/* Space for one event in the ring buffer, zeroed, with reason and time set (built in place: the
 * XDP and tc paths have no stack to spare); NULL when the ring is full, which is counted. The
 * caller fills in the rest and calls sluice_event_submit. */
static __always_inline struct sluice_event *sluice_event_start(__u32 reason, __u8 hook)
{
	struct sluice_event *ev = bpf_ringbuf_reserve(&SLUICE_MAP_EVENTS, sizeof(*ev), 0);

	if (!ev) {
		sluice_count(SLUICE_CNT_MONITOR_LOST);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->reason = reason;
	ev->hook = hook;
	return ev;
}

#endif
