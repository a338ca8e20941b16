#!/usr/bin/env python3
"""Checks the generated CRDs and the example manifests, as the API server would.

1. Every CRD in deploy/crds validates as an apiextensions.k8s.io/v1 CustomResourceDefinition
   (kubernetes-validate, strict: unknown fields are errors).
2. Every example in docs/examples validates against its CRD's openAPIV3Schema (nullable and
   strict field validation applied as kubectl's default `--validate=strict` does).
3. Every example in docs/examples/invalid marked `expect-rejected-by: schema` fails that schema at
   the field it names; one marked `controller` passes it (the controller refuses it; the Rust
   tests check that).
"""
import copy
import glob
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
K8S_VERSION = "1.34.0"


def structural_to_jsonschema(node, top=False):
    """OpenAPI v3 structural schema -> JSON Schema (nullable, strict unknown fields)."""
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if top:
        out["properties"].update(
            {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
        )
    return out


def load_crds():
    schemas = {}
    failures = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "crds", "*.yaml"))):
        with open(path) as f:
            crd = yaml.safe_load(f)
        try:
            kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
            print(f"ok   {os.path.relpath(path, ROOT)}: a valid CustomResourceDefinition (k8s {K8S_VERSION}, strict)")
        except Exception as e:  # noqa: BLE001 - report every kind of failure
            failures.append(f"{path}: {e}")
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"], top=True)
            jsonschema.Draft202012Validator.check_schema(schema)
            schemas[(api_version, crd["spec"]["names"]["kind"])] = schema
    return schemas, failures


def expectations(path):
    found = {}
    with open(path) as f:
        for line in f:
            if line.startswith("# expect-"):
                key, _, value = line[2:].partition(":")
                found[key.strip()] = value.strip()
    return found


def errors_of(schemas, doc):
    schema = schemas.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return [f"no CRD for {doc.get('apiVersion')} {doc.get('kind')}"]
    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for e in validator.iter_errors(doc):
        where = ".".join(str(p) for p in e.absolute_path)
        if e.validator == "additionalProperties":
            # Name the unknown field itself, as the API server does.
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            where = ".".join([where] + extra[:1]) if where else ".".join(extra[:1])
        errors.append(f"{where}: {e.message}")
    return errors


SUPPORTED = {"IOChaos", "NetworkChaos", "PodChaos", "Schedule", "StressChaos"}


def check_chaos_mesh_examples(schemas, root):
    """Chaos Mesh's own examples of a supported kind, apiVersion changed, against our schemas."""
    failures = []
    checked = 0
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        rel = "chaos-mesh:" + os.path.relpath(path, root)
        with open(path) as f:
            try:
                docs = list(yaml.safe_load_all(f))
            except yaml.YAMLError:
                continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") not in SUPPORTED:
                continue
            if not str(doc.get("apiVersion", "")).startswith("chaos-mesh.org/"):
                continue
            doc = copy.deepcopy(doc)
            doc["apiVersion"] = "chaos.faultline.dev/v1alpha1"
            errs = errors_of(schemas, doc)
            checked += 1
            if errs:
                failures.append(f"{rel}: {'; '.join(errs)}")
            else:
                print(f"ok   {rel}: valid {doc['kind']}")
    print(f"chaos mesh examples checked: {checked}")
    return failures


def main():
    schemas, failures = load_crds()
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "examples", "*.yaml"))):
        rel = os.path.relpath(path, ROOT)
        with open(path) as f:
            doc = yaml.safe_load(f)
        errs = errors_of(schemas, doc)
        if errs:
            failures.append(f"{rel}: {'; '.join(errs)}")
        else:
            print(f"ok   {rel}: valid {doc['kind']}")
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "examples", "invalid", "*.yaml"))):
        rel = os.path.relpath(path, ROOT)
        expect = expectations(path)
        with open(path) as f:
            doc = yaml.safe_load(f)
        errs = errors_of(schemas, doc)
        by = expect.get("expect-rejected-by")
        field = expect.get("expect-message", "")
        if by == "schema":
            if not any(e.startswith(field) for e in errs):
                failures.append(f"{rel}: expected the schema to reject {field}, got {errs or 'no error'}")
            else:
                print(f"ok   {rel}: rejected by the schema: {'; '.join(errs)}")
        elif by == "controller":
            if errs:
                failures.append(f"{rel}: must pass the schema (the controller rejects it), got {errs}")
            else:
                print(f"ok   {rel}: passes the schema; the controller rejects it ({field})")
        else:
            failures.append(f"{rel}: no '# expect-rejected-by: schema|controller' line")
    extra = os.environ.get("FAULTLINE_CHAOS_MESH_EXAMPLES")
    if extra:
        failures += check_chaos_mesh_examples(schemas, extra)
    for f in failures:
        print(f"FAIL {f}")
    print(f"{'FAILED' if failures else 'all manifests checked'}: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
