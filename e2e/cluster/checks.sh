# shellcheck shell=bash
# What every e2e suite counts and prints the same way: ok/bad for a check, figure for a
# measurement, expect for a jq verdict on a JSON result, and finish for the closing
# 'N passed, N failed' line that CI reads. Sourced, never run.
PASS=0 FAIL=0
FIGURES=()
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }
figure() { FIGURES+=("$*"); printf '     %s\n' "$*"; }
expect() { # DESC JQ-FILTER JSON
	if jq -e "$2" <<<"$3" >/dev/null 2>&1; then ok "$1"; else bad "$1: $3"; fi
}
finish() {
	if ((${#FIGURES[@]} > 0)); then
		echo "figures:"
		for f in "${FIGURES[@]}"; do echo "  $f"; done
	fi
	echo "$PASS passed, $FAIL failed"
}
