"""Validates rendered objects against the Kubernetes OpenAPI schemas of real releases.

The schemas come from the kubernetes-validate package (deploy/gen/python.sh pins it): the OpenAPI
definitions of each Kubernetes release converted to JSON schema, in their *strict* form, where an
unknown field (`readOnlyRootFilesytem`) is an error, as it is for kube-apiserver's strict field
validation. Objects are checked against the oldest release the charts support (Chart.yaml's
kubeVersion) and the newest one the package ships.

Kinds that are not part of Kubernetes (the Prometheus Operator's ServiceMonitor and PrometheusRule)
have no schema there; they are listed in NOT_KUBERNETES and skipped here — the rules inside a
PrometheusRule are checked by `promtool check rules` instead (deploy/gen/test_monitoring.py).
"""

from __future__ import annotations

import functools

import kubernetes_validate
import kubernetes_validate.utils

# kubernetes_validate re-reads and re-parses the schema files (_definitions.json is megabytes) on
# every call; the chart tests validate hundreds of objects, so keep each parsed file (read-only use).
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)

# The oldest Kubernetes the charts accept (kubeVersion: >=1.27.0-0) and the newest in the package.
RELEASES = ("1.27.0", kubernetes_validate.latest_version())
NOT_KUBERNETES = {"monitoring.coreos.com/v1": {"ServiceMonitor", "PrometheusRule"}}


def errors(obj: dict) -> list[str]:
    """Every schema violation of one object, per release, as readable lines; empty when valid."""
    api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if kind in NOT_KUBERNETES.get(api, ()):
        return []
    name = obj.get("metadata", {}).get("name", "?")
    out = []
    for release in RELEASES:
        try:
            kubernetes_validate.validate(obj, release, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            out.append(f"{kind} {name} (Kubernetes {release}): {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            out.append(f"{kind} {name}: {api} {kind} has no schema in Kubernetes {release}")
    return out
