#!/usr/bin/env python3
"""A run of e2e/nodes/conformance as markdown (docs/conformance.md): when, which commit, the
command, how long, and every spec the focus selects: passed, failed, skipped by the spec itself
(with its reason) or excluded by e2e/nodes/conformance-skip.txt (with the reason given there)."""
import argparse
import datetime
import re
import xml.etree.ElementTree as ET

FAILED = {"failed", "panicked", "timedout", "interrupted", "aborted"}


def skip_rules(path):
    rules = []
    for line in open(path):
        pattern, _, reason = line.partition("#")
        if pattern.strip():
            rules.append((re.compile(pattern.strip()), reason.strip()))
    return rules


def main():
    ap = argparse.ArgumentParser()
    for flag in ("junit", "skip-file", "focus", "seconds", "nodes", "procs", "commit", "command"):
        ap.add_argument("--" + flag, required=True)
    a = ap.parse_args()
    focus = re.compile(a.focus)
    rules = skip_rules(a.skip_file)
    rows = []
    for case in ET.parse(a.junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if not name.startswith("[It] "):
            continue
        name = name[5:]
        status = case.get("status", "")
        skipped = case.find("skipped")
        message = (skipped.get("message") or "") if skipped is not None else ""
        if status == "skipped" and message.strip() == "skipped":
            # Not run: outside the focus, or excluded by the skip file.
            if not focus.search(name):
                continue
            reason = next((r for rx, r in rules if rx.search(name)), None)
            if reason is None:
                continue
            rows.append(("excluded", name, reason))
        elif status in FAILED:
            rows.append(("failed", name, ""))
        elif status == "skipped":
            rows.append(("skipped by the spec", name, message.removeprefix("skipped - ")))
        else:
            rows.append((status, name, ""))
    rows.sort(key=lambda r: r[1])
    counts = {}
    for r in rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    secs = int(a.seconds)
    print("# Upstream network e2e suite: the last full run\n")
    print("The Kubernetes project's own network tests (`e2e.test` of the pinned version, run by `ginkgo`)")
    print("against kubelet nodes with Sluice installed by `helm install` and no kube-proxy")
    print("(`e2e/nodes`). Regenerate this file with the command below.\n")
    print("| | |\n|---|---|")
    print(f"| date | {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} |")
    print(f"| commit | `{a.commit}` |")
    print(f"| command | `{a.command}` |")
    print(f"| cluster | {a.nodes} kubelet nodes, {a.procs} parallel ginkgo processes, 2 cores |")
    print(f"| time | {secs // 60} min {secs % 60} s |")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"| result | {summary} |\n")
    print("Excluded specs and why: `e2e/nodes/conformance-skip.txt`. Skipped by the spec: the spec")
    print("itself decided it cannot run here, with the reason it gave.\n")
    print("| result | spec | reason |\n|---|---|---|")
    for status, name, reason in rows:
        name = name.replace("|", "\\|")
        print(f"| {status} | {name} | {reason.replace('|', '/')} |")


if __name__ == "__main__":
    main()
