# shellcheck shell=bash
# Shared helpers for e2e/nodes/*: kubelet nodes with containerd, the chart installed by helm.
# Sourced, not run. Builds on e2e/cluster/lib.sh (process, cgroup and PKI helpers).

NODES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# One run dir per cluster, apart from e2e/cluster's (both can be up at once).
SLUICE_E2E_RUN=${SLUICE_NODES_RUN:-/tmp/sluice-nodes}
# shellcheck source=../cluster/lib.sh
. "$NODES_DIR/../cluster/lib.sh"
REPO_DIR=$(cd "$NODES_DIR/../.." && pwd)

# Addresses: everything lives in namespaces on one fabric bridge, nothing routes out of them.
FABRIC_PREFIX=172.31.0
CP_IP=$FABRIC_PREFIX.2          # control plane netns: etcd, apiserver, controller-manager, scheduler
API_SECURE_PORT=6443
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
CLUSTER_DNS_IP=10.96.0.10
CLUSTER_CIDR=10.244.0.0/16
node_ip() { echo "$FABRIC_PREFIX.$((10 + $1))"; }   # node index -> address on the fabric
node_pod_cidr() { echo "10.244.$1.0/24"; }

# Names, all derived from the run id (sn- = sluice nodes; e2e/cluster uses sl-).
ns_name() { echo "sn-$RUNID-$1"; }           # fab, cp, n1, n2, ...
# The kubelet's cgroupRoot: created in every v1 hierarchy and in the cgroup2 mount.
node_cgroup_root() { echo "/sn-$RUNID/$1"; }
node_dir() { echo "$RUN/nodes/$1"; }

# v1 controller hierarchies mounted on this host (hybrid: v1 controllers, v2 beside them).
cgroup_v1_mounts() { awk '$3 == "cgroup" { print $2 }' /proc/mounts; }

# cgroup_create_everywhere PATH: PATH (e.g. /sn-x/n1) in every v1 hierarchy and in cgroup2,
# cpuset.cpus/mems copied from the parent at each level (a v1 cpuset child starts empty).
cgroup_create_everywhere() {
	local rel=$1 m part cur
	for m in $(cgroup_v1_mounts) "$(cgroup2_mount)"; do
		cur=$m
		IFS=/ read -ra part <<<"${rel#/}"
		local p
		for p in "${part[@]}"; do
			local parent=$cur
			cur=$cur/$p
			[[ -d $cur ]] && continue
			mkdir "$cur"
			if [[ -f $cur/cpuset.cpus && -z $(tr -d '[:space:]' <"$cur/cpuset.cpus") ]]; then
				cat "$parent/cpuset.cpus" >"$cur/cpuset.cpus"
				cat "$parent/cpuset.mems" >"$cur/cpuset.mems"
			fi
		done
	done
}

# cgroup_remove_everywhere PATH: kill what is left and remove PATH's subtree everywhere.
cgroup_remove_everywhere() {
	local rel=$1 m
	kill_cgroup "$(cgroup2_mount)$rel"
	for m in $(cgroup_v1_mounts); do
		[[ -d $m$rel ]] || continue
		local p
		while read -r p; do kill -KILL "$p" 2>/dev/null || true; done < <(find "$m$rel" -name cgroup.procs -exec cat {} + 2>/dev/null)
	done
	for m in $(cgroup_v1_mounts) "$(cgroup2_mount)"; do
		remove_cgroup "$m$rel"
	done
}

# in_node NODE CMD...: run CMD in the node's network and mount namespaces (where its kubelet,
# containerd and bind mounts live).
in_node() {
	local n=$1; shift
	local pid
	pid=$(cat "$RUN/pids/holder-$n.pid" 2>/dev/null) || die "node $n is not running (no holder pid)"
	nsenter --target "$pid" --mount --net -- "$@"
}

# in_cp CMD...: run CMD in the control plane's netns.
in_cp() { nsenter --net="/run/netns/$(ns_name cp)" -- "$@"; }

# kc: kubectl as admin, from the control plane's netns (the host reaches it only through the
# relay kubeconfig in $RUN/admin.kubeconfig).
kc() { in_cp "$TOOLS_BIN/kubectl" --kubeconfig "$RUN/kubeconfigs/admin-cp.kubeconfig" "$@"; }

# node_import NODE TAR: load an image tar into the node's containerd (the kubelet's namespace).
node_import() {
	in_node "$1" "$TOOLS_BIN/ctr" -a /run/containerd/containerd.sock -n k8s.io images import "$2" >/dev/null
}
