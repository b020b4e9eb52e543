"""The data lake: one small interface over a local folder or an S3 bucket.

Objects are written atomically (a local file appears whole through ``os.replace``; an S3 object
is atomic by nature), so a reader never sees a torn file. Higher-level snapshot logic lives in
:mod:`sales_etl.snapshots` and works on either implementation.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from sales_etl.errors import LakeError
from sales_etl.settings import LakeConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class Lake(Protocol):
    """What the pipeline needs from a data lake. Keys are ``/``-separated relative paths."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def sizes(self, prefix: str) -> dict[str, int]: ...

    def delete(self, keys: Sequence[str]) -> None: ...

    def uri(self, key: str) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...


class _ClosedOnExit:
    """``with open_lake(config) as lake:`` closes the lake at the end of the block."""

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalLake(_ClosedOnExit):
    """A lake in a local folder (the default: ``./.data/lake``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalLake({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise LakeError(f"lake key {key!r} escapes the lake root")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise LakeError(f"{self.uri(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` (in-flight ``.tmp-`` files included) and its bytes."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return {}
        return {
            p.relative_to(self.root).as_posix(): p.stat().st_size
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    def delete(self, keys: Sequence[str]) -> None:
        """Remove ``keys`` (a missing one is no error), then the folders they leave empty."""
        folders = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            while folder != self.root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent

    def uri(self, key: str) -> str:
        return str(self.root / key)


# What boto3 reads from the environment when it creates a client: a change makes a new client.
_BOTO_ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


# DeleteObjects takes at most 1000 keys a request.
_S3_DELETE_BATCH = 1000


@functools.lru_cache(maxsize=16)
def _s3_client(
    pid: int,
    options: tuple[tuple[str, Any], ...],
    environment: tuple[tuple[str, str | None], ...],
) -> S3Client:
    """One boto3 client per process and endpoint/credentials, shared by every :class:`S3Lake`.

    Creating a client parses botocore's service model (~0.1-0.3 s of CPU); a run opens the lake
    in every task, so a client each time cost seconds per run. Clients are thread-safe; ``pid``
    keeps a forked process from reusing its parent's connections; ``environment`` (what boto3
    reads from ``AWS_*`` variables) makes a changed environment get a new client.
    """
    import boto3

    del pid, environment  # parts of the cache key only
    return boto3.session.Session().client("s3", **dict(options))


class S3Lake(_ClosedOnExit):
    """A lake in ``s3://bucket/prefix`` through boto3 (``endpoint_url`` for MinIO, moto, ...)."""

    def __init__(self, config: LakeConfig) -> None:
        bucket, _, prefix = config.url.removeprefix("s3://").partition("/")
        if not bucket:
            raise LakeError(f"data lake URL {config.url!r} names no bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        kwargs: dict[str, Any] = {}
        if config.endpoint_url:
            kwargs["endpoint_url"] = config.endpoint_url
        if config.region:
            kwargs["region_name"] = config.region
        if config.access_key_id and config.secret_access_key:
            kwargs["aws_access_key_id"] = config.access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = config.secret_access_key.get_secret_value()
        environment = tuple((name, os.environ.get(name)) for name in _BOTO_ENVIRONMENT)
        self._client = _s3_client(os.getpid(), tuple(sorted(kwargs.items())), environment)

    def __repr__(self) -> str:
        return f"S3Lake('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self._call(
            "write",
            key,
            lambda: self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data),
        )

    def get(self, key: str) -> bytes:
        response = self._call(
            "read", key, lambda: self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        )
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise LakeError(f"cannot check {self.uri(key)}: {exc}") from None
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except Exception as exc:
            raise LakeError(f"cannot list {self.uri(prefix)}: {exc}") from None
        return sorted(keys)

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` and its bytes."""
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        sizes: dict[str, int] = {}
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                sizes.update((o["Key"][strip:], int(o["Size"])) for o in page.get("Contents", []))
        except Exception as exc:
            raise LakeError(f"cannot list {self.uri(prefix)}: {exc}") from None
        return dict(sorted(sizes.items()))

    def delete(self, keys: Sequence[str]) -> None:
        """Remove ``keys`` in batches of 1000 (``DeleteObjects``); a missing key is no error."""
        for start in range(0, len(keys), _S3_DELETE_BATCH):
            batch = keys[start : start + _S3_DELETE_BATCH]
            request: Any = {"Objects": [{"Key": self._key(key)} for key in batch], "Quiet": True}
            response = self._call(
                "delete",
                batch[0],
                functools.partial(self._client.delete_objects, Bucket=self.bucket, Delete=request),
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise LakeError(
                    f"cannot delete {len(errors)} objects of s3://{self.bucket}, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def close(self) -> None:
        return None  # the client is shared (see _s3_client) and lives as long as the process

    def _call(self, verb: str, key: str, fn: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (BotoCoreError, ClientError) as exc:
            raise LakeError(f"cannot {verb} {self.uri(key)}: {exc}") from None


def open_lake(config: LakeConfig) -> Lake:
    """The lake implementation for ``config.url`` (folder path or ``s3://``), to use as
    ``with open_lake(config) as lake:``."""
    if config.is_s3:
        return S3Lake(config)
    if "://" in config.url and not config.url.startswith("file://"):
        raise LakeError(f"unsupported data lake URL {config.url!r}: use a folder or s3://")
    return LocalLake(config.url.removeprefix("file://"))
