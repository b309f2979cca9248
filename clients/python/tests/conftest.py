"""A live presenced node for the whole test session, tokens for it, and a TCP proxy whose
connections a test can cut (to drop a client's connection without touching the node).

The node is the binary cargo built (``target/debug/presenced``, or ``$PRESENCED_BIN``), on the
memory store, on a port of its own choosing, with a known HS256 secret; it is stopped at the
end of the session.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import secrets
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import jwt
import pytest

from presenced_client import Backoff, PresenceClient

REPO = Path(__file__).resolve().parents[3]
SECRET = "python-client-tests-secret-" + secrets.token_hex(16)
RUN = secrets.token_hex(3)
_serial = itertools.count(1)


def make_token(sub: str, *, role: str = "user", org: str | None = None, ttl: float = 3600) -> str:
    """An HS256 token as ``presenced token`` makes them (claims are strings)."""
    claims: dict[str, object] = {"sub": sub, "exp": int(time.time() + ttl), "role": role}
    if org is not None:
        claims["org_id"] = org
    return jwt.encode(claims, SECRET, algorithm="HS256")


def unique(prefix: str = "u") -> str:
    """An id no other test uses (ids are [A-Za-z0-9_.:@-], at most 64 bytes)."""
    return f"{prefix}{RUN}-{next(_serial)}"


@dataclass
class Node:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def presenced_binary() -> Path:
    path = Path(os.environ.get("PRESENCED_BIN", REPO / "target" / "debug" / "presenced"))
    if not path.exists():
        pytest.exit(f"{path} is missing: build it with `cargo build -p presenced` (or set PRESENCED_BIN)", returncode=2)
    return path


def start_node(tmp: Path, *settings: str) -> Node:
    """Starts a node; ``settings`` are extra ``serve`` flags."""
    log = tmp / f"presenced-{next(_serial)}.log"
    err: IO[str] = open(log, "w")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(
        [
            str(presenced_binary()),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--set",
            f"auth.jwt_secret={SECRET}",
            *settings,
        ],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "presenced=info,warn")},
    )
    err.close()
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    url = None
    while url is None:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"presenced did not start; its log:\n{log.read_text()}")
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line.startswith("presenced listening on "):
            url = line.split()[-1].strip()
    node = Node(url=url, proc=proc, log=log)
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200:
                return node
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            node.stop()
            raise RuntimeError(f"presenced never became ready; its log:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # No offline grace: a session that ends shows its user offline at the next sweep (1 s),
    # so tests need not wait out the default 5 s.
    n = start_node(tmp_path_factory.mktemp("node"), "--set", "presence.offline_grace=0s")
    yield n
    n.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def service_token() -> str:
    return make_token(unique("svc"), role="service")


@pytest.fixture
async def service(node: Node, service_token: str) -> AsyncIterator[PresenceClient]:
    async with PresenceClient(node.url, service_token) as c:
        yield c


@pytest.fixture
async def user_client(node: Node) -> AsyncIterator[Callable[..., PresenceClient]]:
    """Makes clients acting as users (closed at the end of the test)."""
    made: list[PresenceClient] = []

    def make(user_id: str, *, org: str | None = None, url: str | None = None) -> PresenceClient:
        c = PresenceClient(url or node.url, make_token(user_id, org=org))
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


def fast_backoff() -> Backoff:
    return Backoff(0.05, 0.5)


@dataclass
class CuttableProxy:
    """A TCP proxy in front of the node. ``cut()`` aborts every connection through it (as a
    network failure would); while ``refusing`` it closes new connections at once, so a test
    can make changes while a client cannot reconnect."""

    target_port: int
    refusing: bool = False
    accepted: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    url: str = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy(node: Node) -> AsyncIterator[CuttableProxy]:
    p = CuttableProxy(node.port)
    await p.start()
    yield p
    await p.close()


async def eventually(check: Callable[[], object], *, timeout: float = 8.0, what: str = "condition") -> None:
    """Polls an async or sync check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def cancel(task: "asyncio.Task[object]") -> None:
    """Cancels a task (one iterating a stream, say) and waits until it has stopped."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
