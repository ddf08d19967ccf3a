{{/*
Names. The bot's objects are "netdiag" for release netdiag (the name the
examples under deploy/ dial), the agent's the same followed by -agent.
*/}}
{{- define "netdiag.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 57 | trimSuffix "-" -}}
{{- end -}}

{{- define "netdiag.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "netdiag.agentName" -}}
{{- printf "%s-agent" (include "netdiag.name" .) -}}
{{- end -}}

{{- define "netdiag.agentFullname" -}}
{{- printf "%s-agent" (include "netdiag.fullname" .) -}}
{{- end -}}

{{- define "netdiag.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: netdiag
app.kubernetes.io/version: {{ include "netdiag.tag" . | trunc 63 | quote }}
{{- end -}}

{{/* Selector labels: fixed for a release's life (selectors are immutable). */}}
{{- define "netdiag.botSelector" -}}
app.kubernetes.io/name: {{ include "netdiag.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "netdiag.agentSelector" -}}
app.kubernetes.io/name: {{ include "netdiag.agentName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "netdiag.botLabels" -}}
{{ include "netdiag.botSelector" . }}
app.kubernetes.io/component: bot
{{ include "netdiag.commonLabels" . }}
{{- end -}}

{{- define "netdiag.agentLabels" -}}
{{ include "netdiag.agentSelector" . }}
app.kubernetes.io/component: agent
{{ include "netdiag.commonLabels" . }}
{{- end -}}

{{/*
The bot finds the agents with this label selector (agents.selector in its
config): the same labels the DaemonSet's pods carry.
*/}}
{{- define "netdiag.agentSelectorString" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "netdiag.agentName" .) .Release.Name -}}
{{- end -}}

{{- define "netdiag.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "netdiag.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "netdiag.tag" .) -}}
{{- end -}}

{{/* Where the bot reads what the pod gives it. */}}
{{- define "netdiag.configDir" -}}/etc/netdiag{{- end -}}
{{- define "netdiag.dataDir" -}}/var/lib/netdiag{{- end -}}
{{- define "netdiag.agentTokenDir" -}}/var/run/secrets/netdiag.io/agent-token{{- end -}}
{{- define "netdiag.agentCADir" -}}/var/run/secrets/netdiag.io/agent-ca{{- end -}}
{{/* Where the agent sees the host's cgroup tree and its certificate. */}}
{{- define "netdiag.hostCgroup" -}}/host/sys/fs/cgroup{{- end -}}
{{- define "netdiag.agentTLSDir" -}}/etc/netdiag-agent/tls{{- end -}}

{{/* The bot's HTTP port: config listen, container port and probes. */}}
{{- define "netdiag.botPort" -}}8080{{- end -}}

{{/* A Go duration ("2m", "1h30m", "90s") in whole seconds, rounded up. */}}
{{- define "netdiag.seconds" -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" . -1 -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $total = addf $total (mulf ($num | float64) (get $units (trimPrefix $num .))) -}}
{{- end -}}
{{- $total | ceil | int -}}
{{- end -}}

{{/* Cross-value checks the schema cannot say as clearly. */}}
{{- define "netdiag.validate" -}}
{{- if and .Values.agent.tls.caKey (not .Values.agent.tls.secretName) -}}
{{- fail "agent.tls.caKey is set but agent.tls.secretName is empty: the CA key is read from the agents' TLS Secret" -}}
{{- end -}}
{{- if and .Values.persistence.existingClaim (not .Values.persistence.enabled) -}}
{{- fail "persistence.existingClaim is set but persistence.enabled is false: enable persistence to use the claim" -}}
{{- end -}}
{{- end -}}
