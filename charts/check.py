#!/usr/bin/env python3
"""Checks the Helm chart, offline (run by `make test` inside scripts/test-services):

- it renders with the default values and with ci/full-values.yaml (every option),
  and every rendered object passes `kubernetes-validate --strict` for
  Kubernetes 1.32 and the newest version it carries;
- values.schema.json rejects bad values files;
- its CRDs equal crds/, its ClusterRole rules equal `foodapp-operator rbac` and
  its leader-election Role `foodapp-operator rbac --leader-election` (which a
  Rust test checks against the API calls the controllers and the LeaseLock make).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from helm_python import Chart

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "foodapp-operator"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
OPERATOR = TARGET / "debug" / "foodapp-operator"
VERSIONS = ["1.32.0", "1.37.0"]
# Kinds from other projects' CRDs, unknown to the official schemas.
FOREIGN = {("monitoring.coreos.com/v1", "ServiceMonitor")}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}", file=sys.stderr)


def validate(objects, label):
    with tempfile.TemporaryDirectory(dir=os.environ.get("FOODAPP_RUN_DIR")) as tmp:
        path = Path(tmp) / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        for version in VERSIONS:
            run = subprocess.run(["kubernetes-validate", "--strict", "--no-warn", "-k", version, str(path)],
                                 capture_output=True, text=True)
            if run.returncode != 0 or "ERROR" in run.stdout:
                fail(f"{label} is invalid for Kubernetes {version}:\n{run.stdout}{run.stderr}")


def render(chart, values, label):
    manifests = chart.render(values, name="foodapp", namespace="foodapp-system", is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [o for o in yaml.safe_load_all(text) if o]
    kinds = sorted(o["kind"] for o in objects)
    print(f"{label}: {len(objects)} objects: {', '.join(kinds)}")
    validate([o for o in objects if (o["apiVersion"], o["kind"]) not in FOREIGN], label)
    return objects


def main():
    chart = Chart.load(CHART)

    defaults = render(chart, None, "default values")
    full_values = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    chart.validate_schema(full_values)
    full = render(chart, full_values, "every option")
    if not any(o["kind"] == "ServiceMonitor" for o in full):
        fail("the full values did not render the ServiceMonitor")

    deployment = next(o for o in defaults if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    checks = {
        "runs as non-root": pod["securityContext"].get("runAsNonRoot") is True,
        "seccomp RuntimeDefault": pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
        "read-only root filesystem": container["securityContext"]["readOnlyRootFilesystem"] is True,
        "drops all capabilities": container["securityContext"]["capabilities"]["drop"] == ["ALL"],
        "has probes": "livenessProbe" in container and "readinessProbe" in container,
        "two replicas with leader election": deployment["spec"]["replicas"] == 2
        and not any(e["name"] == "DISABLE_LEADER_ELECTION" for e in container["env"]),
    }
    for what, ok in checks.items():
        if not ok:
            fail(f"operator Deployment: {what}")

    for bad in [{"replicaCount": "two"}, {"replicaCount": 0}, {"colour": "red"},
                {"image": {"pullPolicy": "Sometimes"}}, {"metrics": {"port": 70000}}]:
        try:
            chart.validate_schema(bad)
            fail(f"values.schema.json accepted {bad}")
        except Exception:
            pass

    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        copy = CHART / "crds" / crd.name
        if not copy.exists() or copy.read_text() != crd.read_text():
            fail(f"charts/foodapp-operator/crds/{crd.name} differs from crds/{crd.name}: copy it over")

    for args, file, kind in [(["rbac"], "rbac-rules.yaml", "ClusterRole"),
                             (["rbac", "--leader-election"], "leader-election-rules.yaml", "Role")]:
        generated = subprocess.run([str(OPERATOR), *args], capture_output=True, text=True, check=True).stdout
        if (CHART / "files" / file).read_text() != generated:
            fail(f"files/{file} is stale: foodapp-operator {' '.join(args)} > charts/foodapp-operator/files/{file} (make crds)")
        role = next(o for o in defaults if o["kind"] == kind)
        if role["rules"] != yaml.safe_load(generated):
            fail(f"the rendered {kind} differs from foodapp-operator {' '.join(args)}")
    lease_role = next(o for o in defaults if o["kind"] == "Role")
    if lease_role["metadata"].get("namespace") != "foodapp-system":
        fail("the leader-election Role is not in the release namespace")
    if any("leases" in r.get("resources", []) for r in next(o for o in defaults if o["kind"] == "ClusterRole")["rules"]):
        fail("the ClusterRole grants leases: they belong in the namespaced Role")

    if failures:
        sys.exit(f"chart check: {len(failures)} failure(s)")
    print("chart check: ok")


if __name__ == "__main__":
    main()
