"""A TCP proxy in front of PostgreSQL whose link the tests can cut and
restore, so that one replica loses its database (every connection reset, new
ones refused) while the machine's cluster keeps serving everyone else."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class CuttableLink:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.restore()

    def restore(self) -> None:
        """Accepts connections again (the database is back)."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Resets every connection through the link and refuses new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets.update((client, server))
            state = _Connection()
            threading.Thread(target=self._upstream, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, state), daemon=True).start()

    def drop_answer(self, after: bytes, to: bytes) -> threading.Event:
        """On the next connection that sends `after` and then `to`, the
        database's answer to `to` is dropped and the connection cut: the
        request reached the database and was carried out, its answer never
        arrived. Set when that happened."""
        dropped = threading.Event()
        with self._lock:
            self._drop = (after, to, dropped)
        return dropped

    _drop: tuple[bytes, bytes, threading.Event] | None = None

    def _upstream(self, client: socket.socket, server: socket.socket, state: _Connection) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    drop = self._drop
                    if drop is not None:
                        state.seen_after = state.seen_after or drop[0] in data
                        if state.seen_after and drop[1] in data:
                            state.drop_reply, self._drop = drop[2], None
                server.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, state: _Connection) -> None:
        try:
            while data := server.recv(65536):
                if state.drop_reply is not None:
                    state.drop_reply.set()
                    return  # the answer goes nowhere: the connection is cut
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(server, client)

    def url(self, database_url: str) -> str:
        """database_url, through this link."""
        scheme, _, rest = database_url.partition("://")
        userinfo, _, hostpart = rest.rpartition("@")
        _, _, path = hostpart.partition("/")
        prefix = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{prefix}127.0.0.1:{self.port}/{path}"


class _Connection:
    seen_after = False
    drop_reply: threading.Event | None = None


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def cuttable_link(host: str = "127.0.0.1", port: int = 5432) -> Iterator[CuttableLink]:
    link = CuttableLink(host, port)
    try:
        yield link
    finally:
        link.cut()
