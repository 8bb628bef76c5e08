"""Folders written whole: swapped into place when complete, and what a full disk needs.

Checkpoints (distrec.train.checkpoint) and prepared domains (distrec.data.writer) are both
written into a hidden sibling folder and renamed over the old one only when complete, so
a failed write (a crash, a full disk) leaves the previous folder as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# A full disk, or a full quota (what a shared cluster's home or scratch usually hits first).
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutOfSpace(OSError):
    """A folder could not be written for want of disk space; the message names the folder,
    the space it needs, the space free and the way out."""


def swap_into_place(staging: Path, final: Path) -> None:
    """Rename the complete folder `staging` to `final`, replacing what was there: the old
    folder is moved aside first and removed only once the new one is in place (it is put
    back if that rename fails)."""
    if not final.exists():
        os.replace(staging, final)
        return
    retired = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, retired)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(retired, final)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def folder_bytes(root: Path) -> int:
    """The bytes of every file under `root` (0 when it does not exist)."""
    if not root.exists():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def no_space_cause(err: BaseException) -> OSError | None:
    """The out-of-space OSError (ENOSPC, EDQUOT) behind `err`: itself, its cause or
    context, or a Ray task's `cause`; None when the failure was something else."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return current
        ray_cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError
        if isinstance(ray_cause, BaseException):
            current = ray_cause
        else:
            current = current.__cause__ or current.__context__
    return None


def out_of_space_error(
    cause: OSError, target: Path, *, written: int, previous: Path | None, elsewhere: str
) -> OutOfSpace:
    """The error for a write of folder `target` that ran out of space after `written`
    bytes; the space it needs is estimated from `previous` (the folder it replaces, or the
    last one of its kind) when there is one. `elsewhere`: the setting that moves it."""
    free = shutil.disk_usage(_existing_parent(target)).free
    if previous is not None and previous.exists():
        need = max(folder_bytes(previous), written)
        estimate = f"about {_size(need)} (the size of {previous})"
    else:
        need = written
        estimate = f"more than the {_size(written)} written before it failed"
    at = f" (at {cause.filename})" if cause.filename else ""
    return OutOfSpace(
        cause.errno,
        f"no space left on the device writing {target}{at}: "
        f"{_size(written)} were written before it failed and it needs {estimate}, with "
        f"{_size(free)} free there; the partial output was removed and the previous one is "
        f"untouched; free space on that disk{_at_least(need - free)}, or {elsewhere}",
    )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _at_least(n: int) -> str:
    return f" (at least {_size(n)} more)" if n > 0 else ""


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB ({n:,} bytes)"
