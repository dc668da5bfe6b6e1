"""Kubernetes request attributes and RBAC authorization, enough to decide whether a chart's RBAC allows
the API calls a controller made.

`request_attributes` follows the API server's RequestInfo rules (k8s.io/apiserver
pkg/endpoints/request/requestinfo.go): the verb comes from the HTTP method and whether a name is
present (GET on a collection is list, or watch with ?watch=true), the path gives group, resource,
subresource, namespace and name. `Authorizer` follows the RBAC authorizer (plugin/pkg/auth/authorizer/
rbac): ClusterRoleBindings grant everywhere, RoleBindings only in their namespace, a rule matches when
its apiGroups, resources ("resource/subresource") and verbs contain the request's (or "*"), and its
resourceNames, when present, contain the name. For `signers`, Kubernetes also accepts "<domain>/*".
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Attributes:
    verb: str
    group: str
    resource: str  # "resource" or "resource/subresource"
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{named}{where}"


def request_attributes(method: str, target: str) -> Attributes | None:
    """The attributes of a resource request; None for non-resource paths (discovery, /version, ...)."""
    url = urlsplit(target)
    parts = [p for p in url.path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # group/version discovery
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    if resource == "namespaces" and len(rest) == 2:
        namespace = name
    subresource = rest[2] if len(rest) > 2 else ""
    query = parse_qs(url.query)
    watch = query.get("watch", [""])[0] in ("true", "1")
    verb = {
        "GET": "get" if name else ("watch" if watch else "list"),
        "HEAD": "get" if name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method.upper(), method.lower())
    if watch and name:
        verb = "watch"
    full = f"{resource}/{subresource}" if subresource else resource
    return Attributes(verb, group, full, namespace, name)


class Authorizer:
    """RBAC for one service account, from rendered objects (ClusterRoles, Roles and their bindings)."""

    def __init__(self, objects: list[dict], sa_namespace: str, sa_name: str) -> None:
        roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o.get("rules") or []
                 for o in objects if o["kind"] in ("ClusterRole", "Role")}  # fmt: skip
        self.grants: list[tuple[str, dict]] = []  # (namespace or "" for cluster-wide, rule)
        for o in objects:
            if o["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
                continue
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                       and s.get("namespace") == sa_namespace for s in o.get("subjects") or []):  # fmt: skip
                continue
            ref = o["roleRef"]
            ns = o["metadata"].get("namespace", "") if o["kind"] == "RoleBinding" else ""
            role_ns = ns if ref["kind"] == "Role" else ""
            rules = roles.get((ref["kind"], role_ns, ref["name"]))
            if rules is None:
                raise ValueError(f"{o['kind']} {o['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}")
            self.grants.extend((ns, r) for r in rules)

    def allows(self, a: Attributes) -> bool:
        for ns, rule in self.grants:
            if ns and ns != a.namespace:
                continue
            if not _has(rule.get("apiGroups"), a.group) or not _has(rule.get("verbs"), a.verb):
                continue
            if not _has(rule.get("resources"), a.resource):
                continue
            names = rule.get("resourceNames")
            if names:
                candidates = {a.name}
                if a.resource == "signers" and "/" in a.name:
                    candidates.add(a.name.split("/", 1)[0] + "/*")
                if not candidates & set(names):
                    continue
            return True
        return False


    def unused(self, used: list[Attributes]) -> list[str]:
        """Each (verb, group, resource[, names], namespace) a grant allows that no attribute in `used`
        exercised, as text (e.g. "get core/secrets in cert-manager")."""
        out: list[str] = []
        for ns, rule in self.grants:
            if rule.get("nonResourceURLs"):
                continue
            names = rule.get("resourceNames") or []
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        hit = any(a.verb == verb and a.group == group and a.resource == resource
                                  and (not ns or a.namespace == ns)
                                  and (not names or a.name in names or (a.resource == "signers" and "/" in a.name
                                       and a.name.split("/", 1)[0] + "/*" in names))
                                  for a in used)  # fmt: skip
                        if not hit:
                            named = f" {','.join(names)}" if names else ""
                            where = f" in {ns}" if ns else " (cluster-wide)"
                            text = f"{verb} {group or 'core'}/{resource}{named}{where}"
                            if text not in out:
                                out.append(text)
        return out


def _has(values: list[str] | None, want: str) -> bool:
    return bool(values) and ("*" in values or want in values)
