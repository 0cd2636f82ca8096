{{/*
Names, labels and the checks every render runs. The helpers read only .Values, .Release and
.Chart, so a parent chart can call them with this chart's scope: (index .Subcharts "gepa-sidecar").
*/}}

{{- define "gepa-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gepa-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "gepa-sidecar.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gepa-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gepa-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gepa-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gepa-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The label a parent chart puts on its pods (embedded mode): the PodMonitor selects it. */}}
{{- define "gepa-sidecar.podLabels" -}}
gepa-sidecar/instance: {{ include "gepa-sidecar.fullname" . }}
{{- end }}

{{/* Pod annotations: a change of the prompts config rolls the pods (it is read at start). */}}
{{- define "gepa-sidecar.podAnnotations" -}}
checksum/gepa-sidecar-config: {{ include "gepa-sidecar.config" . | sha256sum }}
{{- end }}

{{- define "gepa-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gepa-sidecar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gepa-sidecar.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The stop budget of the pod: the sidecar's own grace plus 10 s for the kubelet. */}}
{{- define "gepa-sidecar.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdownGraceSeconds) 10 }}
{{- end }}

{{/* The CONFIG_FILE the sidecar reads: the `prompts` values block. */}}
{{- define "gepa-sidecar.config" -}}
{{- dict "prompts" .Values.prompts | toYaml }}
{{- end }}

{{- define "gepa-sidecar.usesPostgres" -}}
{{- if or .Values.database.existingSecret.name (hasPrefix "postgresql" .Values.database.url) }}true{{ end }}
{{- end }}

{{/* Combinations the schema cannot express; each stops the render with one line. */}}
{{- define "gepa-sidecar.validate" -}}
{{- $v := .Values }}
{{- if not $v.kafka.bootstrapServers }}
{{- fail "gepa-sidecar: kafka.bootstrapServers is required: the Kafka cluster your chatbot's traffic goes to (--set kafka.bootstrapServers=kafka:9092)" }}
{{- end }}
{{- if not $v.models.judge }}
{{- fail "gepa-sidecar: models.judge is required: a litellm model string (--set models.judge=openai/gpt-4o-mini)" }}
{{- end }}
{{- if and $v.database.url $v.database.existingSecret.name }}
{{- fail "gepa-sidecar: give database.url or database.existingSecret.name, not both" }}
{{- end }}
{{- if and (eq $v.mode "standalone") (gt (int $v.replicaCount) 1) (not (include "gepa-sidecar.usesPostgres" .)) }}
{{- fail (printf "gepa-sidecar: replicaCount %d needs PostgreSQL (database.url or database.existingSecret.name): with SQLite each pod keeps its own database" (int $v.replicaCount)) }}
{{- end }}
{{- $sasl := hasPrefix "SASL_" $v.kafka.securityProtocol }}
{{- if and $sasl (not $v.kafka.saslMechanism) }}
{{- fail (printf "gepa-sidecar: kafka.securityProtocol %s needs kafka.saslMechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $v.kafka.securityProtocol) }}
{{- end }}
{{- if and $v.kafka.saslMechanism (not $sasl) }}
{{- fail (printf "gepa-sidecar: kafka.saslMechanism needs kafka.securityProtocol SASL_PLAINTEXT or SASL_SSL (it is %s)" $v.kafka.securityProtocol) }}
{{- end }}
{{- if and $v.kafka.caSecret.name (not (hasSuffix "SSL" $v.kafka.securityProtocol)) }}
{{- fail (printf "gepa-sidecar: kafka.caSecret needs kafka.securityProtocol SSL or SASL_SSL (it is %s)" $v.kafka.securityProtocol) }}
{{- end }}
{{- if and (eq $v.mode "embedded") $v.metrics.serviceMonitor.enabled }}
{{- fail "gepa-sidecar: metrics.serviceMonitor needs mode standalone (embedded mode has no Service: use metrics.podMonitor)" }}
{{- end }}
{{- $names := list }}
{{- range $v.prompts }}
{{- if has .name $names }}
{{- fail (printf "gepa-sidecar: prompts: the name %s is given twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}
