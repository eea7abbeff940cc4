"""The backend a storage URL names: each SDK imported only when its scheme is configured."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ticketexport.storage import Storage, StorageConfigError, StorageError, check_key


def from_url(url: str) -> Storage:
    """The backend named by TICKETEXPORT_STORAGE_URL's scheme.

    `file:///path`, `s3://bucket/prefix?endpoint_url=…&region=…`, `azure://container/prefix`.
    Each SDK is imported only when its scheme is configured; credentials come from the SDK's
    standard environment variables."""
    parts = urlsplit(url)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    if parts.scheme == "file":
        from ticketexport.storage.local import LocalStorage

        if parts.netloc not in ("", "localhost"):
            raise StorageConfigError("a file:// URL names no host (file:///path)")
        path = unquote(parts.path)
        if Path(path or "/").resolve() == Path("/"):
            # The root holds everything else on the host: a store there would list (and
            # could delete) the whole file system.
            raise StorageConfigError(
                "a file:// URL must name a folder of its own "
                "(file:///var/lib/ticketexport/exports), not the root"
            )
        return LocalStorage(path)
    if parts.scheme in ("s3", "azure"):
        container = parts.netloc
        prefix = unquote(parts.path).strip("/")
        if not container:
            raise StorageConfigError(f"a {parts.scheme}:// URL needs a bucket or container name")
        if not prefix:
            # The bucket root is shared with whatever else lives in the bucket.
            raise StorageConfigError(
                f"a {parts.scheme}:// URL needs a prefix of its own after the "
                f"{'bucket' if parts.scheme == 's3' else 'container'} "
                f"({parts.scheme}://{container}/ticketexport)"
            )
        try:
            check_key(prefix)
        except StorageError:
            raise StorageConfigError(
                f"the {parts.scheme}:// prefix {prefix!r} has an empty, '.' or '..' segment, "
                "a backslash or a control character"
            ) from None
        if parts.scheme == "s3":
            try:
                from ticketexport.storage.s3 import S3Storage
            except ImportError:
                raise StorageConfigError(
                    "s3:// needs the s3 extra (pip install 'ticketexport[s3]')"
                ) from None
            unknown = set(query) - {"endpoint_url", "region", "addressing_style"}
            if unknown:
                raise StorageConfigError(f"unknown s3:// option(s): {', '.join(sorted(unknown))}")
            return S3Storage(
                container,
                prefix,
                endpoint_url=query.get("endpoint_url"),
                region=query.get("region"),
                addressing_style=query.get("addressing_style"),
            )
        try:
            from ticketexport.storage.azure import AzureStorage
        except ImportError:
            raise StorageConfigError(
                "azure:// needs the azure extra (pip install 'ticketexport[azure]')"
            ) from None
        if query:
            raise StorageConfigError(f"unknown azure:// option(s): {', '.join(sorted(query))}")
        return AzureStorage(container, prefix)
    raise StorageConfigError(f"storage scheme {parts.scheme!r} is not supported")
