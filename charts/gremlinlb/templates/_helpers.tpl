{{/*
The labels of every object: manifests/'s app.kubernetes.io/name, plus Helm's own. Selectors use
the name alone, as in manifests/, so an install from manifests/ and one from the chart select
the same pods.
*/}}
{{- define "gremlinlb.labels" -}}
app.kubernetes.io/name: gremlinlb-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "gremlinlb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The operator's defaults (its Lease, webhook Service and Secret, push CA) and the webhook's
namespace exclusion name gremlinlb-system: the chart installs there only.
*/}}
{{- define "gremlinlb.checkNamespace" -}}
{{- if ne .Release.Namespace "gremlinlb-system" }}
{{- fail (printf "the gremlinlb chart installs into the namespace gremlinlb-system only (the operator's Lease, webhook Secret and push CA live there), not %q: use --namespace gremlinlb-system --create-namespace" .Release.Namespace) }}
{{- end }}
{{- end }}
