"""The README's security notes, each held true by a test: `pipe:` shard URLs come from the
run config only, never from a manifest; checkpoints are trusted input (they hold pickles),
exports are not (safetensors and JSON only); `trust_remote_code` stays off unless asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distrec.config import ConfigError
from distrec.data.manifest import MANIFEST, Manifest
from tests.conftest import ROOT, tiny_run_config


def copied_domain(synth_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    shutil.copytree(synth_dir / "tiny", root)
    return root


@pytest.mark.parametrize("name", ["x.tar; touch PWNED", "../../elsewhere.tar", "$(id).tar"])
def test_a_manifest_cannot_smuggle_a_command_into_a_pipe_url(name, synth_dir, tmp_path):
    root = copied_domain(synth_dir, tmp_path)
    data = json.loads((root / MANIFEST).read_text())
    data["shards"][0]["name"] = name
    (root / MANIFEST).write_text(json.dumps(data))
    manifest = Manifest(root, data)
    with pytest.raises(ConfigError, match="not plain file names"):
        manifest.shard_urls("pipe:cat {root}/shards/{shard}")
    with pytest.raises(ConfigError, match="not plain file names"):
        manifest.shard_urls()
    assert not (Path.cwd() / "PWNED").exists()


def test_the_run_configs_pipe_template_still_reads_honest_shards(synth_dir, tmp_path):
    root = copied_domain(synth_dir, tmp_path)
    manifest = Manifest(root, json.loads((root / MANIFEST).read_text()))
    urls = manifest.shard_urls("pipe:cat {root}/shards/{shard}")
    assert urls and all(u.startswith(f"pipe:cat {root}/shards/") for u in urls)


def test_distrec_itself_unpickles_nothing_outside_accelerates_checkpoints():
    """Every torch.load in the package is weights_only=True; no pickle.load at all. What
    does unpickle is Accelerate's own checkpoint loading (RNG states): checkpoints are
    trusted input, as the README says."""
    offenders = []
    for path in (ROOT / "distrec").rglob("*.py"):
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if "pickle.load" in line or "pickle.loads" in line:
                offenders.append(f"{path}:{i}")
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path}:{i}")
    assert not offenders, offenders


def test_a_checkpoint_holds_pickles_so_it_is_trusted_input(synth_dir, tmp_path):
    """The note "checkpoints are trusted input" stays true only while they do: if
    Accelerate ever stops pickling RNG states, this test says the note can go."""
    import yaml

    from distrec.train.entry import run_training

    cfg = tiny_run_config(
        synth_dir,
        tmp_path / "run",
        stages={"pretrain": {"epochs": 1}, "zero_shot": False, "adapt": {"enabled": False}},
    )
    cfg["stages"]["baselines"] = []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert run_training(str(tmp_path / "c.yaml")) == 0
    saved = sorted((tmp_path / "run" / "checkpoints" / "pretrain").glob("step-*/*"))
    pickled = [p for p in saved if _is_pickle(p)]
    assert pickled, [p.name for p in saved]
    export = [p for p in (tmp_path / "run" / "export").rglob("*") if p.is_file()]
    assert export and not [p for p in export if _is_pickle(p)]
    assert {p.suffix for p in export} <= {".safetensors", ".json", ".yaml", ".md", ".txt"}


def _is_pickle(path: Path) -> bool:
    head = path.read_bytes()[:2]
    if head[:1] == b"\x80":  # a raw pickle's PROTO opcode
        return True
    if head == b"PK":  # torch.save's zip holds a data.pkl
        import zipfile

        with zipfile.ZipFile(path) as z:
            return any(n.endswith(".pkl") for n in z.namelist())
    return False


def test_model_code_shipped_with_a_checkpoint_does_not_run_unless_asked(tmp_path):
    from distrec.models.encoder import load_encoder

    folder = tmp_path / "evil-lm"
    folder.mkdir()
    sentinel = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('x')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "auto_map": {
                    "AutoConfig": "modeling_evil.EvilConfig",
                    "AutoModel": "modeling_evil.EvilModel",
                },
            }
        )
    )
    with pytest.raises(ConfigError, match="evil-lm"):
        load_encoder(str(folder))
    assert not sentinel.exists()


def test_trust_remote_code_is_off_by_default():
    from distrec.config.model import ModelConfig

    assert ModelConfig().trust_remote_code is False
