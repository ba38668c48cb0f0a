"""The Helm chart (charts/docmodel-operator), rendered and linted by the real helm: values and
schema, the CRD from the same source as crds/, least-privilege RBAC, the operator Deployment
and its settings, and the operator image it runs. (Installing it: tests/cluster/test_chart_*.)"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from docmodel import crd
from docmodel_operator.settings import OperatorSettings

from testkit.chartlib import CHART, ROOT, container_env, helm, objects, one, render, template

STORE = {"store": {"uri": "s3://acme-docmodel/artifacts"}}
NAMESPACED = {**STORE, "watchNamespaces": ["ml", "search"]}

# Every rule the operator gets in a namespace it watches: (apiGroup, resource) -> verbs.
NAMESPACED_RULES = {
    ("docmodel.dev", "docmodels", None): {"list", "watch"},
    ("docmodel.dev", "docmodels/status", None): {"patch"},
    ("docmodel.dev", "docmodels/finalizers", None): {"update"},
    ("batch", "jobs", None): {"list", "watch", "create", "get", "deletecollection"},
    ("", "pods", None): {"list", "watch"},
    ("apps", "deployments", None): {"list", "watch", "create", "patch", "delete"},
    ("", "services", None): {"list", "watch", "create", "patch"},
    ("networking.k8s.io", "networkpolicies", None): {"create", "patch", "delete"},
    ("policy", "poddisruptionbudgets", None): {"create", "patch", "delete"},
    ("", "events", None): {"create", "list"},
    ("", "secrets", None): {"get", "list", "watch"},
    ("kubeflow.org", "pytorchjobs", None): {"list", "watch", "create", "deletecollection"},
    ("trainer.kubeflow.org", "trainjobs", None): {"list", "watch", "create", "deletecollection"},
    ("kueue.x-k8s.io", "workloads", None): {"list"},
}
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions", None): {"list", "watch"}}
NAMESPACE_READ = {("", "namespaces", None): {"list", "watch"}}
PEERING_RULES = {
    ("kopf.dev", "clusterkopfpeerings", None): {"list", "watch", "create"},
    ("kopf.dev", "clusterkopfpeerings", "docmodel"): {"get", "patch"},
}


def rule_table(role: dict[str, Any]) -> dict[tuple[str, str, str | None], set[str]]:
    table: dict[tuple[str, str, str | None], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames") or [None]:
                    table.setdefault((group, resource, name), set()).update(rule["verbs"])
    return table


# -- lint and schema -------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["defaults", "namespaced"])
def test_chart_lints_strictly(values: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm("lint", "--strict", str(CHART), "-f", str(path))
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("--set", "replicaCount=x"), "/replicaCount"),
        (("--set", "watchNamespaces={Not_A_Namespace}"), "/watchNamespaces/0"),
        (("--set", "store.uri=https://bucket/prefix"), "/store/uri"),
        (("--set", "operator.workers=0"), "/operator/workers"),
        (("--set", "image.pullPolicy=Sometimes"), "/image/pullPolicy"),
        (("--set", "operator.livenessPort=70000"), "/operator/livenessPort"),
        (("--set", "metrics.serviceMonitor.interval=soon"), "/metrics/serviceMonitor/interval"),
        (("--set", "operator.workrs=3"), "/operator"),  # a misspelt key is no key
    ],
)
def test_schema_rejects_a_bad_value_naming_its_path(args: tuple[str, ...], path: str) -> None:
    result = template(STORE, args=args, check=False)
    assert result.returncode != 0, result.stdout[:500]
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert f"at '{path}'" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "replicaCount > 1 needs peering.enabled=true"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
        (
            {"store": {"secret": {"create": True, "accessKeyId": "AKIA"}}},
            "store.secret.secretAccessKey is required with store.secret.create",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    result = template(values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def _values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


# Values handed to the pod spec as they are: documented as a whole, checked as objects.
PASSTHROUGH = {
    "resources",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
}


def test_every_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    missing = []
    previous = ""
    for line in lines:
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if match:
            indent, key, rest = len(match[1]), match[2], match[3].strip()
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = [k for _, k in stack] + [key]
            inside_passthrough = any(k in PASSTHROUGH for k in path[:-1])
            leaf = rest != "" or key in PASSTHROUGH
            if leaf and not inside_passthrough and not previous.startswith("#"):
                missing.append(".".join(path))
            stack.append((indent, key))
        if line.strip():
            previous = line.strip()
    assert not missing, f"values without a comment above them in values.yaml: {missing}"


def _leaves(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value and key not in PASSTHROUGH:
            out += _leaves(value, path)
        else:
            out.append(path)
    return out


def test_schema_describes_every_value_and_templates_use_only_values_that_exist() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = _values()
    for path in _leaves(values):
        node = schema
        for key in path:
            node = node["properties"].get(key) if "properties" in node else None
            assert node is not None, f"values.schema.json does not describe {'.'.join(path)}"
    used = set()
    for source in (CHART / "templates").iterdir():
        used |= set(re.findall(r"\.Values((?:\.[A-Za-z_]\w*)+)", source.read_text()))
    for reference in sorted(used):
        node: Any = values
        for key in reference.strip(".").split("."):
            assert isinstance(node, dict) and key in node, f"templates use .Values{reference}"
            node = node[key]


# -- the CRDs -------------------------------------------------------------------------------


def test_chart_copies_of_the_crds_are_the_repositorys() -> None:
    for name in (crd.CRD_FILENAME, "kopf-peering.yaml"):
        copy = CHART / "files" / "crds" / name
        assert copy.read_text() == (ROOT / "crds" / name).read_text(), (
            f"{copy} differs from crds/{name}: run `python -m docmodel.crd`"
            if name == crd.CRD_FILENAME
            else f"copy crds/{name} to {copy}"
        )
    assert crd.chart_path() == CHART / "files" / "crds" / crd.CRD_FILENAME


def _as_in_source(rendered: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """`rendered` without what the chart adds: its annotations and labels beyond the file's."""
    obj = copy.deepcopy(rendered)
    meta = obj["metadata"]
    meta.pop("annotations", None)
    labels = meta.pop("labels")
    if "labels" in source["metadata"]:
        meta["labels"] = {key: labels[key] for key in source["metadata"]["labels"]}
    return obj


def test_rendered_crd_is_the_generated_crd_with_the_charts_labels() -> None:
    (rendered,) = objects(render(), "CustomResourceDefinition")
    source = yaml.safe_load((ROOT / "crds" / crd.CRD_FILENAME).read_text())
    assert _as_in_source(rendered, source) == source
    meta = rendered["metadata"]
    assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert meta["labels"]["app.kubernetes.io/part-of"] == "docmodel"


def test_crds_follow_enabled_keep_annotations_and_peering() -> None:
    assert objects(render({"crds": {"enabled": False}}), "CustomResourceDefinition") == []
    (unkept,) = objects(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]
    wave = {"argocd.argoproj.io/sync-wave": "-1"}
    (annotated,) = objects(render({"crds": {"annotations": wave}}), "CustomResourceDefinition")
    assert annotated["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep", **wave}
    peering = objects(render({"peering": {"enabled": True}}), "CustomResourceDefinition")
    expected = list(yaml.safe_load_all((ROOT / "crds" / "kopf-peering.yaml").read_text()))
    assert sorted(c["metadata"]["name"] for c in peering) == sorted(
        ["docmodels.docmodel.dev", *(c["metadata"]["name"] for c in expected)]
    )
    for source in expected:
        (rendered,) = [c for c in peering if c["metadata"]["name"] == source["metadata"]["name"]]
        assert _as_in_source(rendered, source) == source
        assert rendered["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


# -- RBAC -------------------------------------------------------------------------------------


def _no_wildcards(docs: list[dict[str, Any]]) -> None:
    for role in objects(docs, "ClusterRole") + objects(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_cluster_wide_rbac_is_exactly_what_the_operator_calls() -> None:
    docs = render(STORE)
    assert objects(docs, "Role") == [] and objects(docs, "RoleBinding") == []
    role = one(docs, "ClusterRole")
    assert rule_table(role) == NAMESPACED_RULES | CRD_READ
    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    # Named after the release namespace too: releases in two namespaces do not collide.
    assert role["metadata"]["name"] == "docmodel-docmodel-operator-docmodel-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "docmodel-system"}
    ]
    _no_wildcards(docs)


def test_namespaced_rbac_grants_only_the_listed_namespaces() -> None:
    docs = render(NAMESPACED)
    roles = objects(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "search"]
    for role in roles:
        assert rule_table(role) == NAMESPACED_RULES
    bindings = objects(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml", "search"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
        assert binding["subjects"][0]["namespace"] == "docmodel-system"
    # Cluster-wide: only what Kopf reads, nothing in any namespace.
    assert rule_table(one(docs, "ClusterRole")) == CRD_READ | NAMESPACE_READ
    _no_wildcards(docs)


def test_peering_adds_its_rules_in_both_modes() -> None:
    peering = {"peering": {"enabled": True}}
    cluster = one(render({**STORE, **peering}), "ClusterRole")
    assert rule_table(cluster) == NAMESPACED_RULES | CRD_READ | PEERING_RULES
    namespaced = one(render({**NAMESPACED, **peering}), "ClusterRole")
    assert rule_table(namespaced) == CRD_READ | NAMESPACE_READ | PEERING_RULES
    assert objects(render({"rbac": {"create": False}}), "ClusterRole") == []


# -- the operator Deployment ---------------------------------------------------------------------


def test_deployment_runs_one_restricted_replica_with_probes_and_resources() -> None:
    deployment = one(render(STORE), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == one(render(STORE), "ServiceAccount")["metadata"]["name"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "ghcr.io/docmodel/operator:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    for probe in (
        container["livenessProbe"],
        container["readinessProbe"],
        container["startupProbe"],
    ):
        assert probe["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert [v["mountPath"] for v in container["volumeMounts"]] == ["/tmp"]


def test_operator_env_is_every_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        **NAMESPACED,
        "store": {
            "uri": "s3://acme-docmodel/artifacts",
            "endpoint": "https://minio.example:9000",
            "region": "eu-west-1",
            "secret": {"name": "store-creds"},
        },
        "workloads": {
            "trainerImage": "registry.example/trainer:1.2",
            "serverImage": "registry.example/server:1.2",
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "operator": {"workers": 8, "resyncSeconds": 15, "logLevel": "DEBUG"},
    }
    env = container_env(one(render(values), "Deployment"))
    settings_env = {k: v for k, v in env.items() if k.startswith("DOCMODEL_OPERATOR_")}
    fields = {f"DOCMODEL_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    # Every setting but the peering priority, which stays random per replica.
    assert set(settings_env) == fields - {"DOCMODEL_OPERATOR_PRIORITY"}
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings.from_env()
    assert settings.namespaces == ["ml", "search"]
    assert settings.store_endpoint == "https://minio.example:9000"
    assert settings.store_secret == "store-creds"
    assert settings.trainer_image == "registry.example/trainer:1.2"
    assert settings.pod_node_selector == {"pool": "gpu"}
    assert settings.pod_tolerations[0]["key"] == "gpu"
    assert settings.workers == 8 and settings.resync_seconds == 15
    assert settings.peering == ""  # standalone: one replica, Recreate
    assert (settings.liveness_port, settings.metrics_port) == (8080, 9090)
    assert env["DOCMODEL_LOG_LEVEL"] == "DEBUG" and env["AWS_REGION"] == "eu-west-1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[f"DOCMODEL_STORE_{key}"] == {"secretKeyRef": {"name": "store-creds", "key": key}}


def test_ambient_credentials_and_a_created_secret() -> None:
    ambient = container_env(one(render({"store": {"secret": {"name": ""}}}), "Deployment"))
    assert ambient["DOCMODEL_OPERATOR_STORE_SECRET"] == ""
    assert "DOCMODEL_STORE_AWS_ACCESS_KEY_ID" not in ambient
    values = {"store": {"secret": {"create": True, "accessKeyId": "AK", "secretAccessKey": "SK"}}}
    docs = render(values)
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == "docmodel-store"
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    changed = render({"store": {"secret": {**values["store"]["secret"], "secretAccessKey": "S2"}}})
    assert (
        one(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"] != annotations
    ), "a changed Secret must roll the operator"


def test_scaled_with_peering_random_priorities_and_rolling_updates() -> None:
    docs = render({**STORE, "replicaCount": 2, "peering": {"enabled": True, "name": "dm-prod"}})
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2 and "strategy" not in deployment["spec"]
    env = container_env(deployment)
    assert env["DOCMODEL_OPERATOR_PEERING"] == "dm-prod"
    assert "DOCMODEL_OPERATOR_PRIORITY" not in env  # each replica draws its own
    peering_rule = [r for r in one(docs, "ClusterRole")["rules"] if r.get("resourceNames")]
    assert peering_rule == [
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings"],
            "resourceNames": ["dm-prod"],
            "verbs": ["get", "patch"],
        }
    ]


def test_metrics_service_and_service_monitor() -> None:
    docs = render({**STORE, "metrics": {"serviceMonitor": {"enabled": True}}})
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert objects(render(STORE), "ServiceMonitor") == []


# -- the operator image ------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, str]:
    """The Dockerfile's stages by name (``FROM ... AS name``), each with its FROM line."""
    text = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^(?=FROM )", text, flags=re.M)[1:]
    stages = {}
    for part in parts:
        named = re.match(r"FROM \S+ AS (\S+)$", part.splitlines()[0])
        assert named, f"every stage of the Dockerfile is named: {part.splitlines()[0]}"
        stages[named[1]] = part
    return stages


def stage_chain(stages: dict[str, str], name: str) -> list[str]:
    """`name`, the stage it is built FROM, and so on down to the base image."""
    chain = [name]
    while (parent := stages[chain[-1]].split()[1]) in stages:
        chain.append(parent)
    return chain


def test_operator_dockerfile_target_builds_what_the_chart_runs() -> None:
    stages = dockerfile_stages()
    operator = stages["operator"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # The default base (a build argument: the tests build on a Debian base of their own).
    base = re.search(r"^ARG BASE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[1]), base
    assert stage_chain(stages, "operator") == ["operator", "runtime"]
    assert stages["runtime"].startswith("FROM ${BASE} AS runtime")
    assert (
        "--extra operator" in operator
        and "operator" in pyproject["project"]["optional-dependencies"]
    )
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.+\])$", operator, re.M)[1])  # type: ignore[index]
    assert pyproject["project"]["scripts"][entrypoint[0]] == "docmodel_operator.main:main"
    user = re.search(r"^USER (\d+):(\d+)$", operator, re.M)
    assert user is not None
    pod = _values()["podSecurityContext"]
    assert (int(user[1]), int(user[2])) == (pod["runAsUser"], pod["runAsGroup"])


def test_each_image_target_copies_the_core_and_its_own_package_only() -> None:
    from docmodel_devenv import images

    stages = dockerfile_stages()
    ignore = {line.rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for image in images.IMAGES.values():
        chain = stage_chain(stages, image.name)
        wheels = re.findall(r"^COPY --from=(\S+) ", "".join(stages[s] for s in chain), re.M)
        assert wheels == [f"{image.name}-wheel"], (image.name, wheels)
        text = "".join(stages[s] for s in chain + stage_chain(stages, wheels[0]))
        copied = {
            source.rstrip("/")
            for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
            for source in line.split()[:-1]
        }
        bound = set(re.findall(r"--mount=type=bind,source=([^,\s]+)", text))
        assert copied | bound == set(image.sources), (image.name, copied, bound)
        for source in copied | bound:
            assert (ROOT / source).exists(), (
                f"the {image.name} target uses {source}, which is missing"
            )
            assert f"!{source}" in ignore, f".dockerignore leaves out {source}"
        # uv is only ever bound into a step, never copied into an image.
        assert bound == {"scripts/image-uv.sh"} and "image-uv" not in " ".join(
            re.findall(r"^COPY .+$", text, re.M)
        )


def test_operator_network_policy_opens_only_metrics_and_probes_to_the_given_peers() -> None:
    assert objects(render(STORE), "NetworkPolicy") == []
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    docs = render({**STORE, "networkPolicy": {"enabled": True, "from": [monitoring]}})
    policy = one(docs, "NetworkPolicy")
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()  # the operator's pod, by its own labels
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [monitoring]
    ports = {p["port"] for p in rule["ports"]}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert ports == {p["containerPort"] for p in container["ports"]}
    default = one(render({**STORE, "networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert default["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]
