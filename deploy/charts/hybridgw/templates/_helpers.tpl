{{- define "hybridgw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hybridgw.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hybridgw.labels" -}}
{{ include "hybridgw.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hybridgw
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "hybridgw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hybridgw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The gateway config file. The chart owns the keys that must agree with the pod spec
(listen ports, limits.shutdown_timeout); everything else comes from .Values.config.
*/}}
{{- define "hybridgw.configFile" -}}
{{- $limits := mustMergeOverwrite (deepCopy (default (dict) .Values.config.limits)) (dict "shutdown_timeout" (printf "%ds" (int .Values.shutdownTimeoutSeconds))) -}}
{{- $owned := dict
      "listen" (printf "0.0.0.0:%d" (int .Values.ports.http))
      "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin))
      "limits" $limits -}}
{{- $cfg := mustMergeOverwrite (deepCopy .Values.config) $owned -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
Guard rails, rendered (as nothing) by deployment.yaml. A SQLite ledger is a file on the pod's
ephemeral disk: with more than one replica each one enforces its own budgets and rate limits and
keeps its own spend ledger, which dies with the pod. Refuse that unless asked for explicitly.
*/}}
{{- define "hybridgw.validate" -}}
{{- $db := dig "ledger" "database" "" (default (dict) .Values.config) | toString | trim | lower -}}
{{- $maxReplicas := int .Values.replicaCount -}}
{{- if .Values.hpa.enabled -}}
{{- $maxReplicas = int .Values.hpa.maxReplicas -}}
{{- end -}}
{{- if and (hasPrefix "sqlite" $db) (gt $maxReplicas 1) (not .Values.allowSqliteWithReplicas) -}}
{{- fail (printf "config.ledger.database is SQLite but up to %d gateway replicas can run (%s): each replica would keep its own budgets, rate limits and spend ledger on its own ephemeral disk. Use PostgreSQL (config.ledger.database: \"${HYBRIDGW_DATABASE_URL}\" with the URL in a Secret listed in secretEnv; see values.yaml), or run one replica (replicaCount: 1 and hpa.enabled: false), or set allowSqliteWithReplicas: true to accept per-replica budgets and limits." $maxReplicas (ternary "hpa.maxReplicas" "replicaCount" (.Values.hpa.enabled | default false))) -}}
{{- end -}}
{{- end -}}
