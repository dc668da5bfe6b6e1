{{/*
Names and labels. Every certbridge chart passes its own root context (.) to these templates, so
.Chart is the issuer chart (certbridge-vault, ...), never this library.
*/}}

{{- define "certbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "certbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "certbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "certbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "certbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | trimSuffix "-" }}
{{ include "certbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: certbridge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "certbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "certbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "certbridge.image" -}}
{{- $repository := required "image.repository must be set: the controller image to run" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The issuer identity every RBAC rule is derived from. The issuer block is fixed per chart (it names
the CRDs in the chart's crds/ directory); plurals follow the framework's KindNames: lower-cased kind + "s".
*/}}
{{- define "certbridge.group" -}}
{{- required "issuer.group is fixed by the issuer chart" .Values.issuer.group }}
{{- end }}

{{- define "certbridge.issuerPlural" -}}
{{- printf "%sissuers" (lower (required "issuer.name is fixed by the issuer chart" .Values.issuer.name)) }}
{{- end }}

{{- define "certbridge.clusterIssuerPlural" -}}
{{- printf "%sclusterissuers" (lower (required "issuer.name is fixed by the issuer chart" .Values.issuer.name)) }}
{{- end }}

{{/* Leader election is on when asked for, and always with more than one replica. */}}
{{- define "certbridge.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "certbridge.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.clusterResourceNamespace }}
{{- end }}
