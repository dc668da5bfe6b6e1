{{/*
Least-privilege RBAC. Each rule is listed with the reason it exists in deploy/README.md ("RBAC");
deploy/check.sh fails when the controllers use a verb or resource these rules do not grant.
*/}}
{{- define "certbridge.rbac" -}}
{{- if hasKey .Values.rbac "serviceAccountTokens" }}
{{- fail "rbac.serviceAccountTokens was removed (it granted serviceaccounts/token create in every namespace): list each ServiceAccount in vault.serviceAccountTokens as {namespace, name}" }}
{{- end }}
{{- $fullname := include "certbridge.fullname" . -}}
{{- $group := include "certbridge.group" . -}}
{{- $issuers := include "certbridge.issuerPlural" . -}}
{{- $clusterIssuers := include "certbridge.clusterIssuerPlural" . -}}
{{- $sa := include "certbridge.serviceAccountName" . -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
rules:
  # Requests addressed to this issuer: watch them; patch stores per-request state as annotations
  # state.{{ $group }}/<key> so an asynchronous CA's request survives a restart, and adds/removes the
  # revoke-on-delete finalizer {{ $group }}/revoke-on-delete (a request annotated for it).
  - apiGroups: ["cert-manager.io"]
    resources: ["certificaterequests"]
    verbs: ["get", "list", "watch", "patch"]
  - apiGroups: ["cert-manager.io"]
    resources: ["certificaterequests/status"]
    verbs: ["patch"]
  {{- if .Values.kubernetesCSRs.enabled }}
  # Kubernetes CSRs for the cluster kind; patch: the same per-request state annotations and
  # revoke-on-delete finalizer.
  - apiGroups: ["certificates.k8s.io"]
    resources: ["certificatesigningrequests"]
    verbs: ["get", "list", "watch", "patch"]
  - apiGroups: ["certificates.k8s.io"]
    resources: ["certificatesigningrequests/status"]
    verbs: ["patch"]
  # Kubernetes only lets a controller write status.certificate for signers it may "sign" for;
  # CSRs are served by the cluster-scoped kind only.
  - apiGroups: ["certificates.k8s.io"]
    resources: ["signers"]
    resourceNames: [{{ printf "%s.%s/*" $clusterIssuers $group | quote }}]
    verbs: ["sign"]
  {{- end }}
  # The issuers, watched (specs are never written, nor read one by one). With namespacedIssuers
  # off the controller runs with --disable-namespaced-issuers and never reads or writes the
  # namespaced kind.
  {{- if .Values.namespacedIssuers.enabled }}
  - apiGroups: [{{ $group | quote }}]
    resources: [{{ $issuers | quote }}, {{ $clusterIssuers | quote }}]
    verbs: ["list", "watch"]
  - apiGroups: [{{ $group | quote }}]
    resources: [{{ printf "%s/status" $issuers | quote }}, {{ printf "%s/status" $clusterIssuers | quote }}]
    verbs: ["patch"]
  {{- else }}
  - apiGroups: [{{ $group | quote }}]
    resources: [{{ $clusterIssuers | quote }}]
    verbs: ["list", "watch"]
  - apiGroups: [{{ $group | quote }}]
    resources: [{{ printf "%s/status" $clusterIssuers | quote }}]
    verbs: ["patch"]
  {{- end }}
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
  {{- if .Values.namespacedIssuers.enabled }}
  # A namespaced issuer reads the Secrets and ConfigMaps it references in its own namespace, which
  # can be any namespace. Disable namespacedIssuers to drop this cluster-wide read (the controller
  # then watches them only in the cluster resource namespace, where the Role below grants it).
  - apiGroups: [""]
    resources: ["secrets", "configmaps"]
    verbs: ["get", "list", "watch"]
  {{- if .Values.rbac.secretUpdates }}
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["patch"]
  {{- end }}
  {{- end }}
  {{- if .Values.metrics.secure }}
  # HTTPS /metrics: who presents the bearer token (TokenReview) and whether they may get the
  # non-resource URL /metrics (SubjectAccessReview). Without them every scrape gets 503.
  - apiGroups: ["authentication.k8s.io"]
    resources: ["tokenreviews"]
    verbs: ["create"]
  - apiGroups: ["authorization.k8s.io"]
    resources: ["subjectaccessreviews"]
    verbs: ["create"]
  {{- end }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ .Release.Namespace }}
---
# A cluster issuer reads Secrets and ConfigMaps only in the cluster resource namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ printf "%s-cluster-resources" $fullname }}
  namespace: {{ include "certbridge.clusterResourceNamespace" . }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["secrets", "configmaps"]
    verbs: ["get", "list", "watch"]
  {{- if .Values.rbac.secretUpdates }}
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["patch"]
  {{- end }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ printf "%s-cluster-resources" $fullname }}
  namespace: {{ include "certbridge.clusterResourceNamespace" . }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ printf "%s-cluster-resources" $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ .Release.Namespace }}
---
# The key that authenticates per-request state (state.<group>/* annotations): an HMAC key in the
# Secret <group>-state-key in the controller's own namespace (POD_NAMESPACE), created on the first
# start and only read afterwards. Kubernetes RBAC cannot limit create by name, so create covers
# Secrets in this namespace; get is limited to the key. State whose MAC does not verify is ignored.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ printf "%s-state-key" $fullname }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: [{{ printf "%s-state-key" $group | quote }}]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ printf "%s-state-key" $fullname }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ printf "%s-state-key" $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ .Release.Namespace }}
{{- if include "certbridge.leaderElect" . }}
---
# Leader election holds a coordination.k8s.io Lease in the release namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ printf "%s-leader-election" $fullname }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ printf "%s-leader-election" $fullname }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ printf "%s-leader-election" $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ .Release.Namespace }}
{{- end }}
{{- if .Values.approver.enabled }}
---
# cert-manager's built-in approver approves a request only if its own service account may
# "approve" the issuer's signer name (cert-manager.io signers, <plural>.<group>/*).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ printf "%s-approver" $fullname }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
rules:
  - apiGroups: ["cert-manager.io"]
    resources: ["signers"]
    verbs: ["approve"]
    resourceNames:
      {{- if .Values.namespacedIssuers.enabled }}
      - {{ printf "%s.%s/*" $issuers $group | quote }}
      {{- end }}
      - {{ printf "%s.%s/*" $clusterIssuers $group | quote }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ printf "%s-approver" $fullname }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ printf "%s-approver" $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ required "approver.serviceAccount.name: name cert-manager's controller service account" .Values.approver.serviceAccount.name }}
    namespace: {{ required "approver.serviceAccount.namespace: cert-manager's namespace" .Values.approver.serviceAccount.namespace }}
{{- end }}
{{- with .Values.vault }}
{{- /* serviceaccounts/token create only for the listed ServiceAccounts: one Role per namespace. */}}
{{- $byNamespace := dict }}
{{- range .serviceAccountTokens }}
{{- $ns := required "vault.serviceAccountTokens[].namespace is required" .namespace }}
{{- $name := required "vault.serviceAccountTokens[].name is required" .name }}
{{- if and (not $.Values.namespacedIssuers.enabled) (ne $ns (include "certbridge.clusterResourceNamespace" $)) }}
{{- fail (printf "vault.serviceAccountTokens: %s/%s is outside clusterResourceNamespace %s, and namespacedIssuers is off, so no issuer can use it: remove it" $ns $name (include "certbridge.clusterResourceNamespace" $)) }}
{{- end }}
{{- $_ := set $byNamespace $ns (append (get $byNamespace $ns | default list) $name | uniq) }}
{{- end }}
{{- range $ns, $names := $byNamespace }}
---
# Vault Kubernetes auth (serviceAccountRef): tokens for these ServiceAccounts only.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ printf "%s-serviceaccount-tokens" $fullname }}
  namespace: {{ $ns }}
  labels:
    {{- include "certbridge.labels" $ | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["serviceaccounts/token"]
    resourceNames: {{ toJson (sortAlpha $names) }}
    verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ printf "%s-serviceaccount-tokens" $fullname }}
  namespace: {{ $ns }}
  labels:
    {{- include "certbridge.labels" $ | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ printf "%s-serviceaccount-tokens" $fullname }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end }}
{{- if .Values.metrics.secure }}
---
# Who may scrape HTTPS /metrics: bind this to Prometheus' ServiceAccount (metrics.readers does).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ printf "%s-metrics-reader" $fullname }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
rules:
  - nonResourceURLs: ["/metrics"]
    verbs: ["get"]
{{- with .Values.metrics.readers }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ printf "%s-metrics-reader" $fullname }}
  labels:
    {{- include "certbridge.labels" $ | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ printf "%s-metrics-reader" $fullname }}
subjects:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}
