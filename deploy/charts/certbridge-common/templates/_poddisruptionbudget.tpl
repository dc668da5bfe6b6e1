{{/*
Only with more than one replica: a PDB that keeps one of one pod available would block every node drain.
*/}}
{{- define "certbridge.podDisruptionBudget" -}}
{{- if and .Values.podDisruptionBudget.enabled (gt (int .Values.replicaCount) 1) -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "certbridge.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
spec:
  {{- if .Values.podDisruptionBudget.maxUnavailable }}
  maxUnavailable: {{ .Values.podDisruptionBudget.maxUnavailable }}
  {{- else }}
  minAvailable: {{ default 1 .Values.podDisruptionBudget.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "certbridge.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
