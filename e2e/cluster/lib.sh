# shellcheck shell=bash
# Shared helpers for e2e/cluster/{up,down,pod,exec,env}. Sourced, not run.

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_DIR=$(cd "$CLUSTER_DIR/.." && pwd)
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"

RUN=${SLUICE_E2E_RUN:-/tmp/sluice-e2e}
SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
TOOLS_BIN=${SLUICE_TOOLS_BIN:-$SLUICE_CACHE/bin}
STATE=$RUN/state.env
CNI_BIN=${SLUICE_CNI_BIN:-/usr/lib/cni}

_tag=${_tag:-cluster}
log() { printf '[%s] %s\n' "$_tag" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$_tag" "$*" >&2; exit 1; }

# The cgroup2 mount point, from /proc/mounts (hybrid hosts mount it somewhere
# under /sys/fs/cgroup, e.g. /sys/fs/cgroup/unified; never assume a path).
cgroup2_mount() {
	awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts
}

bpffs_mount() {
	awk '$3 == "bpf" { print $2; exit }' /proc/mounts
}

load_state() {
	[[ -f $STATE ]] || die "no cluster state at $STATE (is the cluster up? run e2e/cluster/up; SLUICE_E2E_RUN=$RUN)"
	# shellcheck disable=SC1090
	. "$STATE"
}

# state_set KEY VALUE: append/replace a line in the state file.
state_set() {
	local k=$1 v=$2
	touch "$STATE"
	grep -v "^$k=" "$STATE" >"$STATE.tmp" || true
	printf '%s=%q\n' "$k" "$v" >>"$STATE.tmp"
	mv -f "$STATE.tmp" "$STATE"
	printf -v "$k" '%s' "$v"
}

kc() { "$TOOLS_BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "$@"; }

# wait_for DESC SECONDS CMD... : poll CMD (quietly) every 0.2s, bounded.
wait_for() {
	local desc=$1 secs=$2; shift 2
	local deadline=$((SECONDS + secs))
	while ((SECONDS < deadline)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

# start_bg NAME CGROUP_DIR LOGFILE CMD... : start CMD detached (own session,
# stdio to LOGFILE), moved into CGROUP_DIR before exec; pid in $RUN/pids/NAME.pid.
start_bg() {
	local name=$1 cg=$2 logf=$3; shift 3
	mkdir -p "$RUN/pids" "$(dirname "$logf")" "$cg"
	local pidf=$RUN/pids/$name.pid
	rm -f "$pidf"
	# shellcheck disable=SC2016
	setsid bash -c 'echo $$ >"$1" && echo $$ >"$2/cgroup.procs" && shift 2 && exec "$@"' \
		_ "$pidf" "$cg" "$@" </dev/null >>"$logf" 2>&1 &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $pidf ]] && return 0
		sleep 0.05
	done
	die "$name did not start (log: $logf)"
}

# start_agent NODE: the node's sluice agent, as the DaemonSet would run it (state must be loaded).
start_agent() {
	local n=$1
	# shellcheck disable=SC2086
	start_bg "agent-$n" "$CG_RUN/system/agent-$n" "$RUN/logs/agent-$n.log" \
		nsenter --net="/run/netns/$(node_netns "$n")" -- \
		"$SLUICE_BIN" agent --kubeconfig "$AGENT_KC" --node-name "$n" \
		--cgroup-root "$CG_RUN/$n" --bpf-root "$BPF_RUN/$n" ${SLUICE_AGENT_ARGS:-}
}

# proc_alive PID: running and not a zombie (daemons are reparented to init or
# a subreaper, which may reap late).
proc_alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z && $st != X ]]
}

pid_alive() { # NAME
	local pidf=$RUN/pids/$1.pid
	[[ -s $pidf ]] || return 1
	proc_alive "$(cat "$pidf")"
}

# stop_pid NAME [GRACE_SECONDS]: TERM, wait, KILL.
stop_pid() {
	local pidf=$RUN/pids/$1.pid grace=${2:-10} pid i
	[[ -s $pidf ]] || return 0
	pid=$(cat "$pidf")
	if proc_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 20; i++)); do
			proc_alive "$pid" || break
			sleep 0.05
		done
		proc_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidf"
}

# kill_cgroup DIR: kill every process in the cgroup subtree, bounded wait.
kill_cgroup() {
	local cg=$1 i
	[[ -d $cg ]] || return 0
	if [[ -e $cg/cgroup.kill ]]; then
		echo 1 >"$cg/cgroup.kill" 2>/dev/null || true
	else
		local p
		while read -r p; do kill -KILL "$p" 2>/dev/null || true; done < <(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
	fi
	# Wait until the subtree is unpopulated (exited tasks, not just killed).
	for ((i = 0; i < 100; i++)); do
		if [[ -e $cg/cgroup.events ]]; then
			grep -q '^populated 0' "$cg/cgroup.events" && return 0
		else
			[[ -z $(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null) ]] && return 0
		fi
		sleep 0.05
	done
	log "warning: processes still in $cg after kill"
}

# remove_cgroup DIR: rmdir the subtree bottom-up (after kill_cgroup).
remove_cgroup() {
	local cg=$1
	[[ -d $cg ]] || return 0
	local i
	for ((i = 0; i < 20; i++)); do
		find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		[[ -d $cg ]] || return 0
		sleep 0.1
	done
	log "warning: could not remove cgroup $cg"
}

# nsx NETNS CMD...: run in a netns without remounting /sys (unlike ip netns exec).
nsx() {
	local ns=$1; shift
	nsenter --net="/run/netns/$ns" -- "$@"
}

# Names, all derived from the run id.
node_netns() { echo "sl-$RUNID-$1"; }
fabric_netns() { echo "sl-$RUNID-fab"; }
pod_key() { echo "$1_$2"; } # namespace name
pod_netns() { echo "sl-$RUNID-p-$1"; } # $1 = pod uid-ish short id
node_cgroup() { echo "$CG_RUN/$1"; }
node_index() { # n3 -> 3
	local n=$1
	[[ $n =~ ^n([0-9]+)$ ]] || return 1
	local i=${BASH_REMATCH[1]}
	((i >= 1 && i <= NODE_COUNT)) || return 1
	echo "$i"
}
node_ip4() { echo "172.30.0.$((10 + $1))"; }
node_ip6() { echo "fd00:30::$(printf '%x' $((16 + $1)))"; }
pod_cidr4() { echo "10.244.$1.0/24"; }
pod_cidr6() { echo "fd00:244:$(printf '%x' "$1")::/64"; }

# ------------------------------------------------------------ PKI (e2e/cluster and e2e/nodes)
APISERVER_DNS_SANS="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"

# pki_ca DIR: a fresh CA (ca.key, ca.crt) in DIR.
pki_ca() {
	local d=$1
	openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key"
	printf '[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN=sluice-e2e-ca\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\n' >"$d/ca.cnf"
	openssl req -x509 -new -key "$d/ca.key" -config "$d/ca.cnf" -days 30 -out "$d/ca.crt"
	chmod 600 "$d/ca.key"
}

# pki_leaf DIR NAME SUBJECT EKU [SANS]: NAME.key and NAME.crt signed by DIR's CA.
pki_leaf() {
	local d=$1 n=$2 subj=$3 eku=$4 sans=${5:-}
	openssl ecparam -name prime256v1 -genkey -noout -out "$d/$n.key"
	openssl req -new -key "$d/$n.key" -subj "$subj" -out "$d/$n.csr"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		[[ -n $sans ]] && echo "subjectAltName=$sans"
	} >"$d/$n.ext"
	openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
		-days 30 -extfile "$d/$n.ext" -out "$d/$n.crt" 2>/dev/null
	rm -f "$d/$n.csr" "$d/$n.ext"
	chmod 600 "$d/$n.key"
}

# pki_service_account_key DIR: the service-account signing key pair (sa.key, sa.pub).
pki_service_account_key() {
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1/sa.key" 2>/dev/null
	openssl pkey -in "$1/sa.key" -pubout -out "$1/sa.pub"
	chmod 600 "$1/sa.key"
}

# write_kubeconfig FILE SERVER PKI_DIR USER CERTNAME: a client-certificate kubeconfig.
write_kubeconfig() {
	local f=$1 server=$2 d=$3 user=$4 cert=$5
	cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$d/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$d/$cert.crt")
    client-key-data: $(base64 -w0 <"$d/$cert.key")
contexts:
- name: sluice-e2e
  context:
    cluster: sluice-e2e
    user: $user
current-context: sluice-e2e
EOF
	chmod 600 "$f"
}
