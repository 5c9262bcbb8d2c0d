# shellcheck shell=bash
# What every e2e suite counts and prints the same way: ok/bad for a check, figure for a
# measurement, expect for a jq verdict on a JSON result, and finish for the closing
# 'N passed, N failed' line that CI reads. Sourced, never run.
PASS=0 FAIL=0
FIGURES=()
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }
figure() { FIGURES+=("$*"); printf '     %s\n' "$*"; }
# holds [JQ-ARGS] FILTER: true when the filter's last output on stdin is neither false nor null.
# Not `jq -e`: Debian's jq 1.6 exits 0 on empty input, so a client that crashed before printing
# its JSON, or a kubectl get that failed, passed every check. Exported for `bash -c` checks.
holds() {
	local out
	out=$(jq -c "$@" 2>/dev/null) || return 1
	out=${out##*$'\n'}
	[[ -n $out && $out != false && $out != null ]]
}
export -f holds
expect() { # DESC JQ-FILTER JSON
	if holds "$2" <<<"$3"; then ok "$1"; else bad "$1: $3"; fi
}
finish() {
	if ((${#FIGURES[@]} > 0)); then
		echo "figures:"
		for f in "${FIGURES[@]}"; do echo "  $f"; done
	fi
	echo "$PASS passed, $FAIL failed"
}
