{{/* The Prometheus endpoint (/metrics, certbridge_* families; HTTPS with TokenReview and SubjectAccessReview unless metrics.secure is false) as a Service, and optionally a ServiceMonitor. */}}
{{- define "certbridge.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ printf "%s-metrics" (include "certbridge.fullname" .) }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "certbridge.selectorLabels" . | nindent 4 }}
  ports:
    - name: metrics
      port: {{ int .Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
{{- end }}

{{- define "certbridge.serviceMonitor" -}}
{{- if .Values.serviceMonitor.enabled -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "certbridge.fullname" . }}
  namespace: {{ default .Release.Namespace .Values.serviceMonitor.namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
    {{- with .Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  namespaceSelector:
    matchNames:
      - {{ .Release.Namespace }}
  selector:
    matchLabels:
      {{- include "certbridge.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ .Values.serviceMonitor.interval }}
      scrapeTimeout: {{ .Values.serviceMonitor.scrapeTimeout }}
      honorLabels: false
      {{- if .Values.metrics.secure }}
      # HTTPS: Prometheus presents its own ServiceAccount token, which needs the metrics-reader
      # ClusterRole (metrics.readers binds it).
      scheme: https
      bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
      {{- with .Values.serviceMonitor.tlsConfig }}
      tlsConfig:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}
