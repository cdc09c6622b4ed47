{{- define "lumen.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "lumen.labels" -}}
app.kubernetes.io/part-of: lumen
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* A host path, under hostPathBase/<node> when nodes share one filesystem. */}}
{{- define "lumen.hostPath" -}}
{{- $base := .root.Values.perNodeHostPaths.hostPathBase -}}
{{- if $base -}}{{ trimSuffix "/" $base }}/$(NODE_NAME){{ .path }}{{- else -}}{{ .path }}{{- end -}}
{{- end -}}

{{/* Where the agent's container sees the CNI directories. */}}
{{- define "lumen.cniBinDir" -}}
{{- if .Values.perNodeHostPaths.hostPathBase -}}{{ include "lumen.hostPath" (dict "root" . "path" .Values.cni.binPath) }}{{- else -}}/host/opt/cni/bin{{- end -}}
{{- end -}}
{{- define "lumen.cniConfDir" -}}
{{- if .Values.perNodeHostPaths.hostPathBase -}}{{ include "lumen.hostPath" (dict "root" . "path" .Values.cni.confPath) }}{{- else -}}/host/etc/cni/net.d{{- end -}}
{{- end -}}

{{- define "lumen.apiServer" -}}
{{- if .Values.k8sServiceHost -}}
https://{{ .Values.k8sServiceHost }}:{{ .Values.k8sServicePort }}
{{- else -}}
https://kubernetes.default.svc:443
{{- end -}}
{{- end -}}
