{{/*
The chart's name, or nameOverride.
*/}}
{{- define "docmodel-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object: fullnameOverride, else <release>-<name> (just the release name
when it already contains the chart's name). Truncated to 63 characters (a DNS label).
*/}}
{{- define "docmodel-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of the chart's cluster-scoped objects (ClusterRole, ClusterRoleBinding): the full name
and the release namespace, so that releases of the same name in two namespaces (two operators
watching different namespaces) do not collide.
*/}}
{{- define "docmodel-operator.clusterName" -}}
{{- printf "%s-%s" (include "docmodel-operator.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "docmodel-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object the chart creates. (The operator's own children carry
app.kubernetes.io/managed-by=docmodel-operator; these carry Helm.)
*/}}
{{- define "docmodel-operator.labels" -}}
helm.sh/chart: {{ include "docmodel-operator.chart" . }}
{{ include "docmodel-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: docmodel
{{- end }}

{{/*
Labels that select the operator's pods.
*/}}
{{- define "docmodel-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "docmodel-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "docmodel-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "docmodel-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image.
*/}}
{{- define "docmodel-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does in each namespace it watches (kube.py and the Kopf handlers in
handlers.py make every one of these calls; docs/install.md explains each rule).
*/}}
{{- define "docmodel-operator.namespacedRules" -}}
# DocModels: Kopf lists and watches them; the operator reads them only from that cache.
- apiGroups: [docmodel.dev]
  resources: [docmodels]
  verbs: [list, watch]
# The status is the only part of a DocModel the operator writes (a merge patch).
- apiGroups: [docmodel.dev]
  resources: [docmodels/status]
  verbs: [patch]
# Children carry blockOwnerDeletion owner references to their DocModel; where the
# OwnerReferencesPermissionEnforcement admission plugin is on, setting one needs this.
- apiGroups: [docmodel.dev]
  resources: [docmodels/finalizers]
  verbs: [update]
# The ingest, train and evaluate Jobs: watched into the cache, created (a 409 is followed by a
# read), and a superseded revision's Jobs deleted by label.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, get, deletecollection]
# Distributed training (spec.training.distributed): the training engine's resource in place of
# the train Job, Kubeflow's PyTorchJob or TrainJob, whichever the cluster serves: watched into
# the cache, created, and a superseded revision's deleted by label.
- apiGroups: [kubeflow.org]
  resources: [pytorchjobs]
  verbs: [list, watch, create, deletecollection]
- apiGroups: [trainer.kubeflow.org]
  resources: [trainjobs]
  verbs: [list, watch, create, deletecollection]
# Kueue's Workloads (spec.training.queueName): read to show why a queued step waits.
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list]
# The Jobs' and servers' pods: exit codes, termination messages, scheduling (read only).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The revision servers: server-side apply (a patch, which needs create too when it makes the
# object), deleted after the clean-up delay or a failed rollout.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
# The Service app teams call: server-side apply moves its selector between revisions.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
# The NetworkPolicies of a DocModel's pods (server ingress on the serving port only; none
# to the steps): server-side apply, deleted when the spec turns them off.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, patch, delete]
# The disruption budget of a revision's servers when it has several replicas.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch, delete]
# Events on DocModels (the operator's and Kopf's); listed for a Job that has no pod, to
# show why the cluster refuses it (the Job controller's FailedCreate).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# Secrets a DocModel names (the source's, the store's, tokens): read to list the source and to
# hide their values in the log lines copied into the status. Never written.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
{{- end }}

{{/*
What Kopf reads cluster-wide: CRDs (it notices DocModel versions coming and going) and, when
it watches listed namespaces, the namespaces themselves.
*/}}
{{- define "docmodel-operator.observeRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}

{{/*
Kopf's peering: the operator creates its ClusterKopfPeering object and reads it; Kopf watches
the peerings and patches its own record into the one it joins.
*/}}
{{- define "docmodel-operator.peeringRules" -}}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, create]
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  resourceNames: [{{ .Values.peering.name | quote }}]
  verbs: [get, patch]
{{- end }}
