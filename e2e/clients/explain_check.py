#!/usr/bin/env python3
"""Does what `sluice explain` predicted match what a connect loop (connect.py) saw?

    explain_check.py OUTCOME_JSON EXPLAIN_BEFORE_JSON EXPLAIN_AFTER_JSON PODS_JSON

The prediction is asked right before and right after the loop; whatever either one allows is
allowed, so a loop that runs across a change (a scale-up, an agent restart) is judged fairly.
PODS_JSON is `kubectl get pods -o json`, taken before the loop, to name backends by address
(the servers greet with their pod name). Prints nothing and exits 0 when the prediction holds;
prints why and exits 1 when it does not.
"""
import ipaddress
import json
import sys


def load(path):
    with open(path) as f:
        text = f.read().strip()
    return json.loads(text) if text else {}


def main():
    outcome, before, after, pods = (load(p) for p in sys.argv[1:5])
    names_by_ip = {}
    for pod in pods.get("items", []):
        for ip in pod.get("status", {}).get("podIPs", []) or []:
            names_by_ip[ipaddress.ip_address(ip["ip"])] = pod["metadata"]["name"]
    verdicts = {e.get("verdict") for e in (before, after) if e}
    if not verdicts:
        sys.exit("explain gave no answer")
    allowed = set()
    for e in (before, after):
        for c in e.get("candidates", []):
            name = names_by_ip.get(ipaddress.ip_address(c["address"]))
            if name:
                allowed.add(name)
    seen = set(outcome.get("seen", {}))
    refused = outcome.get("refused", 0)
    problems = []
    if seen and "translate" not in verdicts:
        problems.append(f"reached {sorted(seen)} but explain said {sorted(verdicts)}")
    unexpected = seen - allowed
    if "translate" in verdicts and unexpected:
        problems.append(f"reached {sorted(unexpected)}, not among the candidates {sorted(allowed)}")
    if refused and not verdicts & {"reject", "pass"}:
        problems.append(f"{refused} refused but explain said {sorted(verdicts)}")
    if verdicts == {"reject"} and (seen or outcome.get("errors", 0)):
        problems.append(f"explain said reject, yet the loop saw {outcome}")
    if problems:
        print("; ".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
