{{/* Names and labels. */}}
{{- define "inspector.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inspector.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inspector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "inspector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one stage: (dict "root" $ "stage" "worker") */}}
{{- define "inspector.selector" -}}
app.kubernetes.io/name: {{ include "inspector.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{/* The stages this release runs, as a JSON list (fromJsonArray to use it). */}}
{{- define "inspector.stages" -}}
{{- $stages := list "ingest" "worker" "act" "dashboard" -}}
{{- if .Values.sink.enabled -}}
{{- $stages = append $stages "sink" -}}
{{- end -}}
{{- toJson $stages -}}
{{- end -}}

{{/* The metrics/health port of one stage: (dict "root" $ "stage" "worker") */}}
{{- define "inspector.port" -}}
{{- $o := .root.Values.config.observe -}}
{{- if eq .stage "sink" -}}
{{- .root.Values.config.lake.port -}}
{{- else -}}
{{- get $o (printf "%s_port" .stage) -}}
{{- end -}}
{{- end -}}

{{- define "inspector.image" -}}
{{- $root := .root -}}
{{- $tag := default $root.Chart.AppVersion (default $root.Values.image.tag .tag) -}}
{{- if $root.Values.image.registry -}}
{{- printf "%s/%s:%s" $root.Values.image.registry $root.Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $root.Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Checks on the plant config that only matter on Kubernetes, or that KEDA depends on;
the rest is `inspector config check`'s job. Each failure is one line.
*/}}
{{- define "inspector.validate" -}}
{{- $c := .Values.config -}}
{{- $o := required "config.observe is required (ports and bind addresses of the probes)" $c.observe -}}
{{- range $k := list "metrics_host" "dashboard_host" -}}
{{- if not (has (get $o $k) (list "0.0.0.0" "::")) -}}
{{- fail (printf "config.observe.%s must be 0.0.0.0 (or ::) on Kubernetes: the kubelet probes the pod IP, got %v" $k (get $o $k)) -}}
{{- end -}}
{{- end -}}
{{- range $k := list "ingest_port" "worker_port" "act_port" "dashboard_port" -}}
{{- $p := int (required (printf "config.observe.%s is required (the stage's probe port)" $k) (get $o $k)) -}}
{{- if or (lt $p 1) (gt $p 65535) -}}
{{- fail (printf "config.observe.%s must be a port 1-65535 on Kubernetes (its probes and /metrics), got %v" $k (get $o $k)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.sink.enabled -}}
{{- $lake := required "config.lake is required with sink.enabled (the lakehouse sink's settings)" $c.lake -}}
{{- $p := int (required "config.lake.port is required with sink.enabled (the sink's probe port)" $lake.port) -}}
{{- if or (lt $p 1) (gt $p 65535) -}}
{{- fail (printf "config.lake.port must be a port 1-65535 on Kubernetes (its probes and /metrics), got %v" $lake.port) -}}
{{- end -}}
{{- if .Values.sink.persistence.enabled -}}
{{- if not (isAbs (toString $lake.data_dir)) -}}
{{- fail (printf "config.lake.data_dir must be an absolute path with sink.persistence (the volume is mounted there), got %v" $lake.data_dir) -}}
{{- end -}}
{{- if gt (int .Values.sink.replicas) 1 -}}
{{- fail "sink.replicas > 1 needs a shared catalog and warehouse (config.lake.catalog_uri, config.lake.warehouse) and sink.persistence.enabled=false: a ReadWriteOnce volume and a SQLite catalog take one sink" -}}
{{- end -}}
{{- end -}}
{{- range $k := list "catalog_uri" "warehouse" -}}
{{- $u := toString (get $lake $k | default "") -}}
{{- if and (regexMatch "^[a-z0-9+]+://[^/]*:[^/@]*@" $u) (not (contains "${" $u)) -}}
{{- fail (printf "config.lake.%s holds a password: make it a ${NAME} reference to secret.env (e.g. ${LAKE_CATALOG_URI})" $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $kafka := required "config.kafka is required" $c.kafka -}}
{{- $bs := required "config.kafka.bootstrap_servers is required (KEDA reads it)" $kafka.bootstrap_servers -}}
{{- if contains "${" $bs -}}
{{- fail "config.kafka.bootstrap_servers must be literal: KEDA reads it from the ScaledObject, not through ${...}" -}}
{{- end -}}
{{- $_ := required "config.topics.partitions is required (KEDA's maxReplicaCount)" ($c.topics).partitions -}}
{{- $_ := required "config.topics.prefix is required (the frames topic KEDA watches)" ($c.topics).prefix -}}
{{- $_ := required "config.worker.group_id is required (the consumer group KEDA watches)" ($c.worker).group_id -}}
{{- $secrets := dict "config.kafka.sasl_password" $kafka.sasl_password "config.kafka.ssl_key_password" $kafka.ssl_key_password "config.redis.password" ($c.redis).password "config.observe.dashboard_token" $o.dashboard_token -}}
{{- range $i, $wf := $c.workflows -}}
{{- range $j, $s := $wf.secrets -}}
{{- $_ := set $secrets (printf "config.workflows[%d].secrets[%d]" $i $j) $s -}}
{{- end -}}
{{- end -}}
{{- range $path, $v := $secrets -}}
{{- if and $v (not (regexMatch `^\$\{[A-Za-z_][A-Za-z0-9_]*\}$` (toString $v))) -}}
{{- fail (printf "%s must be a ${NAME} reference to secret.env, not a value: secrets live in the Secret %s, never in the ConfigMap" $path $.Values.secret.name) -}}
{{- end -}}
{{- end -}}
{{- $url := toString (($c.redis).url | default "") -}}
{{- if and (contains "@" $url) (not (contains "${" $url)) -}}
{{- fail "config.redis.url holds credentials: make it a ${NAME} reference to secret.env (e.g. ${REDIS_URL})" -}}
{{- end -}}
{{- range $i, $ln := $c.lines -}}
{{- range $j, $cam := $ln.cameras -}}
{{- $u := toString $cam.url -}}
{{- if and (regexMatch "^[a-z]+://[^/]*:[^/@]*@" $u) (not (contains "${" $u)) -}}
{{- fail (printf "config.lines[%d].cameras[%d].url holds a password: put it in the Secret and write ${NAME} in its place" $i $j) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
