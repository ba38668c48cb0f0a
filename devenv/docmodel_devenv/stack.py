"""Everything together: control plane, kwok nodes, the local node's pod runner
and MinIO, started in order and stopped in reverse."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import build, procs
from .controlplane import ControlPlane
from .kubeapi import KubeApi
from .kwok import Kwok
from .minio import MinIO, S3Endpoint
from .podrunner import PodRunner

log = logging.getLogger(__name__)


@dataclass
class DevEnv:
    workdir: Path
    keep_workdir: bool = False
    binaries: build.Binaries = field(default_factory=build.require_all)
    control_plane: ControlPlane | None = None
    kwok: Kwok | None = None
    runner: PodRunner | None = None
    minio: MinIO | None = None
    api: KubeApi | None = None
    s3: S3Endpoint | None = None
    seconds: float = 0.0
    audit: bool = False  # the API server's audit log (control_plane.audit_log)

    @classmethod
    def create(
        cls, workdir: Path | None = None, keep_workdir: bool = False, audit: bool = False
    ) -> DevEnv:
        binaries = build.require_all()
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="docmodel-devenv-"))
        return cls(workdir=workdir, keep_workdir=keep_workdir, binaries=binaries, audit=audit)

    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubeconfig

    @property
    def s3_file(self) -> Path:
        return self.workdir / "s3.json"

    def start(self) -> DevEnv:
        started = time.monotonic()
        procs.install_handlers()
        try:
            self.control_plane = ControlPlane(self.binaries, self.workdir, audit=self.audit)
            self.control_plane.start()
            self.api = KubeApi(self.control_plane.credentials)
            self.minio = MinIO(self.binaries, self.workdir)
            self.s3 = self.minio.start()
            self.kwok = Kwok(self.binaries, self.kubeconfig, self.workdir)
            self.kwok.start(self.api)
            pki = self.control_plane.pki
            self.runner = PodRunner(
                self.api,
                self.workdir / "pods",
                kubernetes_version=build.FAMILIES["kubernetes"].version(),
                log_tls=(pki.serving_cert, pki.serving_key, pki.ca_cert),
            )
            self.runner.start()
        except BaseException:
            self.stop()
            raise
        self.seconds = time.monotonic() - started
        log.info("Dev environment started workdir=%s seconds=%.1f", self.workdir, self.seconds)
        return self

    def stop(self) -> None:
        for part in (self.runner, self.kwok, self.minio, self.control_plane):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if self.api is not None:
            self.api.close()
        procs.stop_all()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("Dev environment stopped workdir=%s", self.workdir)

    def __enter__(self) -> DevEnv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
