"""Prefect result storage beside the data lake, so cached results outlive containers and pods.

With an S3 lake (``s3://bucket/prefix``), Prefect's results (the extract task's cached result)
go to ``s3://bucket/prefix/prefect-results/<key>`` with the lake's own endpoint, region and
credentials: a retried or rescheduled pod finds the cache of the pod before it. A local lake
keeps Prefect's default local storage (``PREFECT_RESULTS_LOCAL_STORAGE_PATH``; the Docker pool
puts it on the data volume).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, TypeVar

from prefect import Task
from prefect.filesystems import WritableFileSystem
from pydantic import SecretStr

from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig

RESULTS_FOLDER = "prefect-results"

T = TypeVar("T", bound=Task[Any, Any])


class LakeResultStorage(WritableFileSystem):
    """Prefect result storage in the data lake's S3 bucket, under ``<lake>/prefect-results``.

    Built from the run's ``LakeConfig`` by :func:`results_in_lake`.
    """

    _block_type_name = "Sales Lake Result Storage"
    _block_type_slug = "sales-lake-result-storage"

    lake_url: str
    endpoint_url: str | None = None
    region: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None

    @classmethod
    def for_lake(cls, lake: LakeConfig) -> LakeResultStorage:
        return cls(
            lake_url=lake.url,
            endpoint_url=lake.endpoint_url,
            region=lake.region,
            aws_access_key_id=lake.access_key_id,
            aws_secret_access_key=lake.secret_access_key,
        )

    def document_name(self) -> str:
        """One saved document per lake location (bucket, prefix, endpoint)."""
        where = f"{self.lake_url}|{self.endpoint_url or ''}|{self.region or ''}"
        return f"lake-results-{hashlib.sha256(where.encode()).hexdigest()[:16]}"

    def _config(self) -> LakeConfig:
        return LakeConfig(
            url=f"{self.lake_url.rstrip('/')}/{RESULTS_FOLDER}",
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.aws_access_key_id,
            secret_access_key=self.aws_secret_access_key,
        )

    # Prefect calls read_path/write_path with _sync=True from sync code and the a* variants
    # from async code (prefect._internal.compatibility.blocks).
    def read_path(self, path: str, _sync: bool | None = None) -> bytes:  # type: ignore[override]
        with open_lake(self._config()) as lake:
            return lake.get(path)

    def write_path(  # type: ignore[override]
        self, path: str, content: bytes, _sync: bool | None = None
    ) -> None:
        with open_lake(self._config()) as lake:
            lake.put(path, content)

    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> None:
        await asyncio.to_thread(self.write_path, path, content)


def results_in_lake(task: T, lake: LakeConfig) -> T:
    """``task`` storing its results beside an S3 lake; unchanged for a local lake.

    Prefect only accepts result storage saved as a block document, so the storage is saved
    (overwritten) under a name derived from the lake's location on every call; its keys, when
    the lake has any, are secret fields of that document like those of ``DataLakeBlock``.
    """
    if not lake.is_s3:
        return task
    storage = LakeResultStorage.for_lake(lake)
    storage.save(storage.document_name(), overwrite=True)
    return task.with_options(result_storage=storage)  # type: ignore[return-value]
