"""Progress that suits the output: a tqdm bar on a terminal, plain log lines otherwise.

Only rank 0 reports; other ranks get a silent iterator.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def is_rank_zero() -> bool:
    """True in the process that logs (global rank 0, or not launched distributed)."""
    return int(os.environ.get("RANK", "0")) == 0


def log(message: str) -> None:
    """Print `[distrec] message` on rank zero only."""
    if is_rank_zero():
        print(f"[distrec] {message}", flush=True)


def progress(
    items: Iterable[T], desc: str, total: int | None = None, every_s: float = 10.0
) -> Iterator[T]:
    """Wrap `items` with a bar (TTY) or a line every `every_s` seconds with rate and ETA."""
    if not is_rank_zero():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, dynamic_ncols=True)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            print(_line(desc, done, total, now - start), flush=True)
    print(_line(desc, done, total, time.monotonic() - start, final=True), flush=True)


def _line(desc: str, done: int, total: int | None, elapsed: float, final: bool = False) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if final:
        return f"[distrec] {desc}: {done} in {elapsed:.1f}s ({rate:.1f}/s)"
    if total:
        eta = (total - done) / rate if rate > 0 else float("nan")
        return f"[distrec] {desc}: {done}/{total} ({rate:.1f}/s, ETA {eta:.0f}s)"
    return f"[distrec] {desc}: {done} ({rate:.1f}/s)"
