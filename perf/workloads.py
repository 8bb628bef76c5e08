"""The two workloads the suite measures: `quick` (tiny random-init encoder on tiny synthetic
domains, about a minute on 2 cores) and `full` (the end-to-end LoRA config on MovieLens with
all-MiniLM-L6-v2, the demo's encoder; optionally a >=1B random-init Qwen2-shaped encoder)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from perf.common import ROOT

FULL_CONFIG = ROOT / "configs" / "lora_end_to_end.yaml"
# The demo's global batch (2 processes x 32 users). Both distrec and the HF Trainer baseline
# run it; a user's batch decides how many history items repeat within it, so the speedup
# from de-duplication grows with it (1.13 occurrences per item at 16 users, 1.56 at 64).
FULL_BATCH = 64


@dataclass(frozen=True)
class Steps:
    """How many trainer steps each measurement takes (warm-up, windows x steps per window)."""

    cached: tuple[int, int, int]
    end_to_end: tuple[int, int, int]
    baseline: tuple[int, int, int]
    profile_steps: int
    equal_loss_steps: int
    eval_users: int
    data_batches: int
    data_workers: tuple[int, ...]


STEPS = {
    "quick": Steps((3, 3, 5), (1, 3, 2), (1, 3, 2), 1, 6, 200, 20, (0, 1)),
    # End-to-end shapes change every step (distinct items x longest text): oneDNN builds
    # kernels per new shape, so the end-to-end warm-up is longer than one step.
    "full": Steps((10, 8, 10), (3, 4, 2), (3, 4, 2), 1, 8, 943, 100, (0, 1, 2)),
}

# Encoders the suite can build from a config alone (random init): `tiny` for the quick
# suite; `qwen2-1b` a Qwen2-shaped decoder of ~1.07B parameters (with MiniLM's 30,522-token
# vocabulary) for GPU runs.
ENCODERS = {
    "tiny": {
        "family": "bert",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
    "qwen2-1b": {
        "family": "qwen2",
        "hidden_size": 2048,
        "num_hidden_layers": 20,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "intermediate_size": 5504,
        "max_position_embeddings": 512,
    },
}


@dataclass
class Workload:
    suite: str
    config: object  # RunConfig
    source: str
    target: str
    steps: Steps
    encoder: str

    def describe(self) -> dict:
        return {
            "suite": self.suite,
            "source": self.source,
            "target": self.target,
            "encoder": self.encoder,
            "steps": asdict(self.steps),
            "run_config": self.config.model_dump(mode="json"),
        }


def random_encoder(name: str, folder: Path) -> str:
    """Save a random-init encoder (with MiniLM's tokenizer, whose ids fit its vocab) and
    return its folder, so `load_encoder` reads it like any local checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2Model

    from distrec.models.encoder import load_encoder

    if (folder / "config.json").exists():
        return str(folder)
    spec = dict(ENCODERS[name])
    family = spec.pop("family")
    _, tok = load_encoder("embedded:all-MiniLM-L6-v2")
    torch.manual_seed(0)
    if family == "bert":
        model = BertModel(BertConfig(vocab_size=len(tok), **spec))
    else:
        model = Qwen2Model(Qwen2Config(vocab_size=len(tok), **spec))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def quick_workload(work: Path, overrides: list[str]) -> Workload:
    from distrec.config import config_from_dict
    from distrec.config.load import apply_override
    from distrec.data.synth import SynthSpec, synth_domain

    prepared = work / "prepared"
    for spec in (
        SynthSpec(name="tiny", users=600, items=120, mean_length=14, min_length=4, seed=3),
        SynthSpec(name="tiny-b", users=200, items=80, mean_length=10, min_length=3, seed=4),
    ):
        synth_domain(SynthSpec(**{**asdict(spec), "users_per_shard": 50}), prepared)
    tree = {
        "seed": 0,
        "cache_dir": str(work / "cache"),
        "data": {
            "prepared_dir": str(prepared),
            "domains": [
                {"name": "tiny", "format": "prepared"},
                {"name": "tiny-b", "format": "prepared"},
            ],
            "sources": ["tiny"],
            "target": "tiny-b",
            "max_history": 12,
            "num_workers": 1,
        },
        "model": {
            "item_encoder": random_encoder("tiny", work / "encoder-tiny"),
            "mode": "end_to_end",
            "dim": 32,
            "max_text_tokens": 16,
            "user_tower": {"layers": 1, "heads": 2},
        },
        "peft": {"method": "lora", "r": 4, "alpha": 8},
        "stages": {"adapt": {"enabled": False}, "baselines": []},
        "train": {"batch_size": 16, "precision": "auto", "report_to": []},
        "eval": {"batch_size": 64},
        "output": {"dir": str(work / "run")},
    }
    for item in overrides:
        apply_override(tree, item)
    cfg = config_from_dict(tree, "quick suite")
    return Workload("quick", cfg, "tiny", "tiny-b", STEPS["quick"], "tiny (random init)")


def full_workload(work: Path, overrides: list[str], encoder: str | None) -> Workload:
    from distrec.config import load_config
    from distrec.data.prepare import prepare_domains

    extra = [
        f"output.dir={work / 'run'}",
        "train.report_to=[]",
        f"train.batch_size={FULL_BATCH}",
    ]
    if encoder is not None:
        extra += [
            f"model.item_encoder={random_encoder(encoder, work / f'encoder-{encoder}')}",
            "model.pooling=last",
        ]
    cfg = load_config(FULL_CONFIG, [*extra, *overrides])
    # The config's relative paths mean the checkout (where the config lives), not the
    # folder `distrec bench` happens to be started from.
    anchored = [
        f"{key}={ROOT / value}"
        for key, value in (
            ("data.prepared_dir", cfg.data.prepared_dir),
            ("data.raw_dir", cfg.data.raw_dir),
            ("cache_dir", cfg.cache_dir),
        )
        if not Path(value).is_absolute()
    ]
    if anchored:
        cfg = load_config(FULL_CONFIG, [*extra, *overrides, *anchored])
    prepare_domains(cfg)
    source, target = cfg.data.sources[0], cfg.data.target
    label = cfg.model.item_encoder if encoder is None else f"{encoder} (random init)"
    return Workload("full", cfg, source, target or source, STEPS["full"], label)


def with_mode(cfg, mode: str, **changes):
    """The same run config in another execution mode (and other small changes)."""
    from distrec.config import config_from_dict

    tree = cfg.model_dump(mode="json")
    tree["model"]["mode"] = mode
    for dotted, value in changes.items():
        node = tree
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return config_from_dict(tree, f"{mode} variant")
