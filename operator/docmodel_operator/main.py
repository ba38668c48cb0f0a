"""`docmodel-operator`: start the operator.

    DOCMODEL_OPERATOR_STORE_URI=s3://artifacts/docmodel docmodel-operator

Reads its settings from the environment (`docmodel_operator.settings`), serves `/healthz`
(liveness) and `/metrics`, joins the peering named by `DOCMODEL_OPERATOR_PEERING` (creating the
ClusterKopfPeering object when the CRD exists and the object does not), and watches DocModels
in the listed namespaces, or in every namespace.
"""

from __future__ import annotations

import logging
import socket
import sys
import uuid

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from docmodel.logs import setup_logging
from docmodel_operator import handlers
from docmodel_operator.cache import Cache
from docmodel_operator.kube import Kube, load_client
from docmodel_operator.reconcile import Reconciler
from docmodel_operator.settings import OperatorSettings, SettingsError

log = logging.getLogger("docmodel.operator")


def ensure_peering(kube: Kube, name: str) -> None:
    """Create the ClusterKopfPeering object; its CRD (crds/kopf-peering.yaml) must exist."""
    body = {
        "apiVersion": f"{handlers.PEERING_GROUP}/{handlers.PEERING_VERSION}",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": name},
    }
    try:
        kube.custom.create_cluster_custom_object(
            handlers.PEERING_GROUP, handlers.PEERING_VERSION, handlers.PEERING_PLURAL, body
        )
    except ApiException as exc:
        if exc.status == 404:
            raise SettingsError(
                "peering is on (DOCMODEL_OPERATOR_PEERING) but the ClusterKopfPeering CRD is not "
                "installed: apply crds/kopf-peering.yaml, or set DOCMODEL_OPERATOR_PEERING= to "
                "run a single replica standalone"
            ) from None
        if exc.status != 409:
            raise


# Kopf logs every handler call at INFO; the operator's own lines say what happened.
QUIET = ("kopf.objects", "kopf.activities", "aiohttp.access")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as exc:
        log.error("Rejected configuration: %s", exc)
        return 2
    kube = Kube(load_client())
    try:
        if settings.peering:
            ensure_peering(kube, settings.peering)
    except SettingsError as exc:
        log.error("Rejected configuration: %s", exc)
        return 2
    identity = f"{socket.gethostname()}/{uuid.uuid4().hex[:8]}"
    runtime = handlers.Runtime(settings, kube, Reconciler(settings, kube, Cache()), identity)
    runtime.relist()  # before the watches: the first reconciles see every child
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    log.info(
        "Started operator identity=%s priority=%d peering=%s namespaces=%s store=%s",
        identity,
        settings.priority,
        settings.peering or "standalone",
        ",".join(settings.namespaces) or "all",
        runtime.reconciler.store.uri,
    )
    kopf.run(
        memo=kopf.Memo(runtime=runtime),  # every handler's `memo`: handlers.runtime(memo)
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        identity=identity,  # type: ignore[arg-type]
        standalone=not settings.peering,
        priority=settings.priority,
        peering_name=settings.peering or None,
        liveness_endpoint=(
            f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
