"""One pipeline run at a time: an exclusive `flock` on `data_dir/pipeline/lock`.

The operating system releases the lock when its holder's process ends, however it ends (a crash, a kill), so a
stale lock never blocks the next run. The holder writes its run id, pid, host and start time into the file, so a
second run can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from recsys.errors import RecsysError


class PipelineBusyError(RecsysError):
    """Another pipeline run holds the lock."""

    http_status = 409


class PipelineLock:
    """`with PipelineLock(path, run_id):` holds the lock for the block; raises `PipelineBusyError` when held."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path, self.run_id = path, run_id
        self._file: IO[str] | None = None

    def __enter__(self) -> PipelineLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock is
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = describe_holder(handle.read())
            handle.close()
            raise PipelineBusyError(f"another pipeline run holds {self.path}: {holder}; wait for it to end "
                                    "(the lock is released when its process exits, also on a crash)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(UTC).isoformat(timespec="seconds")}))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def describe_holder(text: str) -> str:
    """'run R (pid P on H, since T)' from the lock file's content; what is known when it is not readable."""
    try:
        holder = json.loads(text)
        return f"run {holder['run_id']} (pid {holder['pid']} on {holder['host']}, since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its run id yet"
