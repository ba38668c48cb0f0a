"""The DocModel operator: Kopf wiring and Kubernetes calls around the lifecycle core.

Every decision comes from `docmodel.plan` (the planner) and `docmodel.builders`; this package
observes the cluster and the artifact store, writes status and Events, and carries the
planner's actions out as Jobs, Deployments and a Service.
"""
