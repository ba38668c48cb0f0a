"""Object-store access shared by the operator, the trainer and the server.

Two back ends behind one small interface:

- `S3Store`: any S3-compatible store through boto3 (endpoint configurable, so MinIO, Ceph and
  R2 work); transfers use boto3's managed transfer (multipart, retries).
- `LocalStore`: a directory, for local mode and tests without S3.

`open_store("s3://bucket/prefix", ...)` or `open_store("/some/dir")` picks one. Errors are raised
as `StorageError` subclasses whose messages name the bucket and prefix and never the credentials.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlparse


class StorageError(RuntimeError):
    """An object-store operation failed; `reason` is a CamelCase word for conditions."""

    reason = "StorageError"


class AccessDenied(StorageError):
    reason = "AccessDenied"


class NoCredentials(StorageError):
    reason = "NoCredentials"


class NotFound(StorageError):
    reason = "NotFound"


class BucketNotFound(StorageError):
    reason = "BucketNotFound"


@dataclass(frozen=True)
class ObjectInfo:
    """One object: its key relative to the store's prefix, ETag and size."""

    key: str
    etag: str
    size: int


@dataclass(frozen=True)
class S3Credentials:
    """Static credentials; `repr` never shows the secret."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return "S3Credentials(access_key_id=<redacted>, secret_access_key=<redacted>)"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> S3Credentials | None:
        env = dict(os.environ) if env is None else env
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            return cls(key, secret, env.get("AWS_SESSION_TOKEN") or None)
        return None


class ObjectStore(Protocol):
    """What every component needs from an object store. Keys are relative to `uri`."""

    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...
    def download_file(self, key: str, dest: Path) -> None: ...
    def upload_file(self, src: Path, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def child(self, prefix: str) -> ObjectStore: ...


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def matches(key: str, include: list[str], exclude: list[str]) -> bool:
    """Glob matching of a relative key; `**/` also matches the top level."""

    def hit(pattern: str) -> bool:
        if fnmatch.fnmatchcase(key, pattern):
            return True
        return pattern.startswith("**/") and fnmatch.fnmatchcase(key, pattern[3:])

    return any(hit(p) for p in include) and not any(hit(p) for p in exclude)


class LocalStore:
    """A directory that behaves like a bucket prefix."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the store root {self.root}")
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            stat = path.stat()
            digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            yield ObjectInfo(path.relative_to(self.root).as_posix(), digest, stat.st_size)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no object {key!r} in {self.uri}")
        return path.read_bytes()

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def download_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"no object {key!r} in {self.uri}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def upload_file(self, src: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove an object; removing one that is not there is not an error (as in S3)."""
        self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self._path(prefix))


@functools.lru_cache(maxsize=32)
def _s3_client(endpoint: str | None, region: str, credentials: S3Credentials | None) -> Any:
    """One client per endpoint, region and credentials, shared (boto3 clients are
    thread-safe): a long-running process such as the operator lists sources over and over,
    and a new client each time costs memory and time."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": region,
        "config": Config(
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint else "auto"},
            connect_timeout=10,
            read_timeout=60,
        ),
    }
    if credentials:
        kwargs["aws_access_key_id"] = credentials.access_key_id
        kwargs["aws_secret_access_key"] = credentials.secret_access_key
        kwargs["aws_session_token"] = credentials.session_token
    return boto3.client("s3", **kwargs)


class S3Store:
    """A bucket prefix in S3 or an S3-compatible store."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        credentials: S3Credentials | None = None,
        client: Any = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client or self._make_client()

    def _make_client(self) -> Any:
        return _s3_client(self.endpoint, self.region or "us-east-1", self.credentials)

    def _key(self, key: str) -> str:
        return _join(self.prefix, key)

    def _where(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _translate(self, exc: Exception, key: str = "") -> StorageError:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = self._where(key)
        if isinstance(exc, NoCredentialsError):
            return NoCredentials(f"no S3 credentials found for {where}")
        if isinstance(exc, EndpointConnectionError):
            return StorageError(f"cannot reach the S3 endpoint {self.endpoint} for {where}")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return AccessDenied(f"access denied to {where} ({code})")
            if code in ("NoSuchBucket",):
                return BucketNotFound(f"bucket {self.bucket!r} does not exist ({where})")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"no object at {where}")
            return StorageError(f"S3 error {code} at {where}")
        return StorageError(f"S3 request for {where} failed: {type(exc).__name__}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Prefixes are folders: "dataset" lists dataset/..., never dataset-old/...
        full = self._key(prefix)
        if full:
            full += "/"
        paginator = self._client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    if item["Key"].endswith("/"):
                        continue
                    yield ObjectInfo(
                        item["Key"][strip:], str(item["ETag"]).strip('"'), int(item["Size"])
                    )
        except Exception as exc:
            raise self._translate(exc, prefix) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(key))[
                "Body"
            ].read()
            return body
        except Exception as exc:
            raise self._translate(exc, key) from None

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except Exception as exc:
            raise self._translate(exc, key) from None

    def download_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(self.bucket, self._key(key), str(dest))
        except Exception as exc:
            raise self._translate(exc, key) from None

    def upload_file(self, src: Path, key: str) -> None:
        try:
            self._client.upload_file(str(src), self.bucket, self._key(key))
        except Exception as exc:
            raise self._translate(exc, key) from None

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            err = self._translate(exc, key)
            if isinstance(err, NotFound):
                return False
            raise err from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._translate(exc, key) from None

    def child(self, prefix: str) -> S3Store:
        return S3Store(
            self.bucket,
            _join(self.prefix, prefix),
            endpoint=self.endpoint,
            region=self.region,
            credentials=self.credentials,
            client=self._client,
        )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{uri!r} is not an S3 URI of the form s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    credentials: S3Credentials | None = None,
) -> ObjectStore:
    """Open `s3://bucket/prefix` (credentials from arguments or the environment) or a directory.

    The S3 endpoint and region default to `AWS_ENDPOINT_URL` / `AWS_REGION` when not given.
    """
    if uri.startswith("s3://"):
        bucket, prefix = parse_s3_uri(uri)
        return S3Store(
            bucket,
            prefix,
            endpoint=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
            region=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            credentials=credentials or S3Credentials.from_env(),
        )
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    if "://" in uri:
        raise ValueError(f"unsupported store URI {uri!r}: use s3://bucket/prefix or a directory")
    return LocalStore(uri)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_tree(store: ObjectStore, prefix: str, dest: Path) -> list[Path]:
    """Copy every object under `prefix` into `dest`, keeping relative paths."""
    base = prefix.strip("/")
    out = []
    for obj in store.list(base):
        rel = PurePosixPath(obj.key).relative_to(base) if base else PurePosixPath(obj.key)
        target = dest / rel
        store.download_file(obj.key, target)
        out.append(target)
    if not out:
        raise NotFound(f"nothing under {_join(store.uri, base)}")
    return out


def upload_tree(src: Path, store: ObjectStore, prefix: str) -> list[str]:
    """Copy every file below `src` to `prefix`, keeping relative paths."""
    keys = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        key = _join(prefix, path.relative_to(src).as_posix())
        store.upload_file(path, key)
        keys.append(key)
    return keys


def read_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get_bytes(key))


def write_json(store: ObjectStore, key: str, value: Any) -> None:
    data = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
    store.put_bytes(key, data, content_type="application/json")
