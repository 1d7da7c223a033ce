{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (list $ "gateway") */}}
{{- define "tollgate.selector" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tollgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "tollgate.secretName" -}}
{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "tollgate.fullname" .)) }}
{{- end -}}

{{/* librdkafka properties shared by every Kafka client of both services. */}}
{{- define "tollgate.kafkaClientProperties" -}}
{{- $k := .Values.kafka -}}
{{- $p := dict -}}
{{- $protocol := "PLAINTEXT" -}}
{{- if and $k.tls.enabled $k.sasl.enabled }}{{ $protocol = "SASL_SSL" }}
{{- else if $k.tls.enabled }}{{ $protocol = "SSL" }}
{{- else if $k.sasl.enabled }}{{ $protocol = "SASL_PLAINTEXT" }}{{ end -}}
{{- $_ := set $p "security.protocol" $protocol -}}
{{- if $k.sasl.enabled -}}
{{- if not $k.sasl.username }}{{ fail "kafka.sasl.enabled needs kafka.sasl.username" }}{{ end -}}
{{- $_ := set $p "sasl.mechanism" $k.sasl.mechanism -}}
{{- $_ := set $p "sasl.username" $k.sasl.username -}}
{{- $_ := set $p "sasl.password" "os.environ/TOLLGATE_KAFKA_SASL_PASSWORD" -}}
{{- end -}}
{{- if and $k.tls.enabled $k.tls.caSecret -}}
{{- $_ := set $p "ssl.ca.location" (printf "/etc/tollgate/kafka-ca/%s" $k.tls.caKey) -}}
{{- end -}}
{{- toYaml (mergeOverwrite $p $k.clientProperties) -}}
{{- end -}}

{{/* The database section of both services' configs. */}}
{{- define "tollgate.database" -}}
{{- $c := .Values.cassandra -}}
contact_points: {{ toJson $c.contactPoints }}
keyspace: {{ $c.keyspace }}
# The set-up Job applies the schema, with the keyspace's replication of values.yaml.
create_schema: false
{{- if $c.localDatacenter }}
local_datacenter: {{ $c.localDatacenter | quote }}
{{- end }}
{{- if $c.username }}
username: {{ $c.username | quote }}
password: os.environ/TOLLGATE_CQL_PASSWORD
{{- end }}
{{- if $c.tls.enabled }}
tls:
  {{- if $c.tls.caSecret }}
  ca_file: /etc/tollgate/cql-ca/{{ $c.tls.caKey }}
  {{- else }}
  {}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Volumes for the CA certificates, shared by the pods that talk to Kafka or the database. */}}
{{- define "tollgate.caVolumes" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- if and .Values.cassandra.tls.enabled .Values.cassandra.tls.caSecret }}
- name: cql-ca
  secret:
    secretName: {{ .Values.cassandra.tls.caSecret }}
{{- end }}
{{- end -}}

{{- define "tollgate.caMounts" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/tollgate/kafka-ca
  readOnly: true
{{- end }}
{{- if and .Values.cassandra.tls.enabled .Values.cassandra.tls.caSecret }}
- name: cql-ca
  mountPath: /etc/tollgate/cql-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* The checks values must pass; every template that depends on them includes this. */}}
{{- define "tollgate.validate" -}}
{{- $partitions := int .Values.kafka.topics.usage.partitions -}}
{{- if gt (int .Values.consumer.replicaCount) $partitions -}}
{{- fail (printf "consumer.replicaCount (%d) exceeds the usage topic's partitions (kafka.topics.usage.partitions = %d): consumers beyond the partition count stay idle" (int .Values.consumer.replicaCount) $partitions) -}}
{{- end -}}
{{- if gt $partitions 64 -}}
{{- fail (printf "kafka.topics.usage.partitions (%d) exceeds 64, the most the spend readers sum (docs/design.md §10)" $partitions) -}}
{{- end -}}
{{- if lt (int .Values.kafka.replicationFactor) (int .Values.kafka.minInsyncReplicas) -}}
{{- fail "kafka.replicationFactor must be at least kafka.minInsyncReplicas" -}}
{{- end -}}
{{- if and .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.autoscaling.minReplicas) (int .Values.gateway.autoscaling.maxReplicas)) -}}
{{- fail "gateway.autoscaling.minReplicas exceeds maxReplicas" -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) (lt (len .Values.secrets.keyHashSecret) 32) -}}
{{- fail "secrets.keyHashSecret must be at least 32 bytes (or name secrets.existingSecret)" -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) .Values.kafka.sasl.enabled (not .Values.secrets.kafkaSaslPassword) -}}
{{- fail "kafka.sasl.enabled needs secrets.kafkaSaslPassword (or secrets.existingSecret)" -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) .Values.cassandra.username (not .Values.secrets.cassandraPassword) -}}
{{- fail "cassandra.username needs secrets.cassandraPassword (or secrets.existingSecret)" -}}
{{- end -}}
{{- end -}}

{{/* gateway.replicas: the count rate limits and lease slices are divided by. */}}
{{- define "tollgate.gatewayReplicas" -}}
{{- if .Values.gateway.autoscaling.enabled }}{{ .Values.gateway.autoscaling.maxReplicas }}{{ else }}{{ .Values.gateway.replicaCount }}{{ end -}}
{{- end -}}

{{/* Seconds a stopping gateway may take: preStop sleep, requests in flight, lease hand-back
(3 s, gateway/src/lib.rs LEASE_HAND_BACK), event flush, and 5 s to spare. */}}
{{- define "tollgate.gatewayGrace" -}}
{{- $d := .Values.gateway.drain -}}
{{- add (int $d.preStopSleepSeconds) (int $d.shutdownTimeoutSeconds) 3 (int $d.flushTimeoutSeconds) 5 -}}
{{- end -}}
