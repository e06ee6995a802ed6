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
{{- range $opt := list "sink" "bridge" "mqtt" -}}
{{- if (get $.Values $opt).enabled -}}
{{- $stages = append $stages $opt -}}
{{- end -}}
{{- end -}}
{{- toJson $stages -}}
{{- end -}}

{{/* The metrics/health port of one stage: (dict "root" $ "stage" "worker") */}}
{{- define "inspector.port" -}}
{{- $o := .root.Values.config.observe -}}
{{- if eq .stage "sink" -}}
{{- .root.Values.config.lake.port -}}
{{- else if eq .stage "bridge" -}}
{{- (.root.Values.config.bridge | default dict).port -}}
{{- else if eq .stage "mqtt" -}}
{{- (.root.Values.config.mqtt | default dict).metrics_port -}}
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
{{- $files := .Values.secret.files | default list -}}
{{- if .Values.bridge.enabled -}}
{{- $b := required "config.bridge is required with bridge.enabled (its port and targets)" $c.bridge -}}
{{- $p := int (required "config.bridge.port is required with bridge.enabled (the bridge's probe port)" $b.port) -}}
{{- if or (lt $p 1) (gt $p 65535) -}}
{{- fail (printf "config.bridge.port must be a port 1-65535 on Kubernetes (its probes and /metrics), got %v" $b.port) -}}
{{- end -}}
{{- if not $b.targets -}}
{{- fail "config.bridge.targets is empty with bridge.enabled: inspector bridge would refuse to start (nothing to deliver line commands to)" -}}
{{- end -}}
{{- range $t := $b.targets -}}
{{- if and (eq (toString $t.kind) "mqtt") (gt (int $.Values.bridge.replicas) 1) -}}
{{- fail (printf "bridge.replicas > 1 with the MQTT target %s: its client_id is one per connected process (the broker drops the older session); run one bridge" $t.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.mqtt.enabled -}}
{{- $m := required "config.mqtt is required with mqtt.enabled (the broker: mqtt.host at least)" $c.mqtt -}}
{{- $p := int (required "config.mqtt.metrics_port is required with mqtt.enabled (inspector mqtt's probe port)" $m.metrics_port) -}}
{{- if or (lt $p 1) (gt $p 65535) -}}
{{- fail (printf "config.mqtt.metrics_port must be a port 1-65535 on Kubernetes (its probes and /metrics), got %v" $m.metrics_port) -}}
{{- end -}}
{{- if gt (int .Values.mqtt.replicas) 1 -}}
{{- fail "mqtt.replicas > 1: config.mqtt.client_id (and the Sparkplug edge node) is one per connected process, the broker drops the older session; run one inspector mqtt" -}}
{{- end -}}
{{- end -}}
{{- /* Files of the MQTT and OPC UA clients of the stages that run (CA, certificates,
private keys): the pods have them only from secret.files, under /etc/inspector/secrets/. */ -}}
{{- $paths := dict -}}
{{- if and .Values.mqtt.enabled $c.mqtt -}}
{{- range $k := list "ca_file" "cert_file" "key_file" -}}
{{- $_ := set $paths (printf "config.mqtt.%s" $k) (get $.Values.config.mqtt $k) -}}
{{- end -}}
{{- end -}}
{{- range $i, $t := (and .Values.bridge.enabled $c.bridge | default dict).targets -}}
{{- range $k := list "ca_file" "cert_file" "key_file" -}}
{{- $_ := set $paths (printf "config.bridge.targets[%d].%s" $i $k) (get $t $k) -}}
{{- end -}}
{{- range $k := list "certificate" "private_key" "server_certificate" -}}
{{- $_ := set $paths (printf "config.bridge.targets[%d].security.%s" $i $k) (get ($t.security | default dict) $k) -}}
{{- end -}}
{{- end -}}
{{- range $path, $v := $paths -}}
{{- if $v -}}
{{- $f := toString $v -}}
{{- if not (and (hasPrefix "/etc/inspector/secrets/" $f) (has (trimPrefix "/etc/inspector/secrets/" $f) $files)) -}}
{{- fail (printf "%s is %s: certificates and keys reach the pods only through secret.files, as /etc/inspector/secrets/<key> with <key> listed in secret.files" $path $f) -}}
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
{{- $secrets := dict "config.kafka.sasl_password" $kafka.sasl_password "config.kafka.ssl_key_password" $kafka.ssl_key_password "config.redis.password" ($c.redis).password "config.observe.dashboard_token" $o.dashboard_token "config.lake.s3.secret_access_key" (dig "lake" "s3" "secret_access_key" "" $c) -}}
{{- $_ := set $secrets "config.mqtt.password" ($c.mqtt | default dict).password -}}
{{- range $i, $t := ($c.bridge | default dict).targets -}}
{{- $_ := set $secrets (printf "config.bridge.targets[%d].password" $i) $t.password -}}
{{- $_ := set $secrets (printf "config.bridge.targets[%d].security.private_key_password" $i) (get ($t.security | default dict) "private_key_password") -}}
{{- end -}}
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
{{- $reg := toString (dig "learn" "registry" "uri" "" $c | default "") -}}
{{- if and (regexMatch "^[a-z0-9+]+://[^/]*:[^/@]*@" $reg) (not (contains "${" $reg)) -}}
{{- fail "config.learn.registry.uri holds a password: give MLflow its credentials through secret.env (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)" -}}
{{- end -}}
{{- range $name, $m := $c.models -}}
{{- if and (hasPrefix "models:/" (toString $m.path)) (not (hasPrefix "http" $reg)) -}}
{{- fail (printf "config.models.%s.path follows the registry (%s): set config.learn.registry.uri to your MLflow server (http(s)://...); an embedded registry would be an empty file in each pod" $name $m.path) -}}
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
