{{/*
Issuer-specific additions to the Deployment. Only the PKCS#11 chart has a `pkcs11` block: the
allow-list of module paths the controller may load (colon-separated, as the controller reads it), the module's own environment (SOFTHSM2_CONF,
vendor variables) and the volumes that bring the module, its configuration and its token store into
the read-only container.
*/}}
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
{{- range .mounts }}
- name: {{ required "pkcs11.mounts[].name is required" .name }}
  mountPath: {{ required "pkcs11.mounts[].mountPath is required" .mountPath }}
  readOnly: {{ not .writable }}
{{- end }}
{{- end }}
{{- end }}

{{- define "certbridge.issuerVolumes" -}}
{{- with .Values.pkcs11 }}
{{- range .mounts }}
- name: {{ .name }}
  {{- toYaml (required "pkcs11.mounts[].volume is required: a volume source such as secret, hostPath or persistentVolumeClaim" .volume) | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}
