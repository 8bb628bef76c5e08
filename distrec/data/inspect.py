"""`distrec data inspect`: counts from the manifest and a check of every shard's sha256."""

from __future__ import annotations

from pathlib import Path

from distrec.data.manifest import damaged_files, load_manifest


def inspect_manifest(path: str | Path, verify: bool = True) -> tuple[str, bool]:
    """A printable report and whether every shard (and the catalog) checks out."""
    m = load_manifest(path)
    lines = [f"domain: {m.domain}   ({m.root})"]
    for key, value in m.counts.items():
        lines.append(f"  {key:28s} {value}")
    lines.append(f"  {'shards':28s} {len(m.shards)}")
    ok = True
    if verify:
        problems = [
            f"{d.name}: missing"
            if d.actual is None
            else f"{d.name}: sha256 mismatch (corrupt or modified)"
            for d in damaged_files(m)
        ]
        ok = not problems
        lines.append("  integrity: ok" if ok else "  integrity: FAILED")
        lines.extend(f"    - {p}" for p in problems)
    return "\n".join(lines), ok
