"""A real S3 server for the tests: moto in server mode on loopback, reached through a small TCP
relay that the tests can slow down (one object answers late) or cut (the endpoint goes away
mid-run and comes back on the same port, the objects still there, as after a restart)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """Forwards TCP connections from ``127.0.0.1:port`` to ``127.0.0.1:target``. A request
    whose bytes hold a key of ``delays`` waits that many seconds first; :meth:`stop` closes
    the port and every open connection (clients then get 'connection refused')."""

    def __init__(self, target: int, port: int | None = None):
        self.target = target
        self.port = port or free_port()
        self.delays: dict[bytes, float] = {}
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        self._stopped.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if requests:
                    for needle, seconds in list(self.delays.items()):
                        if needle in data:
                            time.sleep(seconds)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@dataclass
class S3Server:
    """The moto server and the relay in front of it; tests use :attr:`endpoint`."""

    moto: Any
    relay: Relay
    relays: list[Relay] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.relay.endpoint

    def options(self, relay: Relay | None = None) -> list[str]:
        """``--storage-option`` values that reach the server."""
        return [f"endpoint_override={(relay or self.relay).endpoint}"]

    def storage(self, relay: Relay | None = None) -> Any:
        from scoring.storage import StorageOptions

        return StorageOptions.parse(self.options(relay))

    def filesystem(self) -> Any:
        """A pyarrow S3 file system for setting up and inspecting test data."""
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return name

    def new_relay(self) -> Relay:
        """Another endpoint to the same server, for a test that cuts it."""
        relay = Relay(self.relay.target).start()
        self.relays.append(relay)
        return relay

    def user_for(self, bucket: str) -> tuple[str, str]:
        """A new IAM user allowed ``s3:*`` on ``bucket`` only: its (access key, secret key)."""
        import json
        import uuid

        import boto3

        logging.getLogger("botocore").setLevel(logging.WARNING)  # not in the tests' stderr
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1")
        name = f"user-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
        policy = {"Effect": "Allow", "Action": "s3:*", "Resource": resources}
        iam.put_user_policy(
            UserName=name,
            PolicyName="one-bucket",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    @contextmanager
    def enforcing_access(self) -> Iterator[None]:
        """Requests are checked against IAM (signature, user policy) while inside: moto lets
        everyone do everything otherwise."""
        from moto import settings

        saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        try:
            yield
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = saved

    def put(self, path: str, data: bytes) -> str:
        """Write ``bucket/key``; returns its ``s3://`` URI."""
        with self.filesystem().open_output_stream(path, compression=None) as fh:
            fh.write(data)
        return f"s3://{path}"


def start_server() -> S3Server:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    return S3Server(moto=moto, relay=Relay(port).start())


def stop_server(server: S3Server) -> None:
    for relay in [server.relay, *server.relays]:
        relay.stop()
    server.moto.stop()
