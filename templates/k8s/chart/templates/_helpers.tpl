{{/*
Helpers of the ai4ec-api chart. They only format values: every name and decision comes from
values (see docs/chart.md), nothing is derived here except label sets and the image reference.
*/}}

{{/* Labels every object carries (docs/contracts.md + app.kubernetes.io). */}}
{{- define "ai4ec.labels" -}}
{{ include "ai4ec.podLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end }}

{{/* The same without helm.sh/chart: a chart upgrade alone must not restart every pod. */}}
{{- define "ai4ec.podLabels" -}}
app.kubernetes.io/name: {{ .Values.name | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Values.version | quote }}
app.kubernetes.io/component: {{ .Values.component | quote }}
app.kubernetes.io/part-of: {{ .Values.partOf | quote }}
app.kubernetes.io/managed-by: ai4ec
ai4ec.io/platform: {{ .Values.platform | quote }}
ai4ec.io/environment: {{ .Values.environment | quote }}
ai4ec.io/api: {{ .Values.name | quote }}
{{- end }}

{{/* Selector labels: only the API id, which never changes for a Deployment. */}}
{{- define "ai4ec.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.name | quote }}
ai4ec.io/api: {{ .Values.name | quote }}
{{- end }}

{{/* Common metadata block: name, release namespace, labels. */}}
{{- define "ai4ec.metadata" -}}
name: {{ .Values.name | quote }}
namespace: {{ .Release.Namespace | quote }}
labels:
  {{- include "ai4ec.labels" . | nindent 2 }}
{{- end }}

{{/* Image reference: repository:tag, pinned with @digest when one is given. */}}
{{- define "ai4ec.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end }}

{{/* HPA behavior, shared by the HPA and KEDA's HPA. Argument: .Values.autoscaling.behavior */}}
{{- define "ai4ec.hpaBehavior" -}}
scaleUp:
  stabilizationWindowSeconds: {{ .scaleUpStabilizationSeconds | int }}
scaleDown:
  stabilizationWindowSeconds: {{ .scaleDownStabilizationSeconds | int }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ .scaleDownPods | int }}
      periodSeconds: {{ .scaleDownPeriodSeconds | int }}
{{- end }}

{{/* An integer or a "NN%" string, as given. */}}
{{- define "ai4ec.intOrPercent" -}}
{{- if kindIs "string" . -}}{{ . | quote }}{{- else -}}{{ . | int }}{{- end -}}
{{- end }}
