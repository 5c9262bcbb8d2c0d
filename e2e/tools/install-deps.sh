#!/usr/bin/env bash
# Install the Debian packages the e2e harness needs (if missing):
# CNI plugins (ptp, host-local), socat, jq, curl, openssl, iproute2, util-linux, ethtool (the
# north-south fabric turns checksum offload off with it, as a wire has none), promtool.
# Go (for e2e/tools/build.sh) is expected on the machine already.
set -euo pipefail
need=()
[[ -x /usr/lib/cni/ptp && -x /usr/lib/cni/host-local ]] || need+=(containernetworking-plugins)
for pair in socat:socat jq:jq curl:curl openssl:openssl ip:iproute2 ss:iproute2 nsenter:util-linux setsid:util-linux flock:util-linux ethtool:ethtool; do
	command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
export DEBIAN_FRONTEND=noninteractive
if ((${#need[@]} > 0)); then
	mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
	echo "[install-deps] installing: ${need[*]}"
	[[ $(id -u) == 0 ]] || { echo "[install-deps] ERROR: need root for apt-get" >&2; exit 1; }
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# promtool (the suite lints the agent's metrics with it) comes in Debian's prometheus package,
# whose installation would also start a Prometheus server: only the binary is taken out of it.
if ! command -v promtool >/dev/null; then
	[[ $(id -u) == 0 ]] || { echo "[install-deps] ERROR: need root to install promtool" >&2; exit 1; }
	echo "[install-deps] installing promtool from Debian's prometheus package"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	(cd "$work" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
	dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
	install -m 0755 "$work/x/usr/bin/promtool" /usr/local/bin/promtool
	promtool --version >/dev/null
fi
echo "[install-deps] all present"
