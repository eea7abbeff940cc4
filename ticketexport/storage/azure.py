"""Azure Blob storage: blocks staged as the stream fills them, committed only at the end."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import aiohttp
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

# The errors by the package's name: what a caller catches is storage.StorageError, whichever
# backend raised it.
from ticketexport import storage
from ticketexport.storage import PART_SIZE, RemoteStore, StoredObject, Tally, write_failure

# Azure's own limit on the committed blocks of one block blob.
MAX_BLOCKS = 50_000
# An outage must end an attempt promptly, not after minutes of retries.
CONNECTION_TIMEOUT = 5
READ_TIMEOUT = 30
# One retry: the export job itself retries whole attempts, and an outage must end an
# attempt in seconds.
RETRIES = 1

_ERRORS = (AzureError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


def _not_found(key: str, exc: ResourceNotFoundError) -> storage.StorageError:
    """A missing blob, or (a store that cannot serve anything) a missing container."""
    if str(getattr(exc, "error_code", "") or "") == "ContainerNotFound":
        return storage.StorageError(f"{key}: the container does not exist")
    return storage.ObjectMissing(f"object {key!r} is missing")


def _block_id(number: int) -> str:
    # Every id of one blob must have the same length.
    return base64.b64encode(f"{number:08d}".encode()).decode()


def _credentials(environ: Mapping[str, str]) -> dict[str, Any]:
    """BlobServiceClient arguments from the variables the Azure tools read."""
    connection_string = environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        return {"conn_str": connection_string}
    account = environ.get("AZURE_STORAGE_ACCOUNT")
    url = environ.get("AZURE_STORAGE_ACCOUNT_URL") or (
        f"https://{account}.blob.core.windows.net" if account else None
    )
    if url is None:
        raise storage.StorageConfigError(
            "azure:// needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT "
            "(or AZURE_STORAGE_ACCOUNT_URL) with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN"
        )
    key = environ.get("AZURE_STORAGE_KEY")
    sas = environ.get("AZURE_STORAGE_SAS_TOKEN")
    if key and account:
        return {"account_url": url, "credential": {"account_name": account, "account_key": key}}
    if sas:
        return {"account_url": url, "credential": sas.lstrip("?")}
    raise storage.StorageConfigError(
        "azure:// needs AZURE_STORAGE_KEY (with AZURE_STORAGE_ACCOUNT) or AZURE_STORAGE_SAS_TOKEN"
    )


class AzureStorage(RemoteStore):
    """Block blobs under `prefix` in `container`.

    A write stages a block of at least `part_size` bytes each time the stream fills one and
    commits the block list only at the end; on failure or cancellation nothing is committed
    and the staged blocks are discarded. Credentials: AZURE_STORAGE_CONNECTION_STRING, or
    AZURE_STORAGE_ACCOUNT (or AZURE_STORAGE_ACCOUNT_URL) with AZURE_STORAGE_KEY or
    AZURE_STORAGE_SAS_TOKEN.
    """

    backend = "azure"

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        part_size: int = PART_SIZE,
        max_blocks: int = MAX_BLOCKS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(prefix)
        self.container_name = container
        self.part_size = part_size
        self.max_blocks = max_blocks
        self.max_object_size: int | None = part_size * max_blocks
        self._arguments = _credentials(os.environ if environ is None else environ)
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None

    async def _client(self) -> ContainerClient:
        await self._open_once(lambda: self._container is not None, self._open)
        assert self._container is not None
        return self._container

    async def _open(self) -> None:
        options: dict[str, Any] = {
            "retry_total": RETRIES,
            "connection_timeout": CONNECTION_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
        }
        arguments = dict(self._arguments)
        try:
            if "conn_str" in arguments:
                service = BlobServiceClient.from_connection_string(
                    arguments.pop("conn_str"), **options
                )
            else:
                service = BlobServiceClient(**arguments, **options)
        except ValueError as exc:
            raise storage.StorageConfigError(f"Azure credentials: {exc}") from None
        self._service = service
        self._container = service.get_container_client(self.container_name)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        full = self._key(key)
        taken = Tally()
        blocks: list[BlobBlock] = []
        buffer = bytearray()
        try:
            blob = (await self._client()).get_blob_client(full)

            async def stage() -> None:
                nonlocal buffer
                if len(blocks) >= self.max_blocks:
                    raise storage.StorageLimitExceeded(
                        f"{key}: more than {self.max_blocks} blocks of {self.part_size} bytes"
                    )
                block = _block_id(len(blocks) + 1)
                await blob.stage_block(block, bytes(buffer), length=len(buffer))
                blocks.append(BlobBlock(block_id=block))
                buffer = bytearray()

            async for chunk in chunks:
                taken.add(chunk)
                buffer += chunk
                if len(buffer) >= self.part_size:
                    await stage()
            if buffer:
                await stage()
            await blob.commit_block_list(
                blocks, content_settings=ContentSettings(content_type=content_type)
            )
        except BaseException as exc:
            buffer = bytearray()
            # Shielded: a cancelled write must still discard its blocks.
            await asyncio.shield(self._undo(key))
            failure = write_failure(key, exc, _ERRORS)
            if failure is None:
                raise
            raise failure from exc
        return taken.stored(key)

    async def _undo(self, key: str) -> None:
        """Discard staged blocks, and the blob in case the commit landed after all."""
        try:
            blob = (await self._client()).get_blob_client(self._key(key))
            with contextlib.suppress(ResourceNotFoundError):
                await blob.delete_blob()
            await self.abort_uploads(key)
        except (*_ERRORS, storage.StorageError):
            # The store is unreachable: maintenance discards what is left once it answers.
            return

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob = (await self._client()).get_blob_client(self._key(key))
        length = None if end is None else end - start + 1
        try:
            downloader = await blob.download_blob(offset=start, length=length)
        except ResourceNotFoundError as exc:
            raise _not_found(key, exc) from None
        except _ERRORS as exc:
            raise storage.StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc
        try:
            async for data in downloader.chunks():
                yield data
        except _ERRORS as exc:
            raise storage.StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc

    async def size(self, key: str) -> int:
        blob = (await self._client()).get_blob_client(self._key(key))
        try:
            properties = await blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise _not_found(key, exc) from None
        except _ERRORS as exc:
            raise storage.StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc
        return int(properties.size)

    async def exists(self, key: str) -> bool:
        blob = (await self._client()).get_blob_client(self._key(key))
        try:
            return bool(await blob.exists())
        except _ERRORS as exc:
            raise storage.StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc

    async def delete(self, key: str) -> None:
        blob = (await self._client()).get_blob_client(self._key(key))
        try:
            await blob.delete_blob()
        except ResourceNotFoundError:
            pass
        except _ERRORS as exc:
            raise storage.StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc
        await self.abort_uploads(key)

    async def abort_uploads(self, key: str) -> None:
        blob = (await self._client()).get_blob_client(self._key(key))
        try:
            committed, uncommitted = await blob.get_block_list("all")
            if committed or not uncommitted:
                # A complete blob is never touched here (its stray blocks expire on their
                # own); no blocks at all: nothing to discard.
                return
            # Staged blocks of a blob never committed cannot be deleted one by one:
            # committing an empty list discards them, and the empty blob goes next.
            await blob.commit_block_list([])
            await blob.delete_blob()
        except ResourceNotFoundError:
            return
        except _ERRORS as exc:
            raise storage.StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc

    async def _names(self, prefix: str, *, uncommitted: bool) -> set[str]:
        container = await self._client()
        include = ["uncommittedblobs"] if uncommitted else None
        names: set[str] = set()
        try:
            async for item in container.list_blobs(
                name_starts_with=self.prefix + prefix, include=include
            ):
                names.add(str(item.name)[len(self.prefix) :])
        except _ERRORS as exc:
            raise storage.StorageError(f"listing blobs: {type(exc).__name__}: {exc}") from exc
        return names

    async def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(await self._names(prefix, uncommitted=False))

    async def pending_uploads(self, prefix: str = "") -> list[str]:
        # Blobs listed only with uncommitted ones included have staged blocks and no commit.
        everything = await self._names(prefix, uncommitted=True)
        committed = await self._names(prefix, uncommitted=False)
        return sorted(everything - committed)

    async def check(self) -> None:
        container = await self._client()
        try:
            await container.get_container_properties()
        except _ERRORS as exc:
            raise storage.StorageError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
        self._service = None
        self._container = None
