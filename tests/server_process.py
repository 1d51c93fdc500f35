"""A local server for tests (the GCS emulator, Azurite): its own process session with its output in a log
file, a readiness wait that reports the log when the server dies or never answers, and a stop that sends
SIGTERM, then SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

S = TypeVar("S")  # a server dataclass with its ServerProcess as ``proc`` and its ``env()``


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    name: str
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @classmethod
    def launch(cls, name: str, command: list[str], root: Path) -> ServerProcess:
        log_path = root / f"{name.replace(' ', '-')}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=root, start_new_session=True)
        return cls(name, log_path, process)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def for_session(prefix: str, start: Callable[[Path], S]) -> Iterator[S]:
    """The body of a session fixture: the server runs in a fresh temp folder, always stopped and removed."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = start(root)
    try:
        yield server
    finally:
        server.proc.stop()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)


def run_until_enter(prefix: str, start: Callable[[Path], S]) -> None:
    """`python tests/<x>_server.py`: start one, print its environment, stop it on Enter."""
    for server in for_session(prefix, start):
        print("\n".join(f"export {k}='{v}'" for k, v in server.env().items()))  # type: ignore[attr-defined]
        input("Enter stops it. ")
