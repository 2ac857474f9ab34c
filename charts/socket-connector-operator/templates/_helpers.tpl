{{- define "sco.name" -}}socket-connector-operator{{- end -}}

{{- define "sco.fullname" -}}
{{- if contains "socket-connector-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-socket-connector-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sco.labels" -}}
app.kubernetes.io/name: {{ include "sco.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sco.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sco.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sco.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sco.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sco.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* What the operator may do in a namespace it watches. */}}
{{- define "sco.rules" -}}
- apiGroups: [tbsc.io]
  resources: [socketconnectors]
  verbs: [get, list, watch]
- apiGroups: [tbsc.io]
  resources: [socketconnectors/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, update, delete]
# Queue claims (spec.queue.persistence) are created and patched, never deleted by the operator:
# they go with the SocketConnector (owner reference), so a queue is not lost to a scale-down.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create, patch]
# Connector pods are listed to ask each one for its ThingsBoard link (GET /status on its
# metrics port); they are not changed unless watchSecrets is on.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
{{- if .Values.watchSecrets }}
# watchSecrets: the metadata of Secrets the pods mount is watched; a pod waiting for a Secret
# written since is deleted (its ReplicaSet starts a new one), a running pod is annotated so that
# the kubelet refreshes its Secret volumes.
- apiGroups: [""]
  resources: [secrets]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [patch, delete]
{{- else }}
# No access to Secrets at all: a Secret the pods need and that is missing is reported by the
# kubelet, as a FailedMount Event on the pod, and read from there.
{{- end }}
- apiGroups: [""]
  resources: [events]
  verbs: [list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
