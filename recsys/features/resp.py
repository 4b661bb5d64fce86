"""Bulk HSETs to Redis over its wire protocol, for materialization.

redis-py spends most of a pipelined bulk load building and parsing Python objects per command;
here commands are packed straight into RESP bytes and the replies are counted with hiredis.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import hiredis

from recsys.errors import StoreUnavailableError

COMMANDS_PER_ROUND = 2_000


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class RespConnection:
    def __init__(self, host: str, port: int, db: int = 0, timeout: float = 30.0) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise StoreUnavailableError(f"Redis at {host}:{port} did not answer: {exc}") from exc
        self._reader = hiredis.Reader()
        if db:
            self._round([b"*2\r\n$6\r\nSELECT\r\n" + bulk(str(db).encode())])

    def hset_many(self, rows: Iterable[tuple[bytes, int, bytes]]) -> int:
        """HSET key field value ... for each (key, number of fields and values, their RESP bulks) row.

        Fields and values come already packed by `bulk`, so constant field names are packed once.
        Returns the rows written.
        """
        pending: list[bytes] = []
        written = 0
        for key, parts, packed in rows:
            pending.append(b"*%d\r\n$4\r\nHSET\r\n%s%s" % (parts + 2, bulk(key), packed))
            if len(pending) == COMMANDS_PER_ROUND:
                written += self._round(pending)
                pending = []
        if pending:
            written += self._round(pending)
        return written

    def _round(self, commands: list[bytes]) -> int:
        self._sock.sendall(b"".join(commands))
        replies = 0
        while replies < len(commands):
            reply = self._reader.gets()
            if reply is False:
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    raise StoreUnavailableError("Redis closed the connection during a bulk write")
                self._reader.feed(chunk)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise StoreUnavailableError(f"Redis refused a write: {reply}")
            replies += 1
        return replies

    def close(self) -> None:
        self._sock.close()
