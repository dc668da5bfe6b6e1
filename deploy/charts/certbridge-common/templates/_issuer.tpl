{{/*
Issuer-specific additions to the Deployment. Only the PKCS#11 chart has a `pkcs11` block: the
allow-list of module paths the controller may load (colon-separated, as the controller reads it), the module's own environment (SOFTHSM2_CONF,
vendor variables), the volumes that bring the module, its configuration and its token store into
the read-only container, and the token policy (a ConfigMap mounted read-only, --token-policy).
*/}}
{{- define "certbridge.tokenPolicyDir" -}}/etc/certbridge/pkcs11{{- end }}

{{- define "certbridge.issuerArgs" -}}
{{- with .Values.pkcs11 }}
{{- if .tokenPolicy }}
- --token-policy={{ include "certbridge.tokenPolicyDir" $ }}/token-policy.yaml
{{- end }}
{{- end }}
{{- end }}

{{- define "certbridge.issuerPodAnnotations" -}}
{{- with .Values.pkcs11 }}
{{- if .tokenPolicy }}
# The controller reads the policy at start: a changed policy rolls the pod.
checksum/token-policy: {{ toYaml .tokenPolicy | sha256sum }}
{{- end }}
{{- end }}
{{- end }}

{{/* The PKCS#11 token policy ConfigMap, in the release namespace (the controller's, not a tenant's). */}}
{{- define "certbridge.issuerConfig" -}}
{{- with .Values.pkcs11 }}
{{- if .tokenPolicy }}
{{- if not (kindIs "map" .tokenPolicy) }}
{{- fail "pkcs11.tokenPolicy must be a map with a `grants` list (format: issuers/pkcs11/src/grants.rs)" }}
{{- end }}
{{- if not (kindIs "slice" .tokenPolicy.grants) }}
{{- fail "pkcs11.tokenPolicy.grants must be a list of grants (format: issuers/pkcs11/src/grants.rs)" }}
{{- end }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-token-policy" (include "certbridge.fullname" $) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "certbridge.labels" $ | nindent 4 }}
data:
  token-policy.yaml: |
    {{- toYaml .tokenPolicy | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}
{{- define "certbridge.issuerEnv" -}}
{{- with .Values.pkcs11 }}
{{- range .allowedModules }}
{{- if or (not (hasPrefix "/" .)) (contains ":" .) }}
{{- fail (printf "pkcs11.allowedModules: %q must be an absolute path without ':'" .) }}
{{- end }}
{{- end }}
- name: CERTBRIDGE_PKCS11_ALLOWED_MODULES
  value: {{ join ":" (required "pkcs11.allowedModules must list at least one module path" .allowedModules) | quote }}
{{- with .env }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "certbridge.issuerVolumeMounts" -}}
{{- with .Values.pkcs11 }}
{{- if .tokenPolicy }}
- name: token-policy
  mountPath: {{ include "certbridge.tokenPolicyDir" $ }}
  readOnly: true
{{- end }}
{{- range .mounts }}
- name: {{ required "pkcs11.mounts[].name is required" .name }}
  mountPath: {{ required "pkcs11.mounts[].mountPath is required" .mountPath }}
  readOnly: {{ not .writable }}
{{- end }}
{{- end }}
{{- end }}

{{- define "certbridge.issuerVolumes" -}}
{{- with .Values.pkcs11 }}
{{- if .tokenPolicy }}
- name: token-policy
  configMap:
    name: {{ printf "%s-token-policy" (include "certbridge.fullname" $) }}
{{- end }}
{{- range .mounts }}
- name: {{ .name }}
  {{- toYaml (required "pkcs11.mounts[].volume is required: a volume source such as secret, hostPath or persistentVolumeClaim" .volume) | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}
