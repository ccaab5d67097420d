{{/*
Names.
*/}}
{{- define "presence.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "presence.fullname" -}}
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

{{/* The namespace of every namespaced object: namespaceOverride (for
umbrella charts that deploy into another namespace) or the release's. */}}
{{- define "presence.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether the cluster serves an API (group/version/kind): the
Prometheus Operator's kinds are rendered only where their CRDs exist
(`helm template` needs --api-versions to see them). */}}
{{- define "presence.hasApi" -}}
{{- if .ctx.Capabilities.APIVersions.Has .api }}true{{ end }}
{{- end }}

{{- define "presence.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels: every object carries the common ones; selectors use the stable
subset. Components: "all", "gateway", "aggregator".
*/}}
{{- define "presence.labels" -}}
helm.sh/chart: {{ include "presence.chart" . }}
{{ include "presence.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: presence
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "presence.selectorLabels" -}}
app.kubernetes.io/name: {{ include "presence.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of one component: (dict "ctx" $ "component" "gateway") */}}
{{- define "presence.componentSelectorLabels" -}}
{{ include "presence.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* True ("true") in cluster mode, empty in embedded mode. */}}
{{- define "presence.cluster" -}}
{{- if ne .Values.redis.mode "none" }}true{{ end }}
{{- end }}

{{/* "split" only in cluster mode; embedded is always "all". */}}
{{- define "presence.roles" -}}
{{- if and (include "presence.cluster" .) (eq .Values.roles "split") }}split{{ else }}all{{ end }}
{{- end }}

{{/* The component that serves clients: "all" or "gateway". */}}
{{- define "presence.clientComponent" -}}
{{- if eq (include "presence.roles" .) "split" }}gateway{{ else }}all{{ end }}
{{- end }}

{{/* Name of a component's Deployment: (dict "ctx" $ "component" "gateway") */}}
{{- define "presence.componentName" -}}
{{- if eq .component "all" }}
{{- include "presence.fullname" .ctx }}
{{- else }}
{{- printf "%s-%s" (include "presence.fullname" .ctx | trunc 52 | trimSuffix "-") .component }}
{{- end }}
{{- end }}

{{- define "presence.clientDeploymentName" -}}
{{- include "presence.componentName" (dict "ctx" . "component" (include "presence.clientComponent" .)) }}
{{- end }}

{{- define "presence.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "presence.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "presence.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Secrets. The chart's own Secret holds whatever was given as a value (JWT
secret or public key, Redis passwords); existingSecret values point at the
operator's own Secret instead.
*/}}
{{- define "presence.secretName" -}}
{{- include "presence.fullname" . }}
{{- end }}

{{- define "presence.jwtPublicKeyMode" -}}
{{- if ne .Values.jwt.algorithm "hs256" }}true{{ end }}
{{- end }}

{{- define "presence.jwtSecretName" -}}
{{- default (include "presence.secretName" .) .Values.jwt.existingSecret }}
{{- end }}

{{- define "presence.jwtSecretKey" -}}
{{- if .Values.jwt.existingSecret }}
{{- default (ternary "jwt-public-key.pem" "jwt-secret" (eq (include "presence.jwtPublicKeyMode" .) "true")) .Values.jwt.existingSecretKey }}
{{- else }}
{{- ternary "jwt-public-key.pem" "jwt-secret" (eq (include "presence.jwtPublicKeyMode" .) "true") }}
{{- end }}
{{- end }}

{{/* The chart stores (or generates) the HS256 secret itself. */}}
{{- define "presence.jwtChartSecret" -}}
{{- if and (not (include "presence.jwtPublicKeyMode" .)) (not .Values.jwt.existingSecret) (or .Values.jwt.secret (include "presence.cluster" .)) }}true{{ end }}
{{- end }}

{{/* Any HS256 secret is handed to the pods (chart's or existing). */}}
{{- define "presence.jwtSecretEnv" -}}
{{- if and (not (include "presence.jwtPublicKeyMode" .)) (or .Values.jwt.existingSecret (include "presence.jwtChartSecret" .)) }}true{{ end }}
{{- end }}

{{- define "presence.redisSecretName" -}}
{{- default (include "presence.secretName" .) .Values.redis.existingSecret }}
{{- end }}

{{/* A Redis password reaches the pod (as REDIS_PASSWORD). */}}
{{- define "presence.redisPassword" -}}
{{- if and (include "presence.cluster" .) (not .Values.redis.url) (not .Values.redis.existingSecretUrlKey) (or (and .Values.redis.existingSecret .Values.redis.existingSecretPasswordKey) (and (not .Values.redis.existingSecret) .Values.redis.password)) }}true{{ end }}
{{- end }}

{{/* A sentinel password reaches the pod (as REDIS_SENTINEL_PASSWORD). */}}
{{- define "presence.sentinelPassword" -}}
{{- if and (eq .Values.redis.mode "sentinel") (not .Values.redis.url) (not .Values.redis.existingSecretUrlKey) (or (and .Values.redis.existingSecret .Values.redis.sentinel.existingSecretPasswordKey) (and (not .Values.redis.existingSecret) .Values.redis.sentinel.password)) }}true{{ end }}
{{- end }}

{{/* The chart's Secret has something to hold. */}}
{{- define "presence.chartSecret" -}}
{{- if or (include "presence.jwtChartSecret" .) (and (include "presence.jwtPublicKeyMode" .) (not .Values.jwt.existingSecret)) (and (include "presence.redisPassword" .) (not .Values.redis.existingSecret)) (and (include "presence.sentinelPassword" .) (not .Values.redis.existingSecret)) }}true{{ end }}
{{- end }}

{{/*
The Redis URL, with $(REDIS_PASSWORD) and $(REDIS_SENTINEL_PASSWORD) for
Kubernetes to substitute from the env vars defined before it.
*/}}
{{- define "presence.redisUrl" -}}
{{- $r := .Values.redis }}
{{- if $r.url }}
{{- $r.url }}
{{- else }}
{{- $auth := "" }}
{{- if include "presence.redisPassword" . }}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $r.username }}
{{- else if $r.username }}
{{- $auth = printf "%s@" $r.username }}
{{- end }}
{{- $tls := ternary "rediss" "redis" (eq (toString $r.tls) "true") }}
{{- if eq $r.mode "standalone" }}
{{- printf "%s://%s%s:%v/%v" $tls $auth $r.standalone.host $r.standalone.port $r.standalone.db }}
{{- else if eq $r.mode "sentinel" }}
{{- $query := list }}
{{- if $r.sentinel.username }}{{ $query = append $query (printf "sentinel_username=%s" $r.sentinel.username) }}{{ end }}
{{- if include "presence.sentinelPassword" . }}{{ $query = append $query "sentinel_password=$(REDIS_SENTINEL_PASSWORD)" }}{{ end }}
{{- printf "%s+sentinel://%s%s/%s/%v" $tls $auth (join "," $r.sentinel.hosts) $r.sentinel.masterName $r.sentinel.db }}
{{- if $query }}?{{ join "&" $query }}{{ end }}
{{- else if eq $r.mode "cluster" }}
{{- printf "%s+cluster://%s%s" $tls $auth (join "," $r.cluster.nodes) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuse combinations that cannot work, at render time.
*/}}
{{- define "presence.validate" -}}
{{- $modes := list "none" "standalone" "sentinel" "cluster" }}
{{- if not (has .Values.redis.mode $modes) }}
{{- fail (printf "redis.mode must be one of %s, not %q" (join ", " $modes) .Values.redis.mode) }}
{{- end }}
{{- if not (has .Values.roles (list "all" "split")) }}
{{- fail (printf "roles must be \"all\" or \"split\", not %q" .Values.roles) }}
{{- end }}
{{- if not (has .Values.jwt.algorithm (list "hs256" "rs256" "eddsa")) }}
{{- fail (printf "jwt.algorithm must be hs256, rs256 or eddsa, not %q" .Values.jwt.algorithm) }}
{{- end }}
{{- if and (include "presence.jwtPublicKeyMode" .) (not .Values.jwt.publicKey) (not .Values.jwt.existingSecret) }}
{{- fail "jwt.algorithm rs256/eddsa needs jwt.publicKey or jwt.existingSecret (holding the PEM public key)" }}
{{- end }}
{{- if and .Values.jwt.secret (lt (len .Values.jwt.secret) 32) }}
{{- fail "jwt.secret must be at least 32 bytes" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor and metrics.podMonitor both scrape every pod (every series twice): enable one" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.parentRefs needs at least one Gateway to attach to" }}
{{- end }}
{{- if and .Values.redis.existingSecretUrlKey (not .Values.redis.existingSecret) }}
{{- fail "redis.existingSecretUrlKey names a key of redis.existingSecret, which is empty" }}
{{- end }}
{{- if not (include "presence.cluster" .) }}
{{- if eq .Values.roles "split" }}
{{- fail "roles: split needs Redis (redis.mode standalone, sentinel or cluster): embedded mode runs every role in one pod" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling needs Redis (redis.mode standalone, sentinel or cluster): embedded mode runs exactly one pod" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.redis.mode "sentinel") (not .Values.redis.url) (not .Values.redis.existingSecretUrlKey) (not .Values.redis.sentinel.hosts) }}
{{- fail "redis.sentinel.hosts needs at least one sentinel" }}
{{- end }}
{{- if and (eq .Values.redis.mode "cluster") (not .Values.redis.url) (not .Values.redis.existingSecretUrlKey) (not .Values.redis.cluster.nodes) }}
{{- fail "redis.cluster.nodes needs at least one seed node" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) (not .Values.autoscaling.connectionsPerPod.enabled) }}
{{- fail "autoscaling needs a metric: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or connectionsPerPod" }}
{{- end }}
{{- end }}

{{/*
The env of a presenced container: (dict "root" $ "component" "gateway").
*/}}
{{- define "presence.env" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $cluster := include "presence.cluster" $root }}
{{- if $cluster }}
- name: PRESENCE_ROLE
  value: {{ $component | quote }}
# Unique and stable for the pod's life: its name.
- name: PRESENCE_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if include "presence.redisPassword" $root }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "presence.redisSecretName" $root }}
      key: {{ ternary $root.Values.redis.existingSecretPasswordKey "redis-password" (ne $root.Values.redis.existingSecret "") }}
{{- end }}
{{- if include "presence.sentinelPassword" $root }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "presence.redisSecretName" $root }}
      key: {{ ternary $root.Values.redis.sentinel.existingSecretPasswordKey "sentinel-password" (ne $root.Values.redis.existingSecret "") }}
{{- end }}
{{- if and $root.Values.redis.existingSecret $root.Values.redis.existingSecretUrlKey }}
- name: PRESENCE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.redis.existingSecret }}
      key: {{ $root.Values.redis.existingSecretUrlKey }}
{{- else }}
- name: PRESENCE_REDIS_URL
  value: {{ include "presence.redisUrl" $root | quote }}
{{- end }}
{{- end }}
{{- if include "presence.jwtPublicKeyMode" $root }}
- name: PRESENCE_JWT_PUBLIC_KEY
  value: /etc/presence/jwt/public.pem
- name: PRESENCE_JWT_ALGORITHM
  value: {{ $root.Values.jwt.algorithm | quote }}
{{- else if include "presence.jwtSecretEnv" $root }}
- name: PRESENCE_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "presence.jwtSecretName" $root }}
      key: {{ include "presence.jwtSecretKey" $root }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
