"""TICKETEXPORT_STORAGE_URL: which backend each URL names, and the ones refused."""

from __future__ import annotations

import pytest

from tests.support.components import require_module
from ticketexport.storage import StorageConfigError
from ticketexport.storage.backends import from_url
from ticketexport.storage.local import LocalStorage


def test_file_urls_name_a_local_folder() -> None:
    store = from_url("file:///var/lib/ticketexport/exports")
    assert isinstance(store, LocalStorage)
    assert str(store.root) == "/var/lib/ticketexport/exports"
    assert store.max_object_size is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "file://otherhost/x",
        "s3:///prefix",
        "azure:///prefix",
        "s3://bucket/p?endpoint=http://x",
        "s3://bucket/p?addressing_style=sideways",
        "azure://container/p?sas=1",
        # A store needs a place of its own: not a bucket's or container's root (shared with
        # whatever else is there), not the file system's root.
        "s3://bucket",
        "s3://bucket/",
        "s3://bucket//?endpoint_url=http://127.0.0.1:9000",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "azure://container",
        "azure://container/",
        "file:///",
        "file://",
        "file:////",
        "file:///tmp/..",
    ],
)
def test_unusable_urls_are_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    with pytest.raises(StorageConfigError):
        from_url(url)


def test_s3_urls_carry_bucket_prefix_and_endpoint() -> None:
    require_module("aiobotocore", "the s3 extra")
    from ticketexport.storage.s3 import MAX_PARTS, S3Storage

    store = from_url("s3://exports/tenant/a/?endpoint_url=http://127.0.0.1:9000&region=eu-west-1")
    assert isinstance(store, S3Storage)
    assert (store.bucket, store.prefix, store.endpoint_url, store.region) == (
        "exports",
        "tenant/a/",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    assert store.max_object_size == MAX_PARTS * 8 * 1024 * 1024


def test_azure_needs_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("azure.storage.blob", "the azure extra")
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        from_url("azure://container/prefix")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_KEY"):
        from_url("azure://container/prefix")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "a2V5")
    assert from_url("azure://container/prefix").backend == "azure"
