{{/* Names and labels shared by every object. */}}
{{- define "kubeward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeward.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "kubeward.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kubeward.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* kubeward.component: "<fullname>-<component>"; call with (list $ "shim") */}}
{{- define "kubeward.component" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "kubeward.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeward.selectorLabels" -}}
{{- $root := index . 0 }}
app.kubernetes.io/name: {{ include "kubeward.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "kubeward.labels" -}}
{{- $root := index . 0 }}
{{- include "kubeward.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: kubeward
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- end -}}

{{- define "kubeward.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/kubeward-%s:%s" $root.Values.image.registry (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) -}}
{{- end -}}

{{- define "kubeward.keysSecret" -}}
{{- default (include "kubeward.component" (list . "keys")) .Values.keys.existingSecret -}}
{{- end -}}

{{/* Kafka settings of one component as environment variables; call with (list $ "shim" "SHIM"). */}}
{{- define "kubeward.kafkaEnv" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $p := printf "KUBEWARD_%s_" (index . 2) -}}
{{- $k := $root.Values.kafka -}}
{{- $cred := index $k.credentials $c -}}
- name: {{ $p }}BOOTSTRAP
  value: {{ $k.bootstrap | quote }}
- name: {{ $p }}KAFKA__PROTOCOL
  value: {{ $k.protocol | quote }}
{{- if hasPrefix "SASL" $k.protocol }}
- name: {{ $p }}KAFKA__MECHANISM
  value: {{ $k.mechanism | quote }}
- name: {{ $p }}KAFKA__USERNAME
  valueFrom: {secretKeyRef: {name: {{ required (printf "kafka.credentials.%s.secret is required with protocol %s" $c $k.protocol) $cred.secret | quote }}, key: username}}
- name: {{ $p }}KAFKA__PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $cred.secret | quote }}, key: password}}
{{- end }}
{{- if or (hasSuffix "SSL" $k.protocol) }}
{{- if $k.caSecret }}
- name: {{ $p }}KAFKA__CA_FILE
  value: /etc/kubeward/kafka-ca/ca.crt
{{- end }}
- name: {{ $p }}KAFKA__CHECK_HOSTNAME
  value: {{ $k.checkHostname | quote }}
{{- if $cred.tlsSecret }}
- name: {{ $p }}KAFKA__CERT_FILE
  value: /etc/kubeward/kafka-client/tls.crt
- name: {{ $p }}KAFKA__KEY_FILE
  value: /etc/kubeward/kafka-client/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "kubeward.kafkaVolumeMounts" -}}
{{- $root := index . 0 -}}
{{- $k := $root.Values.kafka -}}
{{- $cred := index $k.credentials (index . 1) -}}
{{- if and (hasSuffix "SSL" $k.protocol) $k.caSecret }}
- {name: kafka-ca, mountPath: /etc/kubeward/kafka-ca, readOnly: true}
{{- end }}
{{- if and (hasSuffix "SSL" $k.protocol) $cred.tlsSecret }}
- {name: kafka-client, mountPath: /etc/kubeward/kafka-client, readOnly: true}
{{- end }}
{{- end -}}

{{- define "kubeward.kafkaVolumes" -}}
{{- $root := index . 0 -}}
{{- $k := $root.Values.kafka -}}
{{- $cred := index $k.credentials (index . 1) -}}
{{- if and (hasSuffix "SSL" $k.protocol) $k.caSecret }}
- name: kafka-ca
  secret: {secretName: {{ $k.caSecret | quote }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- if and (hasSuffix "SSL" $k.protocol) $cred.tlsSecret }}
- name: kafka-client
  secret: {secretName: {{ $cred.tlsSecret | quote }}}
{{- end }}
{{- end -}}

{{/* Identity settings shared by the collector and the shim; call with (list $ "SHIM"). */}}
{{- define "kubeward.identityEnv" -}}
{{- $root := index . 0 -}}
{{- $p := printf "KUBEWARD_%s_IDENTITY__" (index . 1) -}}
{{- $i := $root.Values.identity -}}
- name: {{ $p }}PRINCIPAL_KEY
  valueFrom: {secretKeyRef: {name: {{ include "kubeward.keysSecret" $root | quote }}, key: principal-key}}
- name: {{ $p }}TRUSTED_HOPS
  value: {{ $i.trustedHops | quote }}
{{- with $i.trustedDataPlanes }}
- name: {{ $p }}TRUSTED_DATA_PLANES
  value: {{ toJson . | quote }}
{{- end }}
- name: {{ $p }}INTERNAL_NETWORKS
  value: {{ $i.internalNetworks | toJson | quote }}
- name: {{ $p }}POD_WATCH
  value: {{ $i.podWatch | quote }}
{{- if $i.jwtSecret }}
- name: {{ $p }}JWT_HS256_SECRET
  valueFrom: {secretKeyRef: {name: {{ $i.jwtSecret | quote }}, key: hs256}}
{{- end }}
{{- end -}}

{{- define "kubeward.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "kubeward.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* The keys of the generated Secret as JSON (key -> base64 value), drawn once per render so that the Secret and
     the pods' checksum agree: the live Secret's keys when helm can read it (upgrade), else new random keys (the
     first install, and every render without a cluster: helm template, Argo CD). */}}
{{- define "kubeward.generatedKeys" -}}
{{- $memo := "kubewardGeneratedKeys" -}}
{{- if not (hasKey .Values $memo) -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "kubeward.component" (list . "keys")) -}}
{{- $data := dict -}}
{{- range $key := list "verdict-key" "principal-key" "object-id-key" "admin-token" -}}
{{- $_ := set $data $key (index ($old.data | default dict) $key | default (randAlphaNum 48 | b64enc)) -}}
{{- end -}}
{{- $_ := set .Values $memo (toJson $data) -}}
{{- end -}}
{{- index .Values $memo -}}
{{- end -}}

{{/* checksum/keys for the pod templates: pods roll when the keys change. The generated Secret's keys are known
     at render time; an existingSecret's only when helm can read it (install/upgrade), else nothing is rendered. */}}
{{- define "kubeward.keysChecksum" -}}
{{- if .Values.keys.existingSecret -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace .Values.keys.existingSecret -}}
{{- if $live -}}
{{- $data := dict -}}
{{- range $key := list "verdict-key" "principal-key" "object-id-key" "admin-token" -}}
{{- $_ := set $data $key (index ($live.data | default dict) $key | default "") -}}
{{- end -}}
{{- toJson $data | sha256sum -}}
{{- end -}}
{{- else -}}
{{- include "kubeward.generatedKeys" . | sha256sum -}}
{{- end -}}
{{- end -}}
