"""MinIO on loopback as the S3 of the dev environment: a temporary data
directory, random root credentials, buckets on demand, and the credentials
delivered into a namespace as a Secret."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from docmodel.storage import S3Credentials

from . import procs
from .build import Binaries
from .controlplane import free_port, http_ok
from .kubeapi import ApiError, KubeApi

log = logging.getLogger(__name__)

REGION = "us-east-1"
SECRET_NAME = "docmodel-s3"


@dataclass(frozen=True)
class S3Endpoint:
    """Where the dev environment's MinIO listens and its root keys (the core's
    `S3Credentials`, whose `repr` never shows the secret)."""

    endpoint: str
    keys: S3Credentials
    region: str = REGION

    @property
    def access_key(self) -> str:
        return self.keys.access_key_id

    @property
    def secret_key(self) -> str:
        return self.keys.secret_access_key

    def env(self) -> dict[str, str]:
        """The variables boto3 and the AWS CLI read."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, proxies={}),
        )


@dataclass
class MinIO:
    binaries: Binaries
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    credentials: S3Endpoint | None = None

    def start(self) -> S3Endpoint:
        port, console_port = free_port(), free_port()
        credentials = S3Endpoint(
            endpoint=f"http://127.0.0.1:{port}",
            keys=S3Credentials("devenv-" + secrets.token_hex(6), secrets.token_urlsafe(24)),
        )
        data = self.workdir / "minio-data"
        data.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / "logs" / "minio.log"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "MINIO_ROOT_USER": credentials.access_key,
            "MINIO_ROOT_PASSWORD": credentials.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_REGION": REGION,
        }
        self.process = procs.start(
            "minio",
            [
                str(self.binaries["minio"]),
                "server",
                "--quiet",
                f"--address=127.0.0.1:{port}",
                f"--console-address=127.0.0.1:{console_port}",
                str(data),
            ],
            log_path,
            env=env,
        )
        procs.wait_until(
            lambda: http_ok(f"{credentials.endpoint}/minio/health/ready"),
            60,
            "minio",
            self.process,
            log_path,
        )
        self.credentials = credentials
        (self.workdir / "s3.json").write_text(
            json.dumps({"endpoint": credentials.endpoint, **credentials.env()}, indent=2)
        )
        (self.workdir / "s3.json").chmod(0o600)
        log.info("Started MinIO endpoint=%s", credentials.endpoint)
        return credentials

    def stop(self) -> None:
        if self.process is not None:
            procs.stop(self.process)
            self.process = None

    def create_bucket(self, name: str) -> None:
        assert self.credentials is not None
        self.credentials.client().create_bucket(Bucket=name)
        log.info("Created bucket bucket=%s", name)


def put_secret(
    api: KubeApi, credentials: S3Endpoint, namespace: str, name: str = SECRET_NAME
) -> None:
    """Create (or replace) a Secret with the S3 credentials and endpoint in ``namespace``."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in credentials.env().items()},
    }
    try:
        api.create(secret, "secrets")
    except ApiError as error:
        if error.status != 409:
            raise
        api.apply(secret, "secrets")
