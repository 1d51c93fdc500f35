"""A real Azure Blob endpoint for tests: Azurite (the Azure Storage emulator, from the npm registry) on
127.0.0.1, a flat-namespace account as most Blob storage accounts are.

    python tests/azure_server.py     # start one, print its environment, stop it on Enter

`make setup` installs it into .cache/azurite (npm install azurite); AZURITE_BLOB may name another
`azurite-blob`. Fixtures: ``azure_server`` (session) starts one, or is None where Azurite or Node.js is
missing (the tests that need it skip, saying why); ``azure_container`` (per test) creates a fresh
container, points AZURE_STORAGE_CONNECTION_STRING (the Azure SDKs' convention) at the server for the
test and yields ``abfs://<container>``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from server_process import ServerProcess, for_session, free_port, run_until_enter

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class AzureServer:
    endpoint: str  # "http://127.0.0.1:PORT/devstoreaccount1"
    proc: ServerProcess

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING":
                f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={self.endpoint};"}

    def filesystem(self):
        import pyarrow.fs as pafs

        authority = self.endpoint.split("://", 1)[1].split("/", 1)[0]
        return pafs.AzureFileSystem(account_name=ACCOUNT, account_key=KEY, blob_storage_authority=authority,
                                    dfs_storage_authority=authority, blob_storage_scheme="http", dfs_storage_scheme="http")


def azurite_binary() -> str | None:
    if os.environ.get("AZURITE_BLOB"):
        return os.environ["AZURITE_BLOB"]
    local = REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def start_azure_server(root: Path) -> AzureServer:
    binary = azurite_binary()
    if binary is None or shutil.which("node") is None:
        raise FileNotFoundError("azurite-blob or node is missing: npm install --prefix .cache/azurite azurite")
    port = free_port()
    proc = ServerProcess.launch("Azurite", [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                                            str(root / "data"), "--skipApiVersionCheck", "--loose"], root)
    proc.wait_ready(lambda: "successfully listens" in proc.log_tail())
    return AzureServer(endpoint=f"http://127.0.0.1:{port}/{ACCOUNT}", proc=proc)


@pytest.fixture(scope="session")
def azure_server() -> Iterator[AzureServer | None]:
    """One Azurite for the session, or None where it cannot run (its tests skip with the reason)."""
    if azurite_binary() is None or shutil.which("node") is None:
        yield None
        return
    yield from for_session("vidgen-azure-", start_azure_server)


@pytest.fixture
def azure_container(azure_server: AzureServer | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh container on Azurite, with AZURE_STORAGE_CONNECTION_STRING pointing at it; yields
    abfs://<container> (the account comes from the connection string)."""
    if azure_server is None:
        pytest.skip("Azurite is missing (npm install --prefix .cache/azurite azurite; `make setup` does it where npm exists)")
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in azure_server.env().items():
        monkeypatch.setenv(name, value)
    container = f"vidgen-test-{uuid.uuid4().hex[:12]}"
    azure_server.filesystem().create_dir(container)
    yield f"abfs://{container}"


if __name__ == "__main__":
    run_until_enter("vidgen-azure-", start_azure_server)
