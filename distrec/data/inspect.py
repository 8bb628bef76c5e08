"""`distrec data inspect`: counts from the manifest and a check of every shard's sha256."""

from __future__ import annotations

from pathlib import Path

from distrec.data.manifest import load_manifest
from distrec.utils.hashing import sha256_file
from distrec.utils.progress import progress


def inspect_manifest(path: str | Path, verify: bool = True) -> tuple[str, bool]:
    """A printable report and whether every shard (and the catalog) checks out."""
    m = load_manifest(path)
    lines = [f"domain: {m.domain}   ({m.root})"]
    for key, value in m.counts.items():
        lines.append(f"  {key:28s} {value}")
    lines.append(f"  {'shards':28s} {len(m.shards)}")
    ok = True
    if verify:
        problems = []
        for shard in progress(m.shards, f"{m.domain}: verifying shards"):
            file = m.root / "shards" / shard.name
            if not file.exists():
                problems.append(f"{shard.name}: missing")
            elif sha256_file(file) != shard.sha256:
                problems.append(f"{shard.name}: sha256 mismatch (corrupt or modified)")
        catalog = m.data["catalog"]
        if sha256_file(m.root / catalog["file"]) != catalog["sha256"]:
            problems.append(f"{catalog['file']}: sha256 mismatch")
        features = m.data.get("features")
        if features and sha256_file(m.root / features["file"]) != features["sha256"]:
            problems.append(f"{features['file']}: sha256 mismatch")
        ok = not problems
        lines.append("  integrity: ok" if ok else "  integrity: FAILED")
        lines.extend(f"    - {p}" for p in problems)
    return "\n".join(lines), ok
