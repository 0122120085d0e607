{{/* Labels of every object: the name the tiers' NetworkPolicies admit, and Helm's. */}}
{{- define "cachetier.labels" -}}
app.kubernetes.io/name: cachetier-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "cachetier.serviceAccountName" -}}
{{ .Values.serviceAccount.name }}
{{- end -}}

{{/* The operator's namespaced rules: in a ClusterRole (every namespace) or a Role per
watched namespace. Exactly the verbs the code uses (manifests/rbac.yaml explains each). */}}
{{- define "cachetier.namespacedRules" -}}
- apiGroups: ["cachetier.io"]
  resources: ["cachetiers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["cachetier.io"]
  resources: ["cachetiers/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Cluster-scoped reads, by name: a node's zone (placement), a class's allowVolumeExpansion. */}}
{{- define "cachetier.clusterReads" -}}
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
{{- end -}}
