#!/usr/bin/env bash
# Install the Debian packages the e2e harness needs (if missing):
# CNI plugins (ptp, host-local), socat, jq, curl, openssl, iproute2, util-linux, ethtool (the
# north-south fabric turns checksum offload off with it, as a wire has none).
# Go (for e2e/tools/build.sh) is expected on the machine already.
set -euo pipefail
need=()
[[ -x /usr/lib/cni/ptp && -x /usr/lib/cni/host-local ]] || need+=(containernetworking-plugins)
for pair in socat:socat jq:jq curl:curl openssl:openssl ip:iproute2 ss:iproute2 nsenter:util-linux setsid:util-linux flock:util-linux ethtool:ethtool; do
	command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]} == 0)); then
	echo "[install-deps] all present"
	exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "[install-deps] installing: ${need[*]}"
[[ $(id -u) == 0 ]] || { echo "[install-deps] ERROR: need root for apt-get" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
