{{/*
The gepa-sidecar container and its volumes: the standalone Deployment uses them, and a parent
chart puts them in its own pod (embedded mode, README "Deploy to Kubernetes"):

  initContainers:
    {{- include "gepa-sidecar.container" (index .Subcharts "gepa-sidecar") | nindent 4 }}
  volumes:
    {{- include "gepa-sidecar.volumes" (index .Subcharts "gepa-sidecar") | nindent 4 }}

In embedded mode the container is a native sidecar (an initContainers entry with
restartPolicy Always): it starts before the chatbot and stops after it.
*/}}

{{/* Paths inside the container; only the emptyDirs are writable. */}}
{{- define "gepa-sidecar.paths" -}}
config: /etc/gepa-sidecar
data: /var/lib/gepa-sidecar
prompts: /var/run/gepa-sidecar/prompts
tmp: /tmp
kafkaCa: /etc/gepa-sidecar-kafka-ca
{{- end }}

{{/* The SIDECAR_* settings (sidecar/settings.py) the values set, in the order they appear. */}}
{{- define "gepa-sidecar.settingsEnv" -}}
{{- $v := .Values }}
{{- $paths := include "gepa-sidecar.paths" . | fromYaml }}
{{- $env := list }}
{{- $plain := list
  (list "KAFKA_BOOTSTRAP_SERVERS" $v.kafka.bootstrapServers)
  (list "TRAFFIC_TOPIC" $v.kafka.trafficTopic)
  (list "DLQ_TOPIC" $v.kafka.dlqTopic)
  (list "PROMPTS_TOPIC" $v.kafka.promptsTopic)
  (list "CONSUMER_GROUP" $v.kafka.consumerGroup)
  (list "KAFKA_AUTO_OFFSET_RESET" $v.kafka.autoOffsetReset)
  (list "KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol)
  (list "KAFKA_SASL_MECHANISM" $v.kafka.saslMechanism)
  (list "KAFKA_SASL_USERNAME" $v.kafka.saslUsername)
  (list "KAFKA_SSL_CAFILE" (ternary (printf "%s/ca.crt" $paths.kafkaCa) "" (ne $v.kafka.caSecret.name "")))
  (list "DATABASE_URL" (ternary "" (default (printf "sqlite:///%s/sidecar.db" $paths.data) $v.database.url) (ne $v.database.existingSecret.name "")))
  (list "JUDGE_MODEL" $v.models.judge)
  (list "JUDGE_API_BASE" $v.models.judgeApiBase)
  (list "TASK_MODEL" $v.models.task)
  (list "TASK_API_BASE" $v.models.taskApiBase)
  (list "REFLECTION_MODEL" $v.models.reflection)
  (list "REFLECTION_API_BASE" $v.models.reflectionApiBase)
  (list "SAMPLE_RATE" (toString $v.sampleRate))
  (list "JUDGE_BUDGET_USD_PER_HOUR" (toString (default "" $v.judging.budgetUsdPerHour)))
  (list "JUDGE_MAX_PER_MINUTE" (ternary (toString (int $v.judging.maxPerMinute)) "" (not (empty $v.judging.maxPerMinute))))
  (list "JUDGE_MAX_EVENT_AGE_HOURS" (toString $v.judging.maxEventAgeHours))
  (list "OPTIMIZE_SCHEDULE" (toString $v.optimize.schedule))
  (list "RUN_BUDGET_USD" (toString $v.optimize.runBudgetUsd))
  (list "RUN_MAX_METRIC_CALLS" (toString (int $v.optimize.runMaxMetricCalls)))
  (list "RUN_MAX_SECONDS" (toString $v.optimize.runMaxSeconds))
  (list "SHADOW_SCHEDULE" (toString $v.shadow.schedule))
  (list "SHADOW_BUDGET_USD" (toString $v.shadow.budgetUsd))
  (list "PUBLISH_DIR" $paths.prompts)
  (list "HTTP_PORT" (toString (int $v.httpPort)))
  (list "CONFIG_FILE" (printf "%s/config.yaml" $paths.config))
  (list "LOG_LEVEL" $v.logging.level)
  (list "LOG_FORMAT" $v.logging.format)
  (list "SHUTDOWN_GRACE_S" (toString (int $v.shutdownGraceSeconds)))
}}
{{- range $plain }}
{{- if index . 1 }}
{{- $env = append $env (dict "name" (printf "SIDECAR_%s" (index . 0)) "value" (index . 1)) }}
{{- end }}
{{- end }}
{{- $env = append $env (dict "name" "SIDECAR_PUBLISH_TARGETS" "value" (join "," $v.publish.targets)) }}
{{- with $v.database.existingSecret.name }}
{{- $env = append $env (dict "name" "SIDECAR_DATABASE_URL" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" $v.database.existingSecret.key))) }}
{{- end }}
{{- with $v.existingSecret }}
{{- $secretName := . }}
{{- $keys := list "ADMIN_TOKEN" "JUDGE_API_KEY" "TASK_API_KEY" "REFLECTION_API_KEY" }}
{{- if hasPrefix "SASL_" $v.kafka.securityProtocol }}
{{- $keys = append $keys "KAFKA_SASL_PASSWORD" }}
{{- end }}
{{- range $keys }}
{{- $env = append $env (dict "name" (printf "SIDECAR_%s" .) "valueFrom" (dict "secretKeyRef" (dict "name" $secretName "key" . "optional" true))) }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* The settings plus extraEnv; an extraEnv name the chart already sets stops the render. */}}
{{- define "gepa-sidecar.env" -}}
{{- $env := include "gepa-sidecar.settingsEnv" . | fromYamlArray }}
{{- $taken := list }}
{{- range $env }}
{{- $taken = append $taken .name }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has .name $taken }}
{{- fail (printf "gepa-sidecar: extraEnv sets %s, which the chart sets from its values: use the value instead" .name) }}
{{- end }}
{{- $taken = append $taken .name }}
{{- end }}
{{- concat $env .Values.extraEnv | toYaml }}
{{- end }}

{{- define "gepa-sidecar.volumeMounts" -}}
{{- $paths := include "gepa-sidecar.paths" . | fromYaml -}}
- name: gepa-sidecar-config
  mountPath: {{ $paths.config }}
  readOnly: true
- name: gepa-sidecar-tmp
  mountPath: {{ $paths.tmp }}
- name: gepa-sidecar-data
  mountPath: {{ $paths.data }}
- name: gepa-sidecar-prompts
  mountPath: {{ $paths.prompts }}
{{- if .Values.kafka.caSecret.name }}
- name: gepa-sidecar-kafka-ca
  mountPath: {{ $paths.kafkaCa }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gepa-sidecar.container" -}}
{{- include "gepa-sidecar.validate" . -}}
- name: gepa-sidecar
  image: {{ include "gepa-sidecar.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["run"]
  {{- if eq .Values.mode "embedded" }}
  restartPolicy: Always
  {{- end }}
  ports:
    - name: {{ .Values.portName }}
      containerPort: {{ int .Values.httpPort }}
      protocol: TCP
  env:
    {{- include "gepa-sidecar.env" . | nindent 4 }}
  startupProbe:
    httpGet:
      path: /readyz
      port: {{ .Values.portName }}
    periodSeconds: {{ int .Values.probes.startup.periodSeconds }}
    failureThreshold: {{ int .Values.probes.startup.failureThreshold }}
    timeoutSeconds: {{ int .Values.probes.timeoutSeconds }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ .Values.portName }}
    periodSeconds: {{ int .Values.probes.readiness.periodSeconds }}
    failureThreshold: {{ int .Values.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ int .Values.probes.timeoutSeconds }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ .Values.portName }}
    periodSeconds: {{ int .Values.probes.liveness.periodSeconds }}
    failureThreshold: {{ int .Values.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ int .Values.probes.timeoutSeconds }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ int .Values.securityContext.runAsUser }}
    runAsGroup: {{ int .Values.securityContext.runAsGroup }}
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    {{- include "gepa-sidecar.volumeMounts" . | nindent 4 }}
{{- end }}

{{- define "gepa-sidecar.volumes" -}}
- name: gepa-sidecar-config
  configMap:
    name: {{ include "gepa-sidecar.fullname" . }}
- name: gepa-sidecar-tmp
  emptyDir:
    sizeLimit: {{ .Values.volumeSizeLimits.tmp }}
- name: gepa-sidecar-data
  emptyDir:
    sizeLimit: {{ .Values.volumeSizeLimits.data }}
- name: gepa-sidecar-prompts
  emptyDir:
    sizeLimit: {{ .Values.volumeSizeLimits.prompts }}
{{- with .Values.kafka.caSecret }}
{{- if .name }}
- name: gepa-sidecar-kafka-ca
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: ca.crt
{{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
