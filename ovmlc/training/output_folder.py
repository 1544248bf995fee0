"""The output folder of a run: one run at a time (an exclusive lock held for the whole run), never two runs mixed
(resume it or overwrite it explicitly), and write failures reported with the path and what to do.

The lock is `fcntl.flock` on `<output_dir>/.ovmlc-run.lock`, which records the holder (PID, host, start time,
command). The kernel releases a flock when its process dies, even by SIGKILL, so a killed run never leaves a lock that
blocks `--resume`: a leftover file is simply locked again. (On a network filesystem whose flock is not shared between
machines, two machines could still write one folder.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..files import LEGACY_TRAINER_STATE_FILE, RUN_LOCK_FILE, TRAINER_STATE_FILE
from .errors import OutputFolderLockedError, OutputWriteError

try:
    import fcntl
except ImportError:  # Windows (msvcrt.locking below)
    fcntl = None  # type: ignore[assignment]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


# ---------------------------------------------------------------------------------------------- write failures
def write_error(error: BaseException, path: str | os.PathLike, doing: str, then: str = "") -> OutputWriteError:
    """An `OutputWriteError` naming `path`, the cause (read-only folder, full disk, other) and what to do; `doing`
    says what was being written, `then` what to do once fixed (e.g. "rerun with --resume ...")."""
    message = str(error) or type(error).__name__
    code = getattr(error, "errno", None)
    if code in _NO_SPACE or "No space left on device" in message or "Disk quota exceeded" in message:
        cause = "the disk is full"
        fix = "free disk space (or set output_dir to a folder on another disk)"
    elif code in _NOT_WRITABLE or isinstance(error, PermissionError) or "Permission denied" in message:
        cause = "the folder is not writable"
        fix = "make it writable, or set output_dir to a writable folder (e.g. the override output_dir=...)"
    else:
        cause = f"{type(error).__name__}: {message}"
        fix = "fix the cause"
    return OutputWriteError(f"cannot write {path} while {doing}: {cause} ({message}). To continue: {fix}{then}.")


@contextlib.contextmanager
def reporting_write_errors(path: str | os.PathLike, doing: str, then: str = "") -> Iterator[None]:
    """Turn an OSError (or a safetensors error, which wraps one) raised inside into `write_error(...)`."""
    from safetensors import SafetensorError

    try:
        yield
    except OutputWriteError:
        raise
    except (OSError, SafetensorError) as error:
        raise write_error(error, path, doing, then) from error


# ---------------------------------------------------------------------------------------------- the run lock
def _lock(handle: int) -> bool:
    """Non-blocking exclusive lock of an open file; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # Windows: a byte-range lock, also released when its process exits

    try:
        msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class RunLock:
    """Exclusive lock on an output folder for the lifetime of one run (held by its main process)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / RUN_LOCK_FILE
        self._handle: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `OutputFolderLockedError` naming the folder and the run that holds it."""
        with reporting_write_errors(self.output_dir, "creating the output folder and its run lock"):
            self.output_dir.mkdir(parents=True, exist_ok=True)
            while True:
                handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if not _lock(handle):
                    os.close(handle)
                    raise OutputFolderLockedError(
                        f"output_dir {self.output_dir} is in use by another ovmlc run ({self._describe_holder()}); "
                        f"one run per output folder: wait for it to finish, stop it, or choose another output_dir"
                    )
                # A finishing run removes the file before unlocking it: if that happened between our open and our
                # lock, we hold a lock on a removed file; retry on the current one.
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = None
                if fcntl is None or current == os.fstat(handle).st_ino:
                    break
                os.close(handle)
            self._handle = handle
            holder = {
                "pid": os.getpid(),
                "host": platform.node(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join(sys.argv),
            }
            os.ftruncate(handle, 0)
            os.lseek(handle, 0, os.SEEK_SET)
            os.write(handle, (json.dumps(holder) + "\n").encode("utf-8"))
            os.fsync(handle)

    def _describe_holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            holder = None
        if not isinstance(holder, dict):
            return f"lock file {self.path}"
        return (
            f"PID {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}, "
            f"command: {holder.get('command', '?')}; lock file {self.path}"
        )

    def release(self) -> None:
        if self._handle is None:
            return
        if fcntl is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # before unlocking: a run that opened this file meanwhile retries on a fresh one
        os.close(self._handle)  # closing releases the lock
        self._handle = None


# ---------------------------------------------------------------------------------------------- occupied folders
def holds_a_run(output_dir: Path, checkpoints: list) -> bool:
    """A folder holds a run when it has complete checkpoints or a final trainer state (new or legacy name)."""
    state_files = (TRAINER_STATE_FILE, LEGACY_TRAINER_STATE_FILE)
    return bool(checkpoints) or any((output_dir / name).is_file() for name in state_files)


def clear_previous_run(output_dir: Path, checkpoints_dir: Path) -> None:
    """`--overwrite`: forget the earlier run's checkpoints and state (the rest is rewritten by this run)."""
    with reporting_write_errors(output_dir, "removing the earlier run (--overwrite)"):
        if checkpoints_dir.exists():
            shutil.rmtree(checkpoints_dir)
        for name in (TRAINER_STATE_FILE, LEGACY_TRAINER_STATE_FILE):
            (output_dir / name).unlink(missing_ok=True)


__all__ = ["RunLock", "clear_previous_run", "holds_a_run", "reporting_write_errors", "write_error"]
