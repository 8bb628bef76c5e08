"""Checks that read the disk: the data files and the item encoder a run names.

The launcher file is checked by `distrec.distributed.launcher.check_launcher`,
the only config check that knows launcher backends.
"""

from __future__ import annotations

from pathlib import Path

from distrec.config.errors import ConfigError
from distrec.config.schema import RunConfig


def check_environment(cfg: RunConfig, base: Path | None = None) -> list[str]:
    """Check the files `cfg` names, relative to `base` (default: the cwd).

    Returns notes worth printing; raises ConfigError for a file that is missing.
    """
    base = base or Path.cwd()
    check_data_files(cfg, base)
    return check_item_encoder(cfg, base)


def check_data_files(cfg: RunConfig, base: Path) -> None:
    """Every domain's `interactions` and `items` file (or folder of parts) exists.

    URIs (`s3://...`, read by the Ray engine through pyarrow) are left to the reader."""
    for i, d in enumerate(cfg.data.domains):
        for field in ("interactions", "items"):
            value = getattr(d, field)
            if value is not None and "://" not in value and not (base / value).exists():
                raise ConfigError(
                    f"data.domains.{i}.{field}={value!r}: no such file (looked in {base / value}); "
                    f"fix the path or use `embedded:` for the bundled MovieLens data"
                )


def check_item_encoder(cfg: RunConfig, base: Path) -> list[str]:
    """A local model.item_encoder is an HF folder; returns a note for one read from the cache."""
    enc = cfg.model.item_encoder
    if enc.startswith("embedded:"):
        return []
    local = base / enc
    looks_local = enc.startswith((".", "/", "~")) or local.exists()
    if looks_local and not (local / "config.json").exists():
        raise ConfigError(
            f"model.item_encoder={enc!r}: no HF checkpoint there (looked for {local / 'config.json'}); "
            f"point it at a folder holding config.json and weights"
        )
    if not looks_local:
        return [f"model.item_encoder={enc!r} is read from the local HF cache (offline)"]
    return []
