#!/usr/bin/env bash
# Install the Debian packages the e2e harness needs (if missing):
# CNI plugins (ptp, host-local), socat, jq, curl, openssl, iproute2, util-linux, ethtool (the
# north-south fabric turns checksum offload off with it, as a wire has none), promtool.
# Go (for e2e/tools/build.sh) is expected on the machine already.
#
#   e2e/tools/install-deps.sh          the harness's tools
#   e2e/tools/install-deps.sh --nodes  also what kubelet nodes (e2e/nodes) need: the host binaries
#                                      e2e/nodes/images copies into the test images (busybox-static,
#                                      netcat-openbsd, bind9-dnsutils, iperf, nginx's binary, ...),
#                                      gcc and a static libc for the pause image, libseccomp-dev
#                                      for runc (e2e/tools/build.sh), conntrack and iptables for
#                                      kubelet
set -euo pipefail
nodes=
case ${1:-} in
--nodes) nodes=1 ;;
"") ;;
*) echo "usage: $0 [--nodes]" >&2; exit 2 ;;
esac
need=()
[[ -x /usr/lib/cni/ptp && -x /usr/lib/cni/host-local ]] || need+=(containernetworking-plugins)
for pair in socat:socat jq:jq curl:curl openssl:openssl ip:iproute2 ss:iproute2 nsenter:util-linux setsid:util-linux flock:util-linux ethtool:ethtool; do
	command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [[ -n $nodes ]]; then
	# By package, not by command: the images need these very packages (a static busybox, the
	# OpenBSD netcat), and the -dev ones have no command.
	for pkg in busybox-static wget netcat-openbsd bind9-dnsutils socat curl iproute2 iperf bash dash \
		coreutils grep sed findutils hostname libc-bin mount util-linux netbase gcc libc6-dev libseccomp-dev conntrack iptables; do
		[[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || need+=("$pkg")
	done
fi
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
echo "[install-deps] all present"
