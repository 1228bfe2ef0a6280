#!/usr/bin/env python3
"""Renders every kustomize overlay under deploy/kubernetes with
`kubectl kustomize` and checks what must hold in each: probes, non-root,
read-only root file system, resources, secrets only by reference, and the
pieces a production deployment needs. Prints one line per overlay; exits 1
naming every violation. Run by tests/integration/deploy.rs."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
SECRETISH = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEY|DATABASE__URL)", re.I)


def render(path):
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def pod_checks(name, spec, problems, need_probes):
    sc = spec.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True or not sc.get("runAsUser"):
        problems.append(f"{name}: pod not pinned to a non-root user")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: service account token mounted")
    for c in spec.get("containers", []):
        cname = f"{name}/{c['name']}"
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: root file system writable")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: privilege escalation allowed")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            problems.append(f"{cname}: capabilities not dropped")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    problems.append(f"{cname}: no {kind}.{r}")
        for e in c.get("env", []):
            if SECRETISH.search(e["name"]):
                if "value" in e or "secretKeyRef" not in e.get("valueFrom", {}):
                    problems.append(f"{cname}: {e['name']} is not taken from a Secret")
        if need_probes:
            paths = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("readinessProbe", "livenessProbe")}
            if paths["readinessProbe"] != "/readyz":
                problems.append(f"{cname}: readiness probe is not /readyz")
            if paths["livenessProbe"] != "/healthz":
                problems.append(f"{cname}: liveness probe is not /healthz")


def check(overlay, docs):
    problems = []
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    for need in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                 "NetworkPolicy", "ConfigMap", "Job", "PersistentVolumeClaim"):
        if need not in kinds:
            problems.append(f"no {need}")
    if "Secret" in kinds:
        problems.append("a Secret is rendered: secrets are referenced, never shipped")
    for d in kinds.get("Deployment", []):
        pod_checks(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"], problems, True)
    for d in kinds.get("Job", []):
        pod_checks(f"Job/{d['metadata']['name']}", d["spec"]["template"]["spec"], problems, False)
    for d in kinds.get("ConfigMap", []):
        for key, text in d.get("data", {}).items():
            if re.search(r"^\s*development\s*=\s*true", text, re.M):
                problems.append(f"ConfigMap/{key}: development mode")
            if re.search(r"^\s*(dev_secret|query_salt|api_key|metrics_token)\s*=\s*\"[^\"]+\"", text, re.M):
                problems.append(f"ConfigMap/{key}: a secret literal")
            if re.search(r"postgres://[^\s\"]*:[^\s\"@]+@", text):
                problems.append(f"ConfigMap/{key}: a database password")
    np = kinds.get("NetworkPolicy", [{}])[0].get("spec", {})
    if set(np.get("policyTypes", [])) != {"Ingress", "Egress"}:
        problems.append("NetworkPolicy does not restrict both directions")
    if overlay.endswith("gpu"):
        c = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
        if "nvidia.com/gpu" not in c["resources"].get("limits", {}):
            problems.append("gpu overlay: no nvidia.com/gpu limit")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if env.get("SOVRA__GENERATOR__EXECUTION_PROVIDER") != "cuda":
            problems.append("gpu overlay: the CUDA execution provider is not selected")
    return problems


def main():
    overlays = [ROOT / "base"] + sorted(p for p in (ROOT / "overlays").iterdir() if p.is_dir())
    failed = False
    for o in overlays:
        docs = render(o)
        problems = check(o.name, docs)
        name = o.relative_to(ROOT)
        if problems:
            failed = True
            for p in problems:
                print(f"{name}: {p}")
        else:
            print(f"{name}: {len(docs)} objects, every check holds")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
