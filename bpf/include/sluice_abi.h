/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one header that owns the contract between the datapath and the controller:
 * every struct, constant and map name shared with Rust lives here and nowhere else.
 * controller/abi mirrors these structs and a test checks the mirror against this
 * object's BTF, so a layout cannot drift silently.
 *
 * Rules: fixed-width types, explicit padding, no bitfields, sizes asserted.
 * Changing a layout means renaming its map (bump the _vN suffix) so an agent
 * never reinterprets a pinned map written under the old layout.
 */
#ifndef SLUICE_ABI_H
#define SLUICE_ABI_H

#include <linux/types.h>

/*
 * Addresses are always 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d). One map
 * then serves both families, and a dual-stack socket connecting to a v4-mapped
 * ClusterIP matches the IPv4 frontend without a second lookup.
 */
struct sluice_addr {
	union {
		__u8 bytes[16];
		__u32 words[4]; /* network byte order; lets the datapath compare and copy by word */
	};
};

/* Scopes: a frontend has scope EXT always; scope INT only when SVC_F_TWO_SCOPES is set,
 * i.e. when internal and external traffic policies select different backends. */
#define SLUICE_SCOPE_EXT 0
#define SLUICE_SCOPE_INT 1

/* Frontend kinds, kept in slot 0 flags so the datapath can tell who may use it. */
#define SLUICE_SVC_F_CLUSTER_IP    (1 << 0)
#define SLUICE_SVC_F_NODE_PORT     (1 << 1)
#define SLUICE_SVC_F_EXTERNAL_IP   (1 << 2)
#define SLUICE_SVC_F_LOAD_BALANCER (1 << 3)
#define SLUICE_SVC_F_TWO_SCOPES    (1 << 4)
#define SLUICE_SVC_F_AFFINITY      (1 << 5)
#define SLUICE_SVC_F_EXT_LOCAL     (1 << 6) /* externalTrafficPolicy: Local */
#define SLUICE_SVC_F_INT_LOCAL     (1 << 7) /* internalTrafficPolicy: Local */
/* The backend set came from serving+terminating endpoints because none was ready. */
#define SLUICE_SVC_F_TERMINATING_FALLBACK (1 << 8)
/* loadBalancerSourceRanges apply: the source must match sluice_src_ranges for this rev-NAT id. */
#define SLUICE_SVC_F_SOURCE_RANGES (1 << 9)
/* Topology hints narrowed the cluster-wide backends to this node's zone, or to this node.
 * The agent applies them when it lays out the slots; programs ignore these bits, readers
 * (sluice explain) use them to tell why an endpoint is missing. */
#define SLUICE_SVC_F_TOPOLOGY_ZONE (1 << 10)
#define SLUICE_SVC_F_TOPOLOGY_NODE (1 << 11)
/* The Service has no usable endpoint anywhere: its frontends reject (ICMP port unreachable, as
 * kube-proxy's REJECT) whatever the traffic policy; a Local policy with endpoints only on other
 * nodes drops instead. */
#define SLUICE_SVC_F_NO_ENDPOINTS  (1 << 12)

#define SLUICE_LB_ALG_RANDOM 0
#define SLUICE_LB_ALG_MAGLEV 1

/*
 * Frontend map: slot 0 is the service header (count of backend slots, flags, rev-NAT id);
 * slots 1..count each name one backend. Writers fill backends, then slots, then slot 0,
 * so a reader that sees count N always finds slots 1..N.
 */
struct sluice_svc_key {
	struct sluice_addr addr;
	__be16 port;
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 scope;
	__u16 slot;
	__u16 pad;
};

struct sluice_svc_value {
	__u32 backend_id;       /* slots 1..n; slot 0: the affinity group (sluice_affinity_key) */
	__u32 affinity_timeout; /* slot 0: seconds, when SVC_F_AFFINITY */
	__u16 count;            /* slot 0: number of backend slots */
	__u16 rev_nat_id;       /* slot 0 and slots: the frontend this entry belongs to (low 16 bits) */
	__u16 flags;            /* slot 0: SLUICE_SVC_F_* */
	__u8 lb_alg;            /* slot 0: SLUICE_LB_ALG_* */
	__u8 rev_nat_id_hi;     /* bits 16..23 of rev_nat_id: in what was padding, so headers an
				 * older build wrote (and older programs reading this build's)
				 * keep their meaning for every id below 65,536 */
};

/*
 * Frontend (rev-NAT) ids are 24 bits (SLUICE_REV_NAT_ID_MAX). Connection state keeps them in 16:
 * conntrack entries, Maglev tables and sessionAffinity groups, whose layouts cannot change under
 * live flows. So the agent gives ids up to SLUICE_REV_NAT_ID_NARROW_MAX to every frontend that
 * reaches them (north-south frontends; the ClusterIPs of Services with sessionAffinity), and
 * ids above it only to ClusterIPs socket-LB alone serves, once the narrow ones run short.
 */
#define SLUICE_REV_NAT_ID_MAX        16777215
#define SLUICE_REV_NAT_ID_NARROW_MAX 65535

#define SLUICE_BACKEND_F_TERMINATING (1 << 0)
#define SLUICE_BACKEND_F_LOCAL       (1 << 1)

struct sluice_backend {
	struct sluice_addr addr;
	__be16 port;
	__u8 proto;
	__u8 flags; /* SLUICE_BACKEND_F_* */
	__u32 zone; /* reserved for topology-aware routing */
};

/* rev-NAT: what address a reply or getpeername must show for frontend id N. */
struct sluice_revnat_key {
	__u32 id;
};

struct sluice_revnat_value {
	struct sluice_addr addr;
	__be16 port;
	__u16 pad;
};

/*
 * sessionAffinity: ClientIP. The backend a client last got from an affinity group, and when.
 * As kube-proxy keeps one affinity list per Service port and endpoint set, a group is every
 * frontend (ClusterIP, NodePort, externalIP, LoadBalancer IP) of one Service port and family
 * that offers the same set: `group` is the rev-NAT id of that port's ClusterIP (a narrow one), `set` says which
 * set (SLUICE_AFFINITY_LOCAL) and protocol (SLUICE_AFFINITY_UDP, _SCTP). A frontend's slot 0 carries
 * its group in backend_id, as group | set << SLUICE_AFFINITY_SET_SHIFT (0 in a header written
 * before groups: the frontend's own rev-NAT id and scope then stand for them). Packet paths
 * know the client by its source address; socket-LB by its network namespace cookie (one per
 * pod; the node's processes share one), stored in the first eight bytes of `client` with
 * `by_cookie` set, so the two kinds never collide.
 */
struct sluice_affinity_key {
	struct sluice_addr client;
	__u16 group;
	__u8 set;
	__u8 by_cookie;
};

#define SLUICE_AFFINITY_LOCAL (1 << 0) /* the local endpoint set of a Local traffic policy */
#define SLUICE_AFFINITY_UDP   (1 << 1) /* TCP and UDP ports of one number are two Service ports */
#define SLUICE_AFFINITY_SCTP  (1 << 2) /* and so is an SCTP port of that number */
#define SLUICE_AFFINITY_SET_SHIFT 16

struct sluice_affinity_value {
	__u64 last_used_ns; /* CLOCK_MONOTONIC */
	__u32 backend_id;
	__u32 pad;
};

/*
 * Maglev (ProxyConfig loadBalancingAlgorithm: maglev), for north-south frontends: per frontend,
 * scope and protocol a table of SLUICE_MAGLEV_M backend ids, filled by the agent with Maglev
 * consistent hashing; tc and XDP index it with a hash of the flow, so every node sends the same
 * flow to the same backend, and a backend coming or going moves few flows. Socket-LB (traffic
 * from this node) stays random.
 */
#define SLUICE_MAGLEV_M 1021

struct sluice_maglev_key {
	__u16 rev_nat_id; /* north-south frontends only: always narrow */
	__u8 scope;
	__u8 proto;
};

struct sluice_maglev_table {
	__u32 backend_ids[SLUICE_MAGLEV_M];
};

/* Which Service owns rev-NAT id N ("namespace/name"): read only by the CLI, so the maps
 * alone explain themselves after the agent has stopped. */
struct sluice_frontend_name {
	char name[128];
};

/* Per-socket reverse translation, written at connect/sendmsg, read by recvmsg/getpeername. */
struct sluice_sock_revnat_key {
	__u64 cookie;
	struct sluice_addr addr; /* backend address */
	__be16 port;             /* backend port */
	__u16 pad1;
	__u32 pad2;
};

struct sluice_sock_revnat_value {
	struct sluice_addr addr; /* frontend address */
	__be16 port;
	/* The frontend's id when narrow, else 0: builds before 24-bit ids check the frontend by it;
	 * this one checks it by address and port. */
	__u16 rev_nat_id;
};

/*
 * loadBalancerSourceRanges: LPM key. The prefix covers rev_nat_id (always all 32 bits of it)
 * and then the source address, so one trie holds every service's ranges.
 */
struct sluice_src_range_key {
	__u32 prefixlen; /* 32 + bits of addr that must match */
	__u32 rev_nat_id;
	struct sluice_addr addr;
};

/* Addresses that belong to LoadBalancer and ExternalIP frontends: traffic to them on a port
 * no service uses is dropped in XDP. */
struct sluice_frontend_addr_value {
	__u32 flags; /* SLUICE_SVC_F_* of the kinds using this address */
};

/*
 * The source address a network namespace's unbound sockets get, per family (zero: none): what
 * socket-LB checks loadBalancerSourceRanges against when a socket connects before it has a
 * source. Keyed by the namespace's cookie; the agent writes the node's own namespace (its node
 * addresses) and each pod's.
 */
struct sluice_netns_addrs {
	struct sluice_addr v4; /* v4-mapped */
	struct sluice_addr v6;
};

/*
 * The ports north-south flows can use on this node, so that the tc and XDP programs let every
 * other packet (traffic between pods of different nodes above all) go after reading one bit:
 * bit p of `frontend` is set once any frontend has had port p (a packet to another port on
 * ingress is no frontend's, and no flow's: a flow's forward entry is keyed by its frontend's
 * port), bit p of `local_backend` once a backend on this node has listened on port p (a packet
 * leaving from another port is no local backend's reply). Ports in host byte order, protocols
 * together. Bits are never cleared, so the flows of a frontend that is gone go on being
 * translated for as long as conntrack keeps them, as before the filter.
 *
 * `lb_addr` does the same for XDP's drop of unknown ports on LoadBalancer and ExternalIP
 * addresses: bit addr_hash16(a) (bpf/lib/nodeport.h; sluice-abi's `Addr::hash16`) is set once
 * an address `a` of SLUICE_MAP_LB_ADDRS hashed there, so a packet to an address whose bit is
 * clear is known not to be one of them without a lookup (a set bit may be another address's:
 * then the map says).
 *
 * The programs filter only once SLUICE_PORT_FILTER_F_COMPLETE is set: the agent sets it after
 * adding the ports (and addresses) of every entry and flow the maps held when it started (a new
 * map, after an upgrade, starts empty), and adds one before writing the entry that makes it
 * reachable.
 */
#define SLUICE_PORT_FILTER_WORDS 1024 /* 65,536 ports, 64 to a word */
#define SLUICE_PORT_FILTER_F_COMPLETE (1 << 0)

struct sluice_port_filter {
	__u64 frontend[SLUICE_PORT_FILTER_WORDS];
	__u64 local_backend[SLUICE_PORT_FILTER_WORDS];
	__u64 lb_addr[SLUICE_PORT_FILTER_WORDS];
	__u32 flags; /* SLUICE_PORT_FILTER_F_* */
	__u32 pad;
};

/* NodePorts, for bind protection: a host process may not bind a port a NodePort owns. */
struct sluice_nodeport_key {
	__u16 port; /* host byte order */
	__u8 proto;
	__u8 pad;
};

/*
 * Conntrack for north-south flows, in three tables so a flood of one kind cannot evict another:
 * established TCP flows (SLUICE_MAP_CT, keyed as before the split so they survive an upgrade),
 * TCP flows whose handshake has not completed (SLUICE_MAP_CT_HANDSHAKE), and every other
 * protocol (SLUICE_MAP_CT_OTHER). Only a SYN starts a TCP flow, in the handshake table; it moves
 * to the established table when the client's ACK answers the backend's SYN-ACK (its number is
 * the SYN-ACK's sequence + 1, which a blind spoofer cannot know). Each flow has two entries:
 *  forward  {client -> frontend}:            addr1:port1 = backend, addr2:port2 = SNAT source (if SNAT)
 *  reverse  {backend -> client or SNAT addr}: addr1:port1 = frontend (new source),
 *                                            addr2:port2 = client (new destination, if SNAT)
 */
#define SLUICE_CT_FORWARD 0
#define SLUICE_CT_REVERSE 1

/*
 * Resizing a conntrack table (ProxyConfig mapSizes) replaces it: the agent copies the entries
 * as it starts, and the old programs go on adding and changing flows in the old table until the
 * new programs are swapped in, seconds later. After the swap the agent brings over what is newer
 * in the old table, but a packet in between would find nothing (a reply passed to the stack is
 * answered with an RST) or a stale copy (a flow since closed, its client port reused by a new
 * one). So, from before the swap until that catch-up is done, the agent puts the old tables in
 * these slots, and every lookup first moves the entry the old table has, if any, into the new
 * one (ct_take_over). Empty otherwise. SLUICE_MAP_CT_HANDSHAKE_PREVIOUS has one slot, the
 * handshake table's.
 */
#define SLUICE_CT_PREVIOUS_TCP   0 /* in SLUICE_MAP_CT_PREVIOUS: the old SLUICE_MAP_CT */
#define SLUICE_CT_PREVIOUS_OTHER 1 /* the old SLUICE_MAP_CT_OTHER */
#define SLUICE_CT_PREVIOUS_SLOTS 2

#define SLUICE_CT_F_SNAT  (1 << 0)
#define SLUICE_CT_F_LOCAL (1 << 1) /* backend is on this node */
/* TCP close seen: FIN from the client side, FIN from the backend side (an RST sets both). A
 * flow with both is over: its SNAT port may go to a new flow when no free one is found, and
 * a SYN on its tuple starts a new flow instead of reusing the old one's backend. */
#define SLUICE_CT_F_FIN_FWD (1 << 2)
#define SLUICE_CT_F_FIN_REV (1 << 3)
#define SLUICE_CT_F_CLOSED  (SLUICE_CT_F_FIN_FWD | SLUICE_CT_F_FIN_REV)
/* On the reverse entry of a flow XDP created to a remote backend, until its first reply: a
 * client that has to send its SYN again on such a flow tells the agent that what XDP sends
 * may not arrive (SLUICE_CNT_XDP_SYN_UNANSWERED), even where the agent's own proof got through
 * (a frame whose checksum the sender left to offload is one XDP cannot fix). */
#define SLUICE_CT_F_XDP_UNANSWERED (1 << 4)

struct sluice_ct_key {
	struct sluice_addr saddr;
	struct sluice_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

struct sluice_ct_value {
	struct sluice_addr addr1;
	struct sluice_addr addr2;
	__be16 port1;
	__be16 port2;
	__u16 rev_nat_id; /* the frontend's id when narrow, else 0; read only to show the flow */
	__u8 flags;
	/* When a UDP flow last carried a packet, in conntrack epochs, never 0; 0 is an entry
	 * written before epochs existed, taken as fresh. */
	__u8 epoch;
};

/* A TCP flow in the handshake table: its entry, and a sequence number: on the forward entry the
 * client's SYN's, on the reverse entry the backend's SYN-ACK's (`answered` once one was seen).
 * `syn_at`: when the client's SYN was last sent, new or sent again with its own sequence number,
 * in ticks of 2^SLUICE_CT_HS_TICK_SHIFT ns of CLOCK_MONOTONIC_COARSE (wrapping), on both entries. */
struct sluice_ct_handshake {
	struct sluice_ct_value ct;
	__be32 seq;
	__u8 answered;
	__u8 pad;
	__u16 syn_at;
};

/* A handshake tick is about 67 ms. */
#define SLUICE_CT_HS_TICK_SHIFT 26
/* A client's SYN is taken as sent again (its retransmission) only this many ticks (about 0.5 s)
 * after the last, with the same sequence number: TCP waits at least 1 s. A SYN repeating a tuple
 * sooner, or with another sequence number, is a flood's random tuples meeting, not a client
 * waiting for an answer. */
#define SLUICE_CT_HS_RESENT_TICKS 8
/* A handshake whose client sent no SYN for this many ticks (about 10 s) is given up: its SNAT
 * port may go to a new flow when no free one is found (a spoofed SYN flood's dead handshakes
 * would otherwise hold the ports towards its backends until the LRU evicts them). A client
 * still trying sends its SYN again at 1, 3, 7 s and keeps its port. */
#define SLUICE_CT_HS_STALE_TICKS 150

/* Conntrack's clock for UDP: an epoch is 2^SHIFT ns of CLOCK_MONOTONIC_COARSE (about 69 s), so
 * one byte holds a flow's last use and an entry is written at most once an epoch. */
#define SLUICE_CT_EPOCH_SHIFT 36
/* UDP has no end: a flow idle this many epochs (69 to 137 s) is over, as conntrack's UDP
 * timeout ends one. TCP flows end with their FIN or RST (SLUICE_CT_F_CLOSED), or the LRU. */
#define SLUICE_CT_UDP_TIMEOUT_EPOCHS 2

/*
 * Fragments of a translated datagram: only the first carries the L4 header, so its ports are
 * kept under what every fragment carries (addresses, identification, protocol, as they
 * arrived) for the later ones to be translated alike. LRU: a datagram's fragments arrive
 * within moments, and an entry lives on harmlessly until evicted. One key for both families
 * (IPv4 v4-mapped, its 16-bit id as a 32-bit number), as in every other map.
 */
struct sluice_frag_key {
	struct sluice_addr saddr;
	struct sluice_addr daddr;
	__be32 id; /* IPv4's identification, or the IPv6 Fragment header's */
	__u8 proto;
	__u8 pad[3];
};

struct sluice_frag_ports {
	__be16 sport;
	__be16 dport;
};

/* SNAT source ports: Linux's default ephemeral range (ip_local_port_range), which the node's
 * own sockets share; SNAT skips a port a node socket holds instead of reserving the range. */
#define SLUICE_SNAT_PORT_MIN 32768
#define SLUICE_SNAT_PORT_MAX 60999

/*
 * SourceBlocklist: sources dropped in XDP before anything else. LPM key over the source
 * address (v4-mapped for IPv4); the value says which entry matched (for its hit counter) and,
 * optionally, the only destination ports it applies to.
 */
#define SLUICE_BLOCK_PORTS 8

struct sluice_block_key {
	__u32 prefixlen; /* bits of addr that must match (96 + n for an IPv4 /n) */
	struct sluice_addr addr;
};

struct sluice_block_port {
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct sluice_block_value {
	__u32 id;     /* index into sluice_block_hits */
	__u16 nports; /* 0: every packet from the source */
	__u16 pad;
	struct sluice_block_port ports[SLUICE_BLOCK_PORTS];
};

/* Node-wide settings the datapath needs (one entry, key 0). */
#define SLUICE_CFG_F_XDP_ACCEL (1 << 0) /* translate NodePort/LB flows to remote backends in XDP */
/* Socket-LB only for processes in the node's own network namespace (sidecar meshes translate
 * in the pod themselves): pods' sockets are left to the tc path. */
#define SLUICE_CFG_F_HOST_NS_ONLY (1 << 1)

struct sluice_config {
	struct sluice_addr node_ip4; /* SNAT source for IPv4 (v4-mapped); zero: none */
	struct sluice_addr node_ip6; /* SNAT source for IPv6; zero: none */
	__u32 flags;                 /* SLUICE_CFG_F_* */
	__u32 pad;
};

/*
 * XDP acceleration per device (key: ifindex in the node's namespace). XDP translates and sends
 * flows itself only on a device whose entry has SLUICE_XDP_DEV_F_ACCEL, which the agent sets
 * once it has seen a frame sent by XDP from that device answered (a driver or peer may accept
 * XDP programs and still lose what they send). The rest is for the CLI: what runs and why.
 */
#define SLUICE_XDP_DEV_F_ACCEL (1 << 0)

enum sluice_xdp_state {
	SLUICE_XDP_STATE_OFF = 0,      /* acceleration not asked for: tc translates */
	SLUICE_XDP_STATE_UNPROVEN,     /* asked for, not proven yet (nothing to prove it with): tc */
	SLUICE_XDP_STATE_ACCELERATED,  /* proven: XDP translates and sends remote flows */
	SLUICE_XDP_STATE_FALLBACK,     /* best-effort, and XDP's frames were not delivered: tc */
	SLUICE_XDP_STATE_FAILED,       /* native demanded, and XDP's frames were not delivered: tc */
};

struct sluice_xdp_device {
	__u32 flags;      /* SLUICE_XDP_DEV_F_* */
	__u32 state;      /* enum sluice_xdp_state */
	__u64 since_ns;   /* CLOCK_REALTIME of the last change of state */
	char name[16];    /* the device's name (IFNAMSIZ) */
	char reason[96];  /* why this state, in words */
};

/* Counter indices of the per-CPU counters array. */
enum sluice_counter {
	SLUICE_CNT_SOCK_XLATE = 0,    /* connect/sendmsg translated to a backend */
	SLUICE_CNT_SOCK_NO_BACKEND,   /* rejected with ECONNREFUSED: no usable endpoint */
	SLUICE_CNT_SOCK_MISSING_SLOT, /* slot or backend absent: should never happen */
	SLUICE_CNT_SOCK_REVNAT,       /* recvmsg/getpeername reverse-translated */
	SLUICE_CNT_SOCK_REVNAT_STALE, /* reverse entry found but its frontend is gone */
	SLUICE_CNT_NP_NEW_FLOW,       /* tc: new north-south flow translated */
	SLUICE_CNT_NP_FORWARD,        /* tc: packet of a known flow translated */
	SLUICE_CNT_NP_REVERSE,        /* tc: reply reverse-translated */
	SLUICE_CNT_NP_ICMP_ERROR,     /* tc: ICMP error of a tracked flow translated */
	SLUICE_CNT_NP_REJECT_NO_BACKEND,/* tc: frontend without usable backend: ICMP port unreachable */
	SLUICE_CNT_NP_DROP_LOCAL_NONE,/* tc: externalTrafficPolicy Local, no local backend */
	SLUICE_CNT_NP_DROP_SNAT_PORT, /* tc: no free SNAT port */
	SLUICE_CNT_NP_FIB_FAIL,       /* tc: no route to the backend; left to the stack */
	SLUICE_CNT_XDP_DROP_SOURCE_RANGE, /* xdp: source outside loadBalancerSourceRanges */
	SLUICE_CNT_XDP_DROP_UNKNOWN_PORT, /* xdp: frontend address, port no service uses */
	SLUICE_CNT_XDP_FORWARD,       /* xdp: translated and sent out from XDP */
	SLUICE_CNT_XDP_REVERSE,       /* xdp: reply reverse-translated in XDP */
	SLUICE_CNT_XDP_PASS_LOCAL,    /* xdp: local backend, passed on to tc */
	SLUICE_CNT_BIND_DENIED,       /* post_bind: a host bind on a NodePort refused */
	SLUICE_CNT_XDP_DROP_BLOCKLIST,/* xdp: source in a SourceBlocklist */
	SLUICE_CNT_MONITOR_LOST,      /* an event for `sluice monitor` found the ring buffer full */
	SLUICE_CNT_NP_DROP_ERROR,     /* tc/xdp: a rewrite, map update or bounds check failed */
	/* Frames XDP sent from a --devices device that the kernel then lost (xdp_watch.c): */
	SLUICE_CNT_XDP_LOST_TX,       /* XDP_TX: the driver, or a veth's peer, dropped them */
	SLUICE_CNT_XDP_LOST_REDIRECT, /* redirected: the target device refused or dropped them */
	SLUICE_CNT_XDP_LOST_OTHER,    /* another driver exception (XDP_ABORTED, an unknown verdict) */
	SLUICE_CNT_XDP_FLOW_ANSWERED, /* a flow XDP created to a remote backend got its first reply */
	SLUICE_CNT_XDP_SYN_UNANSWERED,/* xdp: a client sent its SYN again on such a flow, unanswered */
	/* tc ingress: a later fragment whose first fragment was not translated (it arrived before
	 * it, was evicted, or is no Service's): to a LoadBalancer/ExternalIP address, dropped; */
	SLUICE_CNT_NP_DROP_FRAG_UNKNOWN,
	SLUICE_CNT_NP_FRAG_UNTRACKED, /* to any other address, passed on untouched */
	SLUICE_CNT_SOCK_SOURCE_RANGE, /* rejected with ECONNREFUSED: source outside loadBalancerSourceRanges */
	/* A TCP packet other than a SYN to a frontend, of no flow conntrack knows: dropped, and
	 * nothing created (a spoofed ACK flood, or a flow whose entries are gone). */
	SLUICE_CNT_NP_DROP_NOT_SYN,
	SLUICE_CNT_XDP_DROP_NOT_SYN,
	SLUICE_CNT_NP_ESTABLISHED,    /* a TCP flow's handshake completed: it moved to the established table */
	SLUICE_CNT_NP_ACK_UNPROVEN,   /* an ACK in a handshake that does not answer the backend's SYN-ACK */
	/* Entries added to each conntrack table (new keys only), and removed from it by Sluice
	 * (the handshake table's by the datapath, the other table's by the agent): with the entries
	 * in a table, what the LRU evicted follows. */
	SLUICE_CNT_CT_TCP_INSERTED,
	SLUICE_CNT_CT_HANDSHAKE_INSERTED,
	SLUICE_CNT_CT_HANDSHAKE_DELETED,
	SLUICE_CNT_CT_OTHER_INSERTED,
	SLUICE_CNT_CT_OTHER_DELETED,
	SLUICE_CNT_CT_TAKEN_OVER,     /* an entry found in a replaced table (SLUICE_CT_PREVIOUS_*) and copied */
	SLUICE_CNT_MAX,
};

#define SLUICE_COUNTERS_SIZE 64

/*
 * `sluice monitor`: decisions the datapath takes (translations, rejects, drops) streamed through
 * a ring buffer. Nothing is written unless a monitor holds the lease in sluice_monitor_v1 (key 0:
 * CLOCK_MONOTONIC deadline in ns, 0 when nobody listens), so the cost when nobody listens is one
 * array read per decision, and a monitor that dies stops the stream within its lease.
 */
#define SLUICE_HOOK_CONNECT4  1
#define SLUICE_HOOK_CONNECT6  2
#define SLUICE_HOOK_SENDMSG4  3
#define SLUICE_HOOK_SENDMSG6  4
#define SLUICE_HOOK_POST_BIND 5
#define SLUICE_HOOK_TC        6
#define SLUICE_HOOK_XDP       7

struct sluice_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC */
	__u32 reason;     /* enum sluice_counter: what was decided */
	__u32 pid;        /* socket hooks: the process (tgid); packet hooks: 0 */
	__u8 hook;        /* SLUICE_HOOK_* */
	__u8 proto;
	__be16 sport;
	__be16 dport;
	__be16 to_port;   /* translated destination port, when translated */
	__u32 rev_nat_id; /* the frontend, when one matched */
	struct sluice_addr saddr;   /* packet hooks: the source; socket hooks: zero */
	struct sluice_addr daddr;   /* the destination as sent */
	struct sluice_addr to_addr; /* translated destination (the backend), when translated */
	char comm[16];    /* socket hooks: the process name */
};

#define SLUICE_EVENTS_BYTES (1 << 20)

/*
 * What the agent last did and what it could not do, kept beside the datapath so `sluice status`
 * and `sluice service list` can say it on the node, with or without the API, even after the
 * agent stopped. Written only by the agent; no program reads these.
 */
struct sluice_agent_status {
	__u64 last_sync_unix_ns;     /* end of the last successful sync, CLOCK_REALTIME */
	__u64 last_sync_duration_ns;
	__u64 generation;            /* index generation that sync programmed */
	__u32 pid;                   /* the agent that wrote this */
	__u32 failed_syncs;          /* consecutive failed syncs since the last success */
	char last_error[224];        /* the latest failure, NUL-terminated; empty after a success */
};

/* One object the datapath could not program (or only in part), and why. */
struct sluice_problem {
	char object[128];  /* "Service ns/name", "EndpointSlice ns/name", ... */
	char message[256];
};

/* Map names; the _vN suffix is the layout version. */
#define SLUICE_MAP_SERVICES     sluice_svc_v1
#define SLUICE_MAP_BACKENDS     sluice_backends_v1
#define SLUICE_MAP_REVNAT       sluice_revnat_v1
#define SLUICE_MAP_SOCK_REVNAT  sluice_sock_revnat_v1
#define SLUICE_MAP_COUNTERS     sluice_counters_v1
#define SLUICE_MAP_NAMES        sluice_frontend_names_v1
#define SLUICE_MAP_SRC_RANGES   sluice_src_ranges_v1
#define SLUICE_MAP_LB_ADDRS     sluice_lb_addrs_v1
#define SLUICE_MAP_NODEPORTS    sluice_nodeports_v1
#define SLUICE_MAP_CT           sluice_ct_v1 /* established TCP (before the split: every flow) */
#define SLUICE_MAP_CT_HANDSHAKE sluice_ct_handshake_v1
#define SLUICE_MAP_CT_OTHER     sluice_ct_other_v1
/* The conntrack tables an agent replaced (other mapSizes), while its programs take over: see
 * SLUICE_CT_PREVIOUS_*. */
#define SLUICE_MAP_CT_PREVIOUS  sluice_ct_previous_v1
#define SLUICE_MAP_CT_HANDSHAKE_PREVIOUS sluice_ct_handshake_previous_v1
#define SLUICE_MAP_CONFIG       sluice_config_v1
#define SLUICE_MAP_BLOCKLIST    sluice_blocklist_v1
#define SLUICE_MAP_BLOCK_HITS   sluice_block_hits_v1
/* The node's own network namespace cookie (u64, key 0): bind protection applies there only. */
#define SLUICE_MAP_HOST_NETNS   sluice_host_netns_v1
#define SLUICE_MAP_EVENTS       sluice_events_v2 /* v2: 24-bit rev_nat_id */
#define SLUICE_MAP_MONITOR      sluice_monitor_v1
#define SLUICE_MAP_AFFINITY     sluice_affinity_v1
#define SLUICE_MAP_MAGLEV       sluice_maglev_v1
#define SLUICE_MAP_AGENT_STATUS sluice_agent_status_v1
#define SLUICE_MAP_PROBLEMS     sluice_problems_v1
#define SLUICE_MAP_XDP_DEVICES  sluice_xdp_devices_v1
#define SLUICE_MAP_FRAG         sluice_frag_v2
#define SLUICE_MAP_NETNS_ADDRS  sluice_netns_addrs_v1
#define SLUICE_MAP_PORT_FILTER  sluice_port_filter_v1

#define SLUICE_SERVICES_MAX    65536
#define SLUICE_BACKENDS_MAX    65536
#define SLUICE_REVNAT_MAX      65536
#define SLUICE_SOCK_REVNAT_MAX 262144
#define SLUICE_SRC_RANGES_MAX  16384
#define SLUICE_LB_ADDRS_MAX    16384
#define SLUICE_NODEPORTS_MAX   32768
#define SLUICE_CT_MAX          262144
#define SLUICE_CT_HANDSHAKE_MAX 65536
#define SLUICE_CT_OTHER_MAX    131072
#define SLUICE_BLOCKLIST_MAX   16384
#define SLUICE_PROBLEMS_MAX    4096
#define SLUICE_AFFINITY_MAX    65536
#define SLUICE_MAGLEV_MAX      16384
#define SLUICE_NETNS_ADDRS_MAX 65536
#define SLUICE_XDP_DEVICES_MAX 256
#define SLUICE_FRAG_MAX        8192

#ifndef __cplusplus
_Static_assert(sizeof(struct sluice_addr) == 16, "sluice_addr");
_Static_assert(sizeof(struct sluice_svc_key) == 24, "sluice_svc_key");
_Static_assert(sizeof(struct sluice_svc_value) == 16, "sluice_svc_value");
_Static_assert(sizeof(struct sluice_backend) == 24, "sluice_backend");
_Static_assert(sizeof(struct sluice_revnat_key) == 4, "sluice_revnat_key");
_Static_assert(sizeof(struct sluice_revnat_value) == 20, "sluice_revnat_value");
_Static_assert(sizeof(struct sluice_frontend_name) == 128, "sluice_frontend_name");
_Static_assert(sizeof(struct sluice_sock_revnat_key) == 32, "sluice_sock_revnat_key");
_Static_assert(sizeof(struct sluice_sock_revnat_value) == 20, "sluice_sock_revnat_value");
_Static_assert(sizeof(struct sluice_src_range_key) == 24, "sluice_src_range_key");
_Static_assert(sizeof(struct sluice_frontend_addr_value) == 4, "sluice_frontend_addr_value");
_Static_assert(sizeof(struct sluice_nodeport_key) == 4, "sluice_nodeport_key");
_Static_assert(sizeof(struct sluice_netns_addrs) == 32, "sluice_netns_addrs");
_Static_assert(sizeof(struct sluice_port_filter) == 24584, "sluice_port_filter");
_Static_assert(sizeof(struct sluice_ct_key) == 40, "sluice_ct_key");
_Static_assert(sizeof(struct sluice_ct_value) == 40, "sluice_ct_value");
_Static_assert(sizeof(struct sluice_ct_handshake) == 48, "sluice_ct_handshake");
_Static_assert(sizeof(struct sluice_config) == 40, "sluice_config");
_Static_assert(sizeof(struct sluice_block_key) == 20, "sluice_block_key");
_Static_assert(sizeof(struct sluice_block_port) == 4, "sluice_block_port");
_Static_assert(SLUICE_CNT_MAX <= SLUICE_COUNTERS_SIZE, "the counters array has room for every counter");
_Static_assert(sizeof(struct sluice_block_value) == 40, "sluice_block_value");
_Static_assert(sizeof(struct sluice_event) == 96, "sluice_event");
_Static_assert(sizeof(struct sluice_agent_status) == 256, "sluice_agent_status");
_Static_assert(sizeof(struct sluice_affinity_key) == 20, "sluice_affinity_key");
_Static_assert(sizeof(struct sluice_affinity_value) == 16, "sluice_affinity_value");
_Static_assert(sizeof(struct sluice_maglev_key) == 4, "sluice_maglev_key");
_Static_assert(sizeof(struct sluice_maglev_table) == 4084, "sluice_maglev_table");
_Static_assert(sizeof(struct sluice_problem) == 384, "sluice_problem");
_Static_assert(sizeof(struct sluice_xdp_device) == 128, "sluice_xdp_device");
_Static_assert(sizeof(struct sluice_frag_key) == 40, "sluice_frag_key");
_Static_assert(sizeof(struct sluice_frag_ports) == 4, "sluice_frag_ports");
#endif

#endif /* SLUICE_ABI_H */
