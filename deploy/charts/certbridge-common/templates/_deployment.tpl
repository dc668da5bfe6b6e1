{{/*
The controller Deployment. Arguments come from values; --leader-elect is added whenever leader
election is on (always with more than one replica). A single replica without leader election uses
the Recreate strategy so an upgrade never runs two controllers that could both call the CA.
*/}}
{{- define "certbridge.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "certbridge.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "certbridge.labels" . | nindent 4 }}
  {{- with .Values.deploymentAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  replicas: {{ int .Values.replicaCount }}
  revisionHistoryLimit: 3
  {{- if include "certbridge.leaderElect" . }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  {{- else }}
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "certbridge.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "certbridge.selectorLabels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $annotations := include "certbridge.issuerPodAnnotations" . | trim }}
      {{- if or .Values.podAnnotations $annotations }}
      annotations:
        {{- with $annotations }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "certbridge.serviceAccountName" . }}
      automountServiceAccountToken: true
      enableServiceLinks: false
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ int .Values.terminationGracePeriodSeconds }}
      containers:
        - name: controller
          image: {{ include "certbridge.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            - run
            - --cluster-resource-namespace={{ include "certbridge.clusterResourceNamespace" . }}
            {{- with .Values.watchNamespace }}
            - --namespace={{ . }}
            {{- end }}
            {{- if include "certbridge.leaderElect" . }}
            - --leader-elect
            - --leader-election-namespace={{ .Release.Namespace }}
            {{- end }}
            - --metrics-addr=0.0.0.0:{{ int .Values.metrics.port }}
            {{- if not .Values.metrics.secure }}
            - --metrics-insecure
            {{- else if .Values.metrics.tlsSecretName }}
            - --metrics-cert-file=/etc/certbridge/metrics-tls/tls.crt
            - --metrics-key-file=/etc/certbridge/metrics-tls/tls.key
            {{- end }}
            - --health-addr=0.0.0.0:{{ int .Values.health.port }}
            - --max-retry-duration={{ .Values.controller.maxRetryDuration }}
            - --max-pending={{ .Values.controller.maxPending }}
            - --issuer-recheck-interval={{ .Values.controller.issuerRecheckInterval }}
            - --concurrency={{ int .Values.controller.concurrency }}
            - --log-format={{ .Values.controller.logFormat }}
            {{- with .Values.tracing.otlpEndpoint }}
            - --otlp-endpoint={{ . }}
            {{- end }}
            - --csr-max-pem-bytes={{ int .Values.csr.maxPemBytes }}
            - --csr-max-sans={{ int .Values.csr.maxSans }}
            - --csr-max-name-bytes={{ int .Values.csr.maxNameBytes }}
            {{- if not .Values.kubernetesCSRs.enabled }}
            - --disable-certificate-signing-requests
            {{- end }}
            {{- if not .Values.namespacedIssuers.enabled }}
            - --disable-namespaced-issuers
            {{- end }}
            {{- with include "certbridge.issuerArgs" . }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- range .Values.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: RUST_LOG
              value: {{ .Values.controller.logLevel | quote }}
            {{- with include "certbridge.issuerEnv" . }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ int .Values.metrics.port }}
              protocol: TCP
            - name: health
              containerPort: {{ int .Values.health.port }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: health
            initialDelaySeconds: 15
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: health
            initialDelaySeconds: 5
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and .Values.metrics.secure .Values.metrics.tlsSecretName }}
            - name: metrics-tls
              mountPath: /etc/certbridge/metrics-tls
              readOnly: true
            {{- end }}
            {{- with include "certbridge.issuerVolumeMounts" . }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 16Mi
        {{- if and .Values.metrics.secure .Values.metrics.tlsSecretName }}
        - name: metrics-tls
          secret:
            secretName: {{ .Values.metrics.tlsSecretName }}
        {{- end }}
        {{- with include "certbridge.issuerVolumes" . }}
        {{- . | trim | nindent 8 }}
        {{- end }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
