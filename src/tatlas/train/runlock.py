"""One run owns its folder: a lock file holding the owner's host and process id.

:class:`RunLock` creates ``<out_dir>/.run.lock`` with ``O_CREAT | O_EXCL`` (atomic: of two runs
starting together, one creates it), writes ``host pid`` into it, and removes it when the run ends.
A second run on the folder finds the lock and fails with :class:`RunFolderBusy` naming the owner.
A lock left by a run that died (its process no longer exists on this host) is stale: it is taken
over, with a warning. A lock written on another host cannot be checked and counts as held.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"


class RunFolderBusy(ValueError):
    """Another live run owns the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """``with RunLock(out_dir):`` — the run folder belongs to this process until the block ends."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _owner(self) -> tuple[str, int] | None:
        """``(host, pid)`` of the lock's owner; ``None`` if the file is gone or unreadable."""
        try:
            host, pid = self.path.read_text().split()
            return host, int(pid)
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}\n"
        for _ in range(3):  # a stale lock removed between our tries: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # being written this instant, or garbage
                    raise RunFolderBusy(f"{self.folder} is locked by another run ({self.path} exists but names no "
                                        "owner yet); if no run uses the folder, delete that file") from None
                host, pid = owner
                if host != socket.gethostname():
                    raise RunFolderBusy(f"{self.folder} is in use by process {pid} on host {host!r} ({self.path}); "
                                        "use another out folder, or delete that file if that run is gone") from None
                if _alive(pid):
                    raise RunFolderBusy(f"{self.folder} is in use by another run (process {pid}); use another out "
                                        "folder or wait for it to finish") from None
                log.warning("%s: taking over the lock of process %d, which is no longer running", self.folder, pid)
                if self._owner() == owner:  # still the dead run's (narrows the race with another taker)
                    self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise RunFolderBusy(f"{self.folder}: could not take the run lock {self.path}")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner[1] == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
