#!/usr/bin/env python3
"""Renders every kustomization under deploy/ with `kubectl kustomize` and checks every object.

1. Kubernetes kinds validate with kubernetes-validate, strict (unknown fields are errors),
   against each Kubernetes version in K8S_VERSIONS.
2. Our chaos kinds validate against the CRDs in deploy/crds (the controller's schema check,
   controller/tests/schema/validate_manifests.py, is reused for the conversion).
3. cert-manager kinds validate against CERT_MANAGER below: the subset of cert-manager.io/v1
   Issuer and Certificate that faultline uses, strict, written from cert-manager's API reference
   (its CRDs are not on PyPI).
4. Across objects: namespaced objects are in the faultline namespace, nothing is defined twice,
   every ServiceAccount, Secret, Role, Issuer and container port that something names exists,
   every Service selects a workload, and the controller's RBAC names exactly the CRDs' plurals.

Usage: validate_overlays.py KUBECTL
"""
import glob
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

sys.dont_write_bytecode = True  # nothing written beside the controller's script
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "controller", "tests", "schema"))
import validate_manifests  # noqa: E402  (the controller's CRD -> JSON Schema conversion)

# The oldest Kubernetes the manifests are for (appArmorProfile: 1.30), the one the controller's
# checks pin, and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", validate_manifests.K8S_VERSION, kubernetes_validate.utils.latest_version()]
NAMESPACE = "faultline"
# deploy/overlays/chaos-mesh puts the agent beside an existing Chaos Mesh install, in its namespace.
OVERLAY_NAMESPACES = {"chaos-mesh": "chaos-mesh"}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
# Made outside the manifests by `faultline-controller certs` (or by the cert-manager overlay).
EXTERNAL_SECRETS = {"faultline-agent-tls", "faultline-controller-tls", "faultline-webhook-tls",
                    # made by Chaos Mesh's Helm chart, for deploy/overlays/chaos-mesh
                    "chaos-mesh-daemon-certs"}


def strict(properties, required=()):
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
ISSUER_REF = strict({"name": STRING, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": STRING}, ["name"])
METADATA = {"type": "object", "required": ["name"]}
USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
]
CERT_MANAGER = {
    "Issuer": strict({
        "apiVersion": STRING, "kind": STRING, "metadata": METADATA,
        "spec": {
            **strict({
                "selfSigned": strict({"crlDistributionPoints": STRINGS}),
                "ca": strict({"secretName": STRING, "crlDistributionPoints": STRINGS,
                              "ocspServers": STRINGS, "issuingCertificateURLs": STRINGS}, ["secretName"]),
            }),
            "minProperties": 1, "maxProperties": 1,
        },
    }, ["apiVersion", "kind", "metadata", "spec"]),
    "Certificate": strict({
        "apiVersion": STRING, "kind": STRING, "metadata": METADATA,
        "spec": strict({
            "secretName": STRING,
            "issuerRef": ISSUER_REF,
            "commonName": {"type": "string", "maxLength": 64},
            "dnsNames": STRINGS, "ipAddresses": STRINGS, "uris": STRINGS,
            "duration": {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(h|m|s))+$"},
            "renewBefore": {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(h|m|s))+$"},
            "isCA": {"type": "boolean"},
            "usages": {"type": "array", "items": {"enum": USAGES}},
            "privateKey": strict({
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer"},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]},
            }),
        }, ["secretName", "issuerRef"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
}


def kustomizations():
    """Every directory under deploy/ that kustomize can build, overlays first."""
    dirs = set()
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        for path in glob.glob(os.path.join(ROOT, "deploy", "**", name), recursive=True):
            dirs.add(os.path.dirname(path))
    return sorted(dirs, key=lambda d: ("/overlays/" not in d, d))


def render(kubectl, directory):
    out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def schema_errors(obj, crd_schemas):
    kind, api_version = obj.get("kind"), obj.get("apiVersion", "")
    if api_version.startswith("cert-manager.io/"):
        if api_version != "cert-manager.io/v1" or kind not in CERT_MANAGER:
            return [f"{api_version} {kind}: not a cert-manager kind faultline knows"]
        validator = jsonschema.Draft202012Validator(CERT_MANAGER[kind])
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    if (api_version, kind) in crd_schemas:
        return validate_manifests.errors_of(crd_schemas, obj)
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"k8s {version}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"k8s {version}: {e.message}")
    return errors


def pod_specs(objects):
    for o in objects:
        if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
            yield o, o["spec"]["template"]


def cross_errors(objects, crd_plurals, namespace=NAMESPACE):
    errors = []
    seen = set()
    by_kind = {}
    for o in objects:
        meta = o["metadata"]
        key = (o["apiVersion"].split("/")[0], o["kind"], meta.get("namespace"), meta["name"])
        if key in seen:
            errors.append(f"{o['kind']}/{meta['name']} is defined twice")
        seen.add(key)
        by_kind.setdefault(o["kind"], {})[meta["name"]] = o
        if o["kind"] in CLUSTER_SCOPED:
            if "namespace" in meta:
                errors.append(f"{o['kind']}/{meta['name']}: cluster-scoped, but has a namespace")
        elif meta.get("namespace") != namespace:
            errors.append(f"{o['kind']}/{meta['name']}: namespace {meta.get('namespace')!r}, not {namespace!r}")
    names = lambda kind: set(by_kind.get(kind, {}))  # noqa: E731
    secrets = names("Secret") | EXTERNAL_SECRETS | {
        c["spec"]["secretName"] for c in by_kind.get("Certificate", {}).values()
    }
    for workload, template in pod_specs(objects):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = template["spec"]
        sa = spec.get("serviceAccountName", "default")
        if sa not in names("ServiceAccount"):
            errors.append(f"{where}: ServiceAccount {sa} is not in the manifests")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                errors.append(f"{where}: Secret {v['secret']['secretName']} is made by nothing")
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    errors.append(f"{where}: mount of an unknown volume {m['name']}")
            port_names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    errors.append(f"{where}: {probe} names port {port}, which {c['name']} does not have")
        labels = template["metadata"].get("labels", {})
        selector = workload["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            errors.append(f"{where}: its selector does not select its own pods")
    for svc in by_kind.get("Service", {}).values():
        selector = svc["spec"].get("selector", {})
        targets = [t for _, t in pod_specs(objects)
                   if all(t["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
        if not targets:
            errors.append(f"Service/{svc['metadata']['name']} selects no workload")
        ports = {p.get("name") for t in targets for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                errors.append(f"Service/{svc['metadata']['name']}: targetPort {p['targetPort']} is no container port")
    for binding_kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        for b in by_kind.get(binding_kind, {}).values():
            if b["roleRef"]["kind"] != role_kind or b["roleRef"]["name"] not in names(role_kind):
                errors.append(f"{binding_kind}/{b['metadata']['name']}: {b['roleRef']['kind']} {b['roleRef']['name']} is not in the manifests")
            for s in b.get("subjects", []):
                if s["kind"] == "ServiceAccount" and s["name"] not in names("ServiceAccount"):
                    errors.append(f"{binding_kind}/{b['metadata']['name']}: ServiceAccount {s['name']} is not in the manifests")
    for role in list(by_kind.get("ClusterRole", {}).values()) + list(by_kind.get("Role", {}).values()):
        for rule in role["rules"]:
            if "chaos.faultline.dev" not in rule.get("apiGroups", []):
                continue
            bases = {r.split("/")[0] for r in rule["resources"]}
            if bases != crd_plurals:
                errors.append(f"{role['kind']}/{role['metadata']['name']}: chaos.faultline.dev rule names {sorted(bases)}, the CRDs are {sorted(crd_plurals)}")
    configs = [(kind, config) for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
               for config in by_kind.get(kind, {}).values()]
    for kind, config in configs:
        for hook in config["webhooks"]:
            ref = hook["clientConfig"].get("service")
            svc = by_kind.get("Service", {}).get(ref["name"]) if ref else None
            if not svc or svc["metadata"].get("namespace") != ref.get("namespace"):
                errors.append(f"{kind}/{config['metadata']['name']}: Service {ref} is not in the manifests")
            elif ref.get("port", 443) not in {p["port"] for p in svc["spec"]["ports"]}:
                errors.append(f"{kind}/{config['metadata']['name']}: Service {ref['name']} has no port {ref.get('port', 443)}")
    for cert in by_kind.get("Certificate", {}).values():
        if cert["spec"]["issuerRef"]["name"] not in names("Issuer"):
            errors.append(f"Certificate/{cert['metadata']['name']}: Issuer {cert['spec']['issuerRef']['name']} is not in the manifests")
    for issuer in by_kind.get("Issuer", {}).values():
        ca = issuer["spec"].get("ca")
        if ca and ca["secretName"] not in secrets:
            errors.append(f"Issuer/{issuer['metadata']['name']}: CA Secret {ca['secretName']} is made by nothing")
    return errors


def main():
    kubectl = sys.argv[1] if len(sys.argv) > 1 else "kubectl"
    crd_schemas, failures = validate_manifests.load_crds()
    crd_plurals = set()
    for path in glob.glob(os.path.join(ROOT, "deploy", "crds", "*.yaml")):
        with open(path) as f:
            crd_plurals.add(yaml.safe_load(f)["spec"]["names"]["plural"])
    overlays = 0
    for directory in kustomizations():
        rel = os.path.relpath(directory, ROOT)
        try:
            objects = render(kubectl, directory)
        except RuntimeError as e:
            failures.append(f"{rel}: kubectl kustomize failed: {e}")
            continue
        bad = 0
        for obj in objects:
            for e in schema_errors(obj, crd_schemas):
                failures.append(f"{rel}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {e}")
                bad += 1
        if "/overlays/" in directory:
            overlays += 1
            namespace = OVERLAY_NAMESPACES.get(os.path.basename(directory), NAMESPACE)
            for e in cross_errors(objects, crd_plurals, namespace):
                failures.append(f"{rel}: {e}")
                bad += 1
        kinds = sorted({o["kind"] for o in objects})
        print(f"{'ok  ' if not bad else 'FAIL'} {rel}: {len(objects)} objects ({', '.join(kinds)})")
    if overlays < 5:
        failures.append(f"only {overlays} overlays found under deploy/overlays")
    for f in failures:
        print(f"FAIL {f}")
    print(f"{'FAILED' if failures else 'all overlays checked'}: {len(failures)} failure(s), k8s {', '.join(K8S_VERSIONS)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
