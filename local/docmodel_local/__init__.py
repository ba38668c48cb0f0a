"""Local mode: the DocModel lifecycle on one machine, and the `docmodel` command.

The second executor of the planner (`docmodel.plan`; the operator is the first): `executor`
observes the source, the revision's artifacts, the steps it ran and the servers it started,
asks the planner what to do and carries the actions out as local processes
(`docmodel-trainer <step>`, `docmodel-server`). `commands` holds `docmodel local run|serve|
status`; `cli` the `docmodel` command itself (with `validate` and `crd`).
"""
