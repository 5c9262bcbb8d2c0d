#!/usr/bin/env python3
"""Builds kubeconform's schema directory offline.

    kubeconform-schemas.py OUT_DIR [--k8s-openapi DIR] [--crd FILE]...

--k8s-openapi DIR: Kubernetes' OpenAPI v3 documents (api/openapi-spec/v3 of the
k8s.io/kubernetes module); one standalone schema per kind is written.
--crd FILE: a CustomResourceDefinition YAML (ours); one schema per served version.

Files are named as kubeconform looks them up with
`-schema-location 'OUT_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'`:
`<kind lower-case>-<first label of the group, or the version for the core group>-<version>.json`,
e.g. daemonset-apps-v1.json, service-v1.json, proxyconfig-sluice-v1alpha1.json.

The schemas are strict, like kubeconform's own `-strict` set: an object schema with properties
refuses properties it does not list (unless x-kubernetes-preserve-unknown-fields), so a
misspelled or misplaced field in a template fails the check.
"""

import argparse
import copy
import json
import os
import sys

REF_PREFIX = "#/components/schemas/"


def kind_file(group, version, kind):
    suffix = group.split(".")[0] + "-" + version if group else version
    return f"{kind.lower()}-{suffix}.json"


def strictify(node):
    """Recursively: additionalProperties false on closed object schemas; nullable -> null type."""
    if isinstance(node, list):
        for n in node:
            strictify(n)
        return
    if not isinstance(node, dict):
        return
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key, value in node.items():
        if key in ("enum", "default", "example", "x-kubernetes-validations"):
            continue
        strictify(value)


def rewrite_refs(node, refs):
    if isinstance(node, list):
        for n in node:
            rewrite_refs(n, refs)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            name = ref[len(REF_PREFIX):]
            refs.add(name)
            node["$ref"] = "#/definitions/" + name
        for key, value in node.items():
            if key != "$ref":
                rewrite_refs(value, refs)


def from_openapi(spec_dir, out_dir):
    schemas = {}
    for name in sorted(os.listdir(spec_dir)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(spec_dir, name)) as f:
            doc = json.load(f)
        schemas.update(doc.get("components", {}).get("schemas", {}))
    written = 0
    for name, schema in sorted(schemas.items()):
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        # Only top-level kinds (with apiVersion and kind), not e.g. DeleteOptions/WatchEvent.
        props = schema.get("properties", {})
        if not gvks or "apiVersion" not in props or "kind" not in props or name.endswith("List"):
            continue
        # Collect the definitions reachable from this kind.
        definitions = {}
        pending = [name]
        while pending:
            n = pending.pop()
            if n in definitions:
                continue
            d = copy.deepcopy(schemas[n])
            refs = set()
            rewrite_refs(d, refs)
            strictify(d)
            definitions[n] = d
            pending.extend(refs - definitions.keys())
        for gvk in gvks:
            out = {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "definitions": definitions,
                "allOf": [{"$ref": "#/definitions/" + name}],
            }
            path = os.path.join(out_dir, kind_file(gvk.get("group", ""), gvk["version"], gvk["kind"]))
            with open(path, "w") as f:
                json.dump(out, f, separators=(",", ":"), sort_keys=True)
            written += 1
    return written


def load_yaml_documents(path):
    try:
        import yaml  # noqa: PLC0415
    except ImportError:
        yaml = None
    with open(path) as f:
        text = f.read()
    if yaml is not None:
        return [d for d in yaml.safe_load_all(text) if d]
    sys.exit(f"kubeconform-schemas.py: python3-yaml is needed to read {path} (apt-get install python3-yaml)")


def from_crd(path, out_dir):
    written = 0
    for crd in load_yaml_documents(path):
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {})
            schema["properties"]["apiVersion"] = {"type": "string", "enum": [f"{spec['group']}/{version['name']}"]}
            schema["properties"]["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
            # The apiserver validates metadata itself; here only its shape.
            schema["properties"]["metadata"] = {"type": "object"}
            strictify(schema)
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            out = os.path.join(out_dir, kind_file(spec["group"], version["name"], spec["names"]["kind"]))
            with open(out, "w") as f:
                json.dump(schema, f, indent=1, sort_keys=True)
            written += 1
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--k8s-openapi", metavar="DIR")
    ap.add_argument("--crd", action="append", default=[], metavar="FILE")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    n = 0
    if args.k8s_openapi:
        n += from_openapi(args.k8s_openapi, args.out_dir)
    for crd in args.crd:
        n += from_crd(crd, args.out_dir)
    print(f"kubeconform-schemas.py: {n} schemas in {args.out_dir}")


if __name__ == "__main__":
    main()
