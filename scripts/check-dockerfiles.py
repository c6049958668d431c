#!/usr/bin/env python3
"""Static checks of Dockerfile.api and Dockerfile.operator (no Docker engine
runs here, so the images themselves cannot be built in CI):

- every binary the workspace builds (`cargo metadata`) is built with
  --release --locked by exactly one Dockerfile and copied into its final stage;
- multi-stage, with a dependency layer built before the sources are copied;
- the final stage runs as a non-root user, has OCI labels and no HEALTHCHECK
  (Kubernetes probes do that);
- nothing secret-like is copied, and .dockerignore keeps it out of the context.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETISH = re.compile(r"(\.env|\.pem|\.key|id_rsa|credentials|secret)", re.I)
failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}", file=sys.stderr)


def instructions(path):
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def main():
    meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                                     cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    bins = {(p["name"], t["name"]) for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
    built = {}
    for dockerfile in sorted(ROOT.glob("Dockerfile.*")):
        ins = instructions(dockerfile)
        stages = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
        if len(stages) < 2:
            fail(f"{dockerfile.name}: not multi-stage")
            continue
        final = ins[stages[-1]:]
        builds = [r for w, r in ins if w == "RUN" and "cargo build" in r]
        copies_src = [i for i, (w, r) in enumerate(ins) if w == "COPY" and re.match(r"^(api|operator) ", r)]
        first_build = next((i for i, (w, r) in enumerate(ins) if w == "RUN" and "cargo build" in r), None)
        if not copies_src or first_build is None or first_build > copies_src[0]:
            fail(f"{dockerfile.name}: dependencies are not built in a layer before the sources are copied")
        for package, binary in bins:
            if any(f"-p {package}" in b and "--release" in b and "--locked" in b for b in builds):
                built.setdefault(binary, []).append(dockerfile.name)
                if not any(w == "COPY" and "--from=" in r and binary in r for w, r in final):
                    fail(f"{dockerfile.name}: builds {binary} but does not copy it into the final stage")
        users = [r for w, r in final if w == "USER"]
        if not users or users[-1].split(":")[0] in ("root", "0"):
            fail(f"{dockerfile.name}: the final stage does not run as a non-root user")
        if any(w == "HEALTHCHECK" for w, _ in ins):
            fail(f"{dockerfile.name}: has a HEALTHCHECK (Kubernetes probes do that)")
        labels = " ".join(r for w, r in final if w == "LABEL")
        for label in ["org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.version"]:
            if label not in labels:
                fail(f"{dockerfile.name}: missing label {label}")
        for w, r in ins:
            if w in ("COPY", "ADD") and SECRETISH.search(r):
                fail(f"{dockerfile.name}: copies something secret-like: {w} {r}")
            if w == "ENV" and re.search(r"(PASSWORD|SECRET|TOKEN|KEY)=", r):
                fail(f"{dockerfile.name}: bakes a secret into the image: ENV {r}")
    for package, binary in bins:
        if len(built.get(binary, [])) != 1:
            fail(f"binary {binary} is built by {built.get(binary, [])}, expected exactly one Dockerfile")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for needed in ["target/", ".git/", "**/.env", "**/*.pem", "**/*.key"]:
        if needed not in ignore:
            fail(f".dockerignore does not exclude {needed}")
    if failures:
        sys.exit(f"Dockerfile check: {len(failures)} failure(s)")
    print(f"Dockerfile check: ok ({', '.join(sorted(built))} built by {', '.join(sorted({d for v in built.values() for d in v}))})")


if __name__ == "__main__":
    main()
