#!/usr/bin/env bash
# Install the Debian packages Sluice's builds and tests need, when missing (apt-get update
# first, as a fresh machine needs), and mount the bpffs when none is mounted. Rust and Go are
# expected on the machine already.
#
#   e2e/tools/install-deps.sh          building Sluice (clang-19, libbpf-dev, ...) and the
#                                      harness: CNI plugins (ptp, host-local), socat, jq, curl,
#                                      openssl, iproute2, util-linux, ethtool (the north-south
#                                      fabric turns checksum offload off with it, as a wire has
#                                      none), bpftool, promtool, tcpdump (e2e/bench/restarts keeps a
#                                      capture of a round that broke a connection)
#   e2e/tools/install-deps.sh --nodes  also what kubelet nodes (e2e/nodes) need: the host binaries
#                                      e2e/nodes/images copies into the test images (busybox-static,
#                                      wget, netcat-openbsd, bind9-dnsutils, iperf, nginx's binary,
#                                      ...), gcc and a static libc for the pause image,
#                                      libseccomp-dev for runc (e2e/tools/build.sh), conntrack and
#                                      iptables for the kubelet
#   e2e/tools/install-deps.sh --all    everything the README's test command runs: --nodes and the
#                                      benchmark harness's peers (wrk, iperf3, nftables, bc)
set -euo pipefail
nodes= bench=
case ${1:-} in
--nodes) nodes=1 ;;
--all) nodes=1 bench=1 ;;
"") ;;
*) echo "usage: $0 [--nodes|--all]" >&2; exit 2 ;;
esac
packages=(clang-19 llvm-19 libbpf-dev bpftool gcc libc6-dev python3 python3-yaml
	containernetworking-plugins socat jq curl openssl iproute2 util-linux ethtool tcpdump)
# The images need these very packages (a static busybox, the OpenBSD netcat); the -dev ones
# have no command: so packages are checked, not commands.
[[ -n $nodes ]] && packages+=(busybox-static wget netcat-openbsd bind9-dnsutils iperf bash dash
	coreutils grep sed findutils hostname libc-bin mount netbase libseccomp-dev conntrack iptables)
[[ -n $bench ]] && packages+=(wrk iperf3 iptables nftables bc)
need=()
for pkg in "${packages[@]}"; do
	[[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || need+=("$pkg")
done
export DEBIAN_FRONTEND=noninteractive
if ((${#need[@]} > 0)); then
	mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
	echo "[install-deps] installing: ${need[*]}"
	[[ $(id -u) == 0 ]] || { echo "[install-deps] ERROR: need root for apt-get" >&2; exit 1; }
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# deb_binary PACKAGE PATH DEST: install one file of a Debian package without installing the
# package (whose maintainer scripts would start a server).
deb_binary() {
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	(cd "$work" && { apt-get download "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$1" >/dev/null; }; })
	dpkg-deb -x "$work/$1"_*.deb "$work/x"
	install -m 0755 "$work/x/$2" "$3"
	rm -rf "$work"
}
# promtool (the suite lints the agent's metrics with it) comes in Debian's prometheus package,
# whose installation would also start a Prometheus server: only the binary is taken out of it.
if ! command -v promtool >/dev/null; then
	[[ $(id -u) == 0 ]] || { echo "[install-deps] ERROR: need root to install promtool" >&2; exit 1; }
	echo "[install-deps] installing promtool from Debian's prometheus package"
	deb_binary prometheus usr/bin/promtool /usr/local/bin/promtool
	promtool --version >/dev/null
fi
# The nginx test image's binary, likewise only the binary out of Debian's nginx package (which
# would start a server on the host's port 80); e2e/nodes/images copies it with its libraries.
if [[ -n $nodes && ! -x /usr/sbin/nginx && ! -x /usr/local/sbin/nginx ]]; then
	[[ $(id -u) == 0 ]] || { echo "[install-deps] ERROR: need root to install nginx's binary" >&2; exit 1; }
	echo "[install-deps] installing /usr/local/sbin/nginx from Debian's nginx package"
	deb_binary nginx usr/sbin/nginx /usr/local/sbin/nginx
	/usr/local/sbin/nginx -v 2>/dev/null
fi
if ! awk '$3 == "bpf" { found = 1 } END { exit !found }' /proc/mounts; then
	[[ $(id -u) == 0 ]] || { echo "[install-deps] ERROR: need root to mount the bpffs" >&2; exit 1; }
	mount -t bpf bpf /sys/fs/bpf
	echo "[install-deps] mounted a bpffs at /sys/fs/bpf"
fi
echo "[install-deps] all present"
