{{/*
Monitoring, both off by default: a PrometheusRule with the alerts of deploy/README.md "Alerts and
runbooks", and the Grafana dashboard as a ConfigMap the Grafana sidecar picks up by its label.

Every expression uses only the metrics framework/src/metrics.rs exports (certbridge_requests_total,
certbridge_sign_duration_seconds, certbridge_issuer_ready, certbridge_reconcile_errors_total,
certbridge_request_oldest_unfinished_age_seconds, certbridge_leader) and Prometheus's own `up`,
selected by the scrape job (a ServiceMonitor names it after the Service).
*/}}

{{- define "certbridge.prometheusJob" -}}
{{- default (printf "%s-metrics" (include "certbridge.fullname" .)) .Values.prometheusRule.job }}
{{- end }}

{{- define "certbridge.prometheusRule" -}}
{{- if .Values.prometheusRule.enabled -}}
{{- $r := .Values.prometheusRule }}
{{- $job := printf "job=%q" (include "certbridge.prometheusJob" .) }}
{{- $by := "job, issuer_kind, issuer" }}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ include "certbridge.fullname" . }}
  namespace: {{ default .Release.Namespace $r.namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
    {{- with $r.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  groups:
    - name: {{ include "certbridge.fullname" . }}
      rules:
        - alert: CertbridgeIssuerNotReady
          expr: certbridge_issuer_ready{ {{- $job -}} } == 0
          for: {{ $r.issuerNotReady.for }}
          labels:
            severity: {{ $r.issuerNotReady.severity }}
          annotations:
            summary: {{ printf "'{{ $labels.kind }} {{ $labels.name }} has not been Ready for %s'" $r.issuerNotReady.for }}
            description: {{ `'Requests to {{ $labels.kind }} "{{ $labels.name }}" (namespace "{{ $labels.namespace }}") wait until it is Ready. Its Ready condition message says why.'` }}
            runbook_url: {{ printf "%s#certbridgeissuernotready" $r.runbookBaseUrl }}
        - alert: CertbridgeRequestFailureRatio
          expr: |-
            sum by ({{ $by }}) (rate(certbridge_requests_total{ {{- $job -}} ,result="failed"}[{{ $r.failureRatio.window }}]))
              / sum by ({{ $by }}) (rate(certbridge_requests_total{ {{- $job -}} ,result=~"issued|failed"}[{{ $r.failureRatio.window }}]))
              > {{ $r.failureRatio.threshold }}
          for: {{ $r.failureRatio.for }}
          labels:
            severity: {{ $r.failureRatio.severity }}
          annotations:
            summary: {{ printf "'{{ $labels.issuer_kind }} {{ $labels.issuer }}: more than %v of finished requests failed over %s'" $r.failureRatio.threshold $r.failureRatio.window }}
            description: 'Requests this issuer finished were marked Failed. The Ready condition message of a failed CertificateRequest gives the CA''s answer.'
            runbook_url: {{ printf "%s#certbridgerequestfailureratio" $r.runbookBaseUrl }}
        - alert: CertbridgeRequestsPendingTooLong
          # Approved requests only: one waiting for its approver is not the issuer's to finish. Both
          # request APIs (label `kind`) count against the issuer.
          expr: |-
            max by ({{ $by }}) (certbridge_request_oldest_unfinished_age_seconds{ {{- $job -}} ,approved="true"})
              > {{ $r.pending.expectedSeconds }}
          for: {{ $r.pending.for }}
          labels:
            severity: {{ $r.pending.severity }}
          annotations:
            summary: {{ printf "'{{ $labels.issuer_kind }} {{ $labels.issuer }}: an approved request unfinished for more than %vs'" $r.pending.expectedSeconds }}
            description: {{ `'The oldest approved request naming this issuer is {{ $value | humanizeDuration }} old and neither issued nor failed: it waits for the issuer to be Ready, at the CA (approval, queue), or in retries.'` }}
            runbook_url: {{ printf "%s#certbridgerequestspendingtoolong" $r.runbookBaseUrl }}
        - alert: CertbridgeSignLatencyHigh
          expr: |-
            histogram_quantile(0.99, sum by ({{ $by }}, le) (rate(certbridge_sign_duration_seconds_bucket{ {{- $job -}} }[{{ $r.signLatency.window }}])))
              > {{ $r.signLatency.p99Seconds }}
          for: {{ $r.signLatency.for }}
          labels:
            severity: {{ $r.signLatency.severity }}
          annotations:
            summary: {{ printf "'{{ $labels.issuer_kind }} {{ $labels.issuer }}: p99 sign latency above %vs'" $r.signLatency.p99Seconds }}
            description: 'The slowest 1 % of this issuer''s sign calls over {{ $r.signLatency.window }} took longer than {{ $r.signLatency.p99Seconds }}s: the CA or HSM answers slowly.'
            runbook_url: {{ printf "%s#certbridgesignlatencyhigh" $r.runbookBaseUrl }}
        - alert: CertbridgeCAErrors
          expr: |-
            sum by ({{ $by }}) (rate(certbridge_requests_total{ {{- $job -}} ,result="retry"}[{{ $r.caErrors.window }}]))
              / sum by ({{ $by }}) (rate(certbridge_requests_total{ {{- $job -}} ,result=~"issued|failed|pending|retry"}[{{ $r.caErrors.window }}]))
              > {{ $r.caErrors.threshold }}
          for: {{ $r.caErrors.for }}
          labels:
            severity: {{ $r.caErrors.severity }}
          annotations:
            summary: {{ printf "'{{ $labels.issuer_kind }} {{ $labels.issuer }}: more than %v of CA/HSM calls fail and are retried'" $r.caErrors.threshold }}
            description: 'Sign calls end in transient CA/HSM errors (retried with backoff until --max-retry-duration, then Failed).'
            runbook_url: {{ printf "%s#certbridgecaerrors" $r.runbookBaseUrl }}
        - alert: CertbridgeControllerAbsent
          # No target at all, or none of them up.
          expr: absent(up{ {{- $job -}} }) or max by (job) (up{ {{- $job -}} }) == 0
          for: {{ $r.controllerAbsent.for }}
          labels:
            severity: {{ $r.controllerAbsent.severity }}
          annotations:
            summary: {{ printf "'No %s controller is scraped and up'" (include "certbridge.fullname" .) }}
            description: 'Prometheus has no up target for this controller: requests to its issuers are not served.'
            runbook_url: {{ printf "%s#certbridgecontrollerabsent" $r.runbookBaseUrl }}
        - alert: CertbridgeLeaderElectionLost
          # certbridge_leader is 1 on the replica that holds the Lease and 0 on one waiting for it (every
          # replica exports it from its start): each 1 → 0 of a pod's series is a lost lease (the
          # controller exits and comes back as a follower).
          expr: |-
            sum by (job) (resets(certbridge_leader{ {{- $job -}} }[{{ $r.leaderElection.window }}]))
              >= {{ $r.leaderElection.losses }}
          labels:
            severity: {{ $r.leaderElection.severity }}
          annotations:
            summary: {{ printf "'The leader lease was lost at least %v times in %s'" $r.leaderElection.losses $r.leaderElection.window }}
            description: 'Leadership keeps moving between replicas: each move stops reconciling until the next replica takes the Lease.'
            runbook_url: {{ printf "%s#certbridgeleaderelectionlost" $r.runbookBaseUrl }}
        - alert: CertbridgeReconcileErrors
          expr: |-
            sum by (job, controller) (rate(certbridge_reconcile_errors_total{ {{- $job -}} }[{{ $r.reconcileErrors.window }}]))
              > {{ $r.reconcileErrors.perSecond }}
          for: {{ $r.reconcileErrors.for }}
          labels:
            severity: {{ $r.reconcileErrors.severity }}
          annotations:
            summary: {{ printf "'{{ $labels.controller }}: more than %v reconcile errors per second'" $r.reconcileErrors.perSecond }}
            description: 'Reconcile passes end in errors (API server writes, conflicts, transient CA errors); they are retried with backoff.'
            runbook_url: {{ printf "%s#certbridgereconcileerrors" $r.runbookBaseUrl }}
{{- end }}
{{- end }}

{{- define "certbridge.dashboard" -}}
{{- if .Values.dashboard.enabled -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-dashboard" (include "certbridge.fullname" .) }}
  namespace: {{ default .Release.Namespace .Values.dashboard.namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
    {{- toYaml .Values.dashboard.labels | nindent 4 }}
  {{- with .Values.dashboard.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
data:
  {{ printf "%s.json" (include "certbridge.fullname" .) }}: |-
    {{- required "files/dashboard.json is missing from the issuer chart (deploy/gen/generate.py copies it)" (.Files.Get "files/dashboard.json") | nindent 4 }}
{{- end }}
{{- end }}
