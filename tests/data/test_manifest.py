"""The prepared manifest's sha256 entries: every file recorded, damage found and explained."""

import json
import shutil

import pytest

from distrec.config import ConfigError
from distrec.data.manifest import damage_report, damaged_files, load_manifest, recorded_hashes
from distrec.utils.hashing import sha256_file


@pytest.fixture
def tiny(tmp_path, synth_dir):
    """A private copy of the tiny synthetic domain (the shared one must stay intact)."""
    copy = tmp_path / "tiny"
    shutil.copytree(synth_dir / "tiny", copy)
    return copy


def test_every_shard_and_the_catalog_have_their_sha256_recorded(tiny):
    m = load_manifest(tiny)
    recorded = recorded_hashes(m)
    shards = sorted(p.name for p in (tiny / "shards").glob("*.tar"))
    assert sorted(recorded) == sorted(["catalog.parquet", *(f"shards/{s}" for s in shards)])
    for name, digest in recorded.items():
        assert sha256_file(tiny / name) == digest, name
    assert damaged_files(m) == []
    assert list(recorded_hashes(m, shards=False)) == ["catalog.parquet"]


def test_a_flipped_byte_in_a_shard_is_named_with_both_hashes_and_the_fix(tiny):
    shard = sorted((tiny / "shards").glob("*.tar"))[2]
    recorded = sha256_file(shard)
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x01
    shard.write_bytes(bytes(data))
    m = load_manifest(tiny)
    (damaged,) = damaged_files(m)
    assert damaged.name == f"shards/{shard.name}" and damaged.expected == recorded
    assert damaged.actual == sha256_file(shard) != recorded
    report = damage_report(m, [damaged])
    assert f"{shard}: sha256 {damaged.actual}, the manifest records {recorded}" in report
    assert "re-run `distrec data prepare --overwrite`" in report
    (tiny / "catalog.parquet").unlink()
    assert [d.name for d in damaged_files(m)] == ["catalog.parquet", f"shards/{shard.name}"]
    assert "catalog.parquet: missing" in damage_report(m, damaged_files(m))


def test_a_manifest_without_sha256_entries_is_refused_with_the_fix(tiny):
    manifest = json.loads((tiny / "manifest.json").read_text())
    for shard in manifest["shards"]:
        del shard["sha256"]
    (tiny / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError) as caught:
        damaged_files(load_manifest(tiny))
    message = str(caught.value)
    assert "no sha256 recorded for ['shards/seq-000000.tar'" in message and "and more" in message
    assert "cannot be verified" in message and "prepare --overwrite" in message
