"""The Kubernetes calls the operator makes, in one place, with the official client.

Children are created with create-or-get (a 409 is followed by a read, so a replayed event
never makes a second one) or, where the live object must follow the builder (the server
Deployment and the Service), server-side apply with the operator's field manager.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from docmodel import labels
from docmodel.api import GROUP, PLURAL, VERSION
from docmodel.builders import ENGINES, Engine
from docmodel_operator.cache import decode_secret_data, resource_version

log = logging.getLogger("docmodel.operator")

USER_AGENT = "docmodel-operator/0.1.0"
FIELD_MANAGER = "docmodel-operator"
REQUEST_TIMEOUT = 30
# Kueue's Workloads: one per queued Job or PyTorchJob, labelled with that object's uid.
KUEUE_GROUP, KUEUE_VERSION, WORKLOADS = "kueue.x-k8s.io", "v1beta2", "workloads"
KUEUE_JOB_UID = "kueue.x-k8s.io/job-uid"


def load_client() -> client.ApiClient:
    """In a pod, the ServiceAccount; elsewhere, KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    api = client.ApiClient()
    api.user_agent = USER_AGENT
    return api


def child_selector() -> str:
    return labels.selector({labels.MANAGED_BY: labels.OPERATOR})


class Kube:
    def __init__(self, api: client.ApiClient):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.networking = client.NetworkingV1Api(api)
        self.policy = client.PolicyV1Api(api)

    # -- the DocModel -------------------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": status},
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to record
                raise

    def event(
        self, owner: dict[str, Any], type_: str, reason: str, message: str, now: datetime
    ) -> None:
        meta = owner["metadata"]
        stamp = now.astimezone(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{meta['name']}.", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=owner["apiVersion"],
                kind=owner["kind"],
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
                resource_version=meta.get("resourceVersion"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=stamp,
            last_timestamp=stamp,
            count=1,
            source=client.V1EventSource(component=FIELD_MANAGER),
            reporting_component=FIELD_MANAGER,
            reporting_instance=FIELD_MANAGER,
            action=reason,
        )
        try:
            self.core.create_namespaced_event(
                meta["namespace"], body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:  # an Event is worth a warning, never a failed reconcile
            log.warning("Failed to post event reason=%s status=%s", reason, exc.status)

    # -- children -----------------------------------------------------------------------------

    def list_raw(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One LIST of `kind` (jobs, pods, deployments, services, secrets) in `namespace`
        (None: every namespace), as plain objects, with the list's resourceVersion."""
        engine = next((e for e in ENGINES if e.plural == kind), None)
        if engine is not None:
            return self._list_engine(engine, namespace, label_selector)
        api = {
            "jobs": (self.batch, "job"),
            "pods": (self.core, "pod"),
            "deployments": (self.apps, "deployment"),
            "services": (self.core, "service"),
            "secrets": (self.core, "secret"),
        }
        group, singular = api[kind]
        args: tuple[str, ...] = ()
        if namespace is None:
            fn = getattr(group, f"list_{singular}_for_all_namespaces")
        else:
            fn, args = getattr(group, f"list_namespaced_{singular}"), (namespace,)
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}
        if label_selector:
            kwargs["label_selector"] = label_selector
        raw = json.loads(fn(*args, **kwargs).data)
        return list(raw.get("items") or []), resource_version(raw)

    def _list_engine(
        self, engine: Engine, namespace: str | None, label_selector: str | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One LIST of a training engine's resources; none where the cluster does not serve
        them (the watch starts once their CRD comes)."""
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}
        if label_selector:
            kwargs["label_selector"] = label_selector
        try:
            if namespace is None:
                response = self.custom.list_cluster_custom_object(
                    engine.group, engine.version, engine.plural, **kwargs
                )
            else:
                response = self.custom.list_namespaced_custom_object(
                    engine.group, engine.version, namespace, engine.plural, **kwargs
                )
        except ApiException as exc:
            if exc.status == 404:
                return [], None
            raise
        raw = json.loads(response.data)  # type: ignore[attr-defined]
        return list(raw.get("items") or []), resource_version(raw)

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's values, decoded; None when it does not exist. (The cache keeps
        those of `Opaque` Secrets; this reads one of another type.)"""
        try:
            secret = self.core.read_namespaced_secret(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return decode_secret_data(secret.data)

    def create_job(self, job: dict[str, Any]) -> bool:
        """Create the Job unless it exists (then read it); True when this call created it."""
        meta = job["metadata"]
        try:
            self.batch.create_namespaced_job(
                meta["namespace"],
                job,  # type: ignore[arg-type]  # the client serialises plain dicts as they are
                _request_timeout=REQUEST_TIMEOUT,
            )
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.batch.read_namespaced_job(
            meta["name"], meta["namespace"], _request_timeout=REQUEST_TIMEOUT
        )
        return False

    def delete_jobs(
        self, namespace: str, name: str, revision: str, engines: Iterable[Engine] = ()
    ) -> None:
        """Delete the revision's Jobs (and its training engines' resources, of the `engines`
        the cluster serves) and, in the background, their pods."""
        selector = labels.selector({**labels.own_pods(name), labels.REVISION: revision})
        self.batch.delete_collection_namespaced_job(
            namespace,
            label_selector=selector,
            propagation_policy="Background",
            _request_timeout=REQUEST_TIMEOUT,
        )
        for engine in engines:
            self.custom.delete_collection_namespaced_custom_object(
                engine.group,
                engine.version,
                namespace,
                engine.plural,
                label_selector=selector,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )

    # -- training engines and queues ------------------------------------------------------------

    def served_engines(self) -> frozenset[str]:
        """The kinds of the training engines (PyTorchJob, TrainJob) the cluster serves, from
        API discovery."""
        served = set()
        for engine in ENGINES:
            try:
                found = self.custom.get_api_resources(
                    engine.group, engine.version, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            if any(r.name == engine.plural for r in found.resources or []):
                served.add(engine.kind)
        return frozenset(served)

    def create_training(self, engine: Engine, obj: dict[str, Any]) -> bool:
        """Create the engine's resource unless it exists; True when this call created it."""
        meta = obj["metadata"]
        try:
            self.custom.create_namespaced_custom_object(
                engine.group,
                engine.version,
                meta["namespace"],
                engine.plural,
                obj,
                _request_timeout=REQUEST_TIMEOUT,
            )
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        return False

    def workloads(self, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        """Kueue's Workloads of the Job or PyTorchJob with uid `owner_uid` (none when Kueue is
        not installed)."""
        try:
            raw: Any = self.custom.list_namespaced_custom_object(
                KUEUE_GROUP,
                KUEUE_VERSION,
                namespace,
                WORKLOADS,
                label_selector=f"{KUEUE_JOB_UID}={owner_uid}",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status in (403, 404):
                return []
            raise
        return list((raw or {}).get("items") or [])

    def _calls(self, kind: str, verb: str) -> Any:
        """The client's `verb` call (patch, delete) of a namespaced child `kind`."""
        group, singular = {
            "Deployment": (self.apps, "deployment"),
            "Service": (self.core, "service"),
            "NetworkPolicy": (self.networking, "network_policy"),
            "PodDisruptionBudget": (self.policy, "pod_disruption_budget"),
        }.get(kind, (None, ""))
        if group is None:
            raise ValueError(f"the operator does not manage kind {kind}")
        return getattr(group, f"{verb}_namespaced_{singular}")

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply of a child (Deployment, Service, NetworkPolicy,
        PodDisruptionBudget), as the builder made it."""
        meta = obj["metadata"]
        self._calls(obj["kind"], "patch")(
            meta["name"],
            meta["namespace"],
            obj,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",  # JSON is YAML
            _request_timeout=REQUEST_TIMEOUT,
        )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a child (its dependents in the background); one that is gone is fine."""
        try:
            self._calls(kind, "delete")(
                name,
                namespace,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def job_events(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Events about the Job `job` (its controller's: FailedCreate, SuccessfulCreate)."""
        raw: Any = self.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={job}",
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return list(json.loads(raw.data).get("items") or [])
