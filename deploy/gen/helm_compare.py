#!/usr/bin/env python3
"""Where real Helm is installed: `helm lint` each chart and check that `helm template` renders exactly
the objects in deploy/manifests/<name>.yaml (which deploy/gen/gotemplate.py rendered). This is how the
strict renderer is itself held to Helm's behaviour. Run by deploy/check.sh when `helm` is on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate  # noqa: E402


def objects(text: str) -> dict[tuple[str, str, str], dict]:
    out = {}
    for obj in yaml.safe_load_all(text):
        if not obj or obj.get("kind") == "Namespace":
            continue
        labels = obj.get("metadata", {}).get("labels") or {}
        if "app.kubernetes.io/managed-by" in labels:  # "Helm" vs "certbridge-manifests"
            labels["app.kubernetes.io/managed-by"] = "*"
        meta = obj["metadata"]
        out[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return out


def main() -> int:
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(generate.DEPLOY, "charts"), os.path.join(tmp, "charts"))
        for issuer in generate.load_issuers():
            name = issuer["name"]
            chart = os.path.join(tmp, "charts", f"certbridge-{name}")
            subprocess.run(["helm", "dependency", "build", chart], check=True, capture_output=True)
            lint = subprocess.run(["helm", "lint", "--strict", chart], capture_output=True, text=True)
            if lint.returncode:
                print(lint.stdout, lint.stderr, file=sys.stderr)
                failed += 1
                continue
            rendered = subprocess.run(
                ["helm", "template", f"certbridge-{name}", chart, "--namespace", generate.MANIFEST_NAMESPACE,
                 "--include-crds"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            with open(os.path.join(generate.DEPLOY, "manifests", f"{name}.yaml"), encoding="utf-8") as f:
                committed = f.read()
            want, got = objects(committed), objects(rendered)
            for key in sorted(set(want) | set(got)):
                if want.get(key) != got.get(key):
                    failed += 1
                    print(f"{name}: {key} differs between helm template and deploy/manifests/{name}.yaml:\n"
                          f"  helm:      {got.get(key)}\n  manifests: {want.get(key)}", file=sys.stderr)  # fmt: skip
    if failed:
        print(f"{failed} difference(s): fix deploy/gen/gotemplate.py or the chart", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
