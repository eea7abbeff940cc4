"""An SFTP server for the delivery tests: asyncssh's, on a loopback port, rooted in a folder,
with a client key and a pinned host key written where the product's settings point."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh

from tests.support.servers import free_port


@dataclasses.dataclass(frozen=True)
class SftpServer:
    root: Path
    port: int
    key_file: Path
    known_hosts: Path

    def url(self, user: str = "drop", path: str = "/incoming") -> str:
        return f"sftp://{user}@127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def sftp_server(folder: Path) -> AsyncIterator[SftpServer]:
    """Serve `folder/root` over SFTP to the holder of `folder/client_key` only."""
    root = folder / "root"
    root.mkdir(parents=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = folder / "client_key"
    client_key.write_private_key(str(key_file))
    key_file.chmod(0o600)
    port = free_port()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())

    def sftp(chan: Any) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=str(root).encode())

    listener = await asyncssh.listen(
        "127.0.0.1",
        port,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        sftp_factory=sftp,
        allow_scp=False,
    )
    try:
        yield SftpServer(root=root, port=port, key_file=key_file, known_hosts=known_hosts)
    finally:
        listener.close()
        await listener.wait_closed()
