"""S3-compatible object storage: streamed multipart uploads in bounded parts, aborted on failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from ticketexport.storage import (
    PART_SIZE,
    ObjectMissing,
    RemoteStore,
    StorageConfigError,
    StorageError,
    StorageLimitExceeded,
    StoredObject,
    Tally,
    write_failure,
)

# S3's own limit on the parts of one multipart upload.
MAX_PARTS = 10_000
READ_CHUNK = 1024 * 1024
# What a dead endpoint costs a request before it fails (an outage must end an attempt
# promptly, not after minutes of retries).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
# One retry: the export job itself retries whole attempts, and an outage must end an
# attempt in seconds.
RETRIES = 2

_ERRORS = (BotoCoreError, ClientError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


def _missing(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return code in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
    return False


class S3Storage(RemoteStore):
    """Objects under `prefix` in `bucket` of any S3-compatible endpoint.

    A write sends parts of at least `part_size` bytes as the stream fills them (a stream
    shorter than one part is a single PUT) and completes the upload only at the end; any
    failure or cancellation aborts it. Credentials come from botocore's standard sources
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, instance
    roles).
    """

    backend = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: str | None = None,
        part_size: int = PART_SIZE,
        max_parts: int = MAX_PARTS,
    ) -> None:
        if addressing_style not in (None, "path", "virtual", "auto"):
            raise StorageConfigError("s3:// addressing_style must be path, virtual or auto")
        super().__init__(prefix)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        )
        self.part_size = part_size
        self.max_parts = max_parts
        self.max_object_size: int | None = part_size * max_parts
        self._config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": RETRIES, "mode": "standard"},
            # Other S3-compatible servers name buckets in the path; AWS accepts both.
            s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
            # Checksums only where S3 requires them: not every compatible server knows the
            # newer default ones.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def _s3(self) -> Any:
        await self._open_once(lambda: self._client is not None, self._open)
        return self._client

    async def _open(self) -> None:
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=self._config,
            )
        )

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        full = self._key(key)
        taken = Tally()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        # The one part in memory: sent as soon as it reaches part_size.
        buffer = bytearray()
        try:
            s3 = await self._s3()
            async for chunk in chunks:
                taken.add(chunk)
                buffer += chunk
                if len(buffer) < self.part_size:
                    continue
                if upload_id is None:
                    created = await s3.create_multipart_upload(
                        Bucket=self.bucket, Key=full, ContentType=content_type
                    )
                    upload_id = str(created["UploadId"])
                await self._send_part(s3, key, full, upload_id, parts, bytes(buffer))
                buffer = bytearray()
            if upload_id is None:
                await s3.put_object(
                    Bucket=self.bucket, Key=full, Body=bytes(buffer), ContentType=content_type
                )
            else:
                if buffer:
                    await self._send_part(s3, key, full, upload_id, parts, bytes(buffer))
                buffer = bytearray()
                await s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            buffer = bytearray()
            # Shielded: a cancelled write must still take its upload with it.
            await asyncio.shield(self._undo(full, upload_id))
            failure = write_failure(key, exc, _ERRORS)
            if failure is None:
                raise
            raise failure from exc
        return taken.stored(key)

    async def _send_part(
        self,
        s3: Any,
        key: str,
        full: str,
        upload_id: str,
        parts: list[dict[str, Any]],
        body: bytes,
    ) -> None:
        """Upload the next part, unless the object would outgrow S3's part count."""
        if len(parts) >= self.max_parts:
            raise StorageLimitExceeded(
                f"{key}: more than {self.max_parts} parts of {self.part_size} bytes"
            )
        number = len(parts) + 1
        sent = await s3.upload_part(
            Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
        )
        parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def _undo(self, full: str, upload_id: str | None) -> None:
        """Abort the upload, and remove the object in case its last request landed after
        all (a cancel can arrive while the server is completing it)."""
        try:
            s3 = await self._s3()
            if upload_id is not None:
                with contextlib.suppress(ClientError):
                    await s3.abort_multipart_upload(
                        Bucket=self.bucket, Key=full, UploadId=upload_id
                    )
            await s3.delete_object(Bucket=self.bucket, Key=full)
        except _ERRORS:
            # The store is unreachable: maintenance aborts what is left once it answers.
            return

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        s3 = await self._s3()
        wanted = f"bytes={start}-{'' if end is None else end}"
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(key), Range=wanted)
        except _ERRORS as exc:
            if _missing(exc):
                raise ObjectMissing(f"object {key!r} is missing") from None
            raise StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc
        body = response["Body"]
        try:
            while True:
                try:
                    data = await body.read(READ_CHUNK)
                except _ERRORS as exc:
                    raise StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc
                if not data:
                    break
                yield data
        finally:
            body.close()

    async def _head(self, key: str) -> dict[str, Any] | None:
        s3 = await self._s3()
        try:
            head: dict[str, Any] = await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except _ERRORS as exc:
            if _missing(exc):
                return None
            raise StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc
        return head

    async def size(self, key: str) -> int:
        head = await self._head(key)
        if head is None:
            raise ObjectMissing(f"object {key!r} is missing")
        return int(head["ContentLength"])

    async def exists(self, key: str) -> bool:
        return await self._head(key) is not None

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        try:
            # Deleting a missing key succeeds in S3.
            await s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _ERRORS as exc:
            if not _missing(exc):
                raise StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc
        await self.abort_uploads(key)

    async def _uploads(self, full_prefix: str) -> list[tuple[str, str]]:
        s3 = await self._s3()
        found: list[tuple[str, str]] = []
        try:
            paginator = s3.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for upload in page.get("Uploads", []):
                    found.append((str(upload["Key"]), str(upload["UploadId"])))
        except _ERRORS as exc:
            raise StorageError(f"listing uploads: {type(exc).__name__}: {exc}") from exc
        return found

    async def abort_uploads(self, key: str) -> None:
        full = self._key(key)
        s3 = await self._s3()
        for found, upload_id in await self._uploads(full):
            if found != full:
                continue
            try:
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except _ERRORS as exc:
                if not _missing(exc):
                    raise StorageError(f"{key}: {type(exc).__name__}: {exc}") from exc

    async def pending_uploads(self, prefix: str = "") -> list[str]:
        uploads = await self._uploads(self.prefix + prefix)
        return sorted({found[len(self.prefix) :] for found, _ in uploads})

    async def list_keys(self, prefix: str = "") -> list[str]:
        s3 = await self._s3()
        keys: list[str] = []
        try:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(
                    str(item["Key"])[len(self.prefix) :] for item in page.get("Contents", [])
                )
        except _ERRORS as exc:
            raise StorageError(f"listing objects: {type(exc).__name__}: {exc}") from exc
        return sorted(keys)

    async def check(self) -> None:
        s3 = await self._s3()
        try:
            await s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except _ERRORS as exc:
            raise StorageError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
