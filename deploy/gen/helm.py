"""Real Helm for the deploy tooling: render, lint and package the charts with the `helm` binary that
scripts/tools/install-helm.sh pins (or $CERTBRIDGE_HELM).

The issuer charts depend on the certbridge-common library chart through a file:// repository, so a
chart has to be copied and `helm dependency build` run before Helm can render it. `ChartSet` does that
once into a scratch directory and renders from there, so nothing is ever written under deploy/charts/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import yaml

DEPLOY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(DEPLOY)


class HelmError(Exception):
    """A helm command failed; the message carries Helm's own error text."""


@dataclass
class Document:
    source: str  # the template it came from, e.g. certbridge-vault/templates/rbac.yaml
    kind: str
    name: str
    obj: dict


_helm: str | None = None


def helm() -> str:
    """The path of the pinned helm binary, installing it into .work/ when it is missing."""
    global _helm
    if _helm is None:
        _helm = os.environ.get("CERTBRIDGE_HELM") or subprocess.run(
            [os.path.join(REPO, "scripts", "tools", "install-helm.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
    return _helm


def run(*args: str) -> str:
    p = subprocess.run([helm(), *args], capture_output=True, text=True)
    if p.returncode:
        raise HelmError(f"helm {' '.join(args[:2])} failed:\n{p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def parse(text: str) -> list[Document]:
    """`helm template` output → documents (the `# Source:` comment of each names its template)."""
    docs = []
    for part in text.split("\n---\n"):
        source = ""
        for line in part.splitlines():
            if line.startswith("# Source: "):
                source = line[len("# Source: ") :]
                break
        obj = yaml.safe_load(part)
        if not obj:
            continue
        docs.append(Document(source, obj["kind"], obj["metadata"].get("name", ""), obj))
    return docs


class ChartSet:
    """A scratch copy of a charts directory with every issuer chart's dependencies built."""

    def __init__(self, charts_dir: str = os.path.join(DEPLOY, "charts")) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="certbridge-charts-")
        self.dir = os.path.join(self._tmp.name, "charts")
        shutil.copytree(charts_dir, self.dir, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
        for name in sorted(os.listdir(self.dir)):
            meta = self.meta(name)
            if meta.get("dependencies"):
                run("dependency", "build", self.path(name))

    def path(self, chart: str) -> str:
        return os.path.join(self.dir, chart)

    def meta(self, chart: str) -> dict:
        with open(os.path.join(self.path(chart), "Chart.yaml"), encoding="utf-8") as f:
            return yaml.safe_load(f)

    def issuer_charts(self) -> list[str]:
        return sorted(n for n in os.listdir(self.dir) if self.meta(n).get("type") != "library")

    def template_text(self, chart: str, release: str, namespace: str, overrides: dict | None = None,
                      *extra: str) -> str:  # fmt: skip
        """`helm template` with the overrides as a values file (types are kept, unlike --set)."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as values:
            json.dump(overrides or {}, values)
            values.flush()
            return run("template", release, self.path(chart), "--namespace", namespace, "-f", values.name, *extra)

    def render(self, chart: str, release: str, namespace: str, overrides: dict | None = None) -> list[Document]:
        return parse(self.template_text(chart, release, namespace, overrides))

    def notes(self, chart: str, release: str, namespace: str) -> str:
        """NOTES.txt as `helm install` prints it (a client-side dry run: no cluster is contacted)."""
        out = run("install", release, self.path(chart), "--namespace", namespace, "--dry-run=client")
        return out.split("NOTES:\n", 1)[1] if "NOTES:\n" in out else ""

    def lint(self, chart: str, overrides: dict | None = None) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as values:
            json.dump(overrides or {}, values)
            values.flush()
            return run("lint", "--strict", self.path(chart), "-f", values.name)

    def package(self, chart: str, out_dir: str) -> str:
        """`helm package` into out_dir; returns the .tgz path (pushable with `helm push ... oci://`)."""
        out = run("package", self.path(chart), "--destination", out_dir)
        return out.strip().rsplit(": ", 1)[-1]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> ChartSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
