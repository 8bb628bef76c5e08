"""`distrec tune --resume DIR`: what must hold before a sweep continues, and its Tuner.

A sweep continues as it was started: sweep.json holds the config it was started with,
and a config file edited since is refused with the keys that changed (trials already run
would otherwise sit in one results table with trials of another sweep).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distrec.config import ConfigError
from distrec.config.load import apply_override, read_yaml
from distrec.utils.progress import log


def tree_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees, as `key: old -> new`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            dotted = f"{prefix}.{key}" if prefix else str(key)
            out += tree_changes(old.get(key, "<unset>"), new.get(key, "<unset>"), dotted)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def check_resumable(out_dir: Path, state: dict) -> None:
    """Refuse a finished sweep (nothing to resume) and one whose config changed since."""
    if (out_dir / "results.csv").exists():
        raise ConfigError(
            f"--resume {out_dir}: the sweep finished (results.csv is there), nothing to "
            f"resume; start another with `distrec tune --config ... --out NEW_DIR`"
        )
    config = Path(state["cwd"]) / state["config"]
    if not config.exists():
        log(f"resume: {config} is gone; continuing with the config saved in sweep.json")
        return
    tree = read_yaml(config)
    for item in state["overrides"]:
        apply_override(tree, item)
    # sweep.json went through JSON (tuples are lists, keys strings): so must the new tree.
    changes = tree_changes(state["tree"], json.loads(json.dumps(tree)))
    if changes:
        raise ConfigError(
            f"--resume {out_dir}: {config} changed since the sweep started "
            f"({'; '.join(changes)}); put it back as it was, or start a new sweep "
            f"with another --out"
        )


def restore_tuner(trainable, out_dir: Path, state: dict):
    """The interrupted sweep's Tuner: finished and failed trials stay as they are; running
    and pending ones continue (a running one from its last checkpoint)."""
    from ray import tune

    from distrec.tune.snapshot import SUFFIX, restore_snapshot

    path = f"{state['storage'].rstrip('/')}/{state['experiment']}"
    if "://" not in path and restore_snapshot(Path(path)):
        log(f"resume: Ray's state put back from its last consistent copy ({SUFFIX})")
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"--resume {out_dir}: no Ray experiment to restore at {path}")
    log(f"resuming sweep from {path}")
    # The progress callback comes back with the pickled RunConfig.
    return tune.Tuner.restore(
        path, trainable=trainable, resume_unfinished=True, resume_errored=False
    )
