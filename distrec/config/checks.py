"""Cross-field checks (run at load) and environment checks (files, launcher).

Each failure names the key, the offending value and the way out.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from distrec.config.errors import ConfigError

if TYPE_CHECKING:
    from distrec.config.schema import RunConfig

METRIC_RE = re.compile(r"^(recall|ndcg|mrr)@(\d+)$")


def template_fields(template: str) -> list[str]:
    """Names of the `{field}` placeholders of an item-text template."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as err:
        raise ConfigError(f"template {template!r} is not a valid format string: {err}") from err


def check_consistency(cfg: RunConfig) -> None:
    """Checks that need several fields at once; raises ValueError (wrapped by pydantic)."""
    _check_domains(cfg)
    _check_stages(cfg)
    _check_model(cfg)
    _check_eval(cfg)


def _check_domains(cfg: RunConfig) -> None:
    names = [d.name for d in cfg.data.domains]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(
            f"data.domains: domain names {dupes} appear twice; give each domain one entry"
        )
    for i, d in enumerate(cfg.data.domains):
        key = f"data.domains.{i}"
        if d.format == "prepared":
            continue
        if d.embedded is None and d.interactions is None:
            raise ValueError(
                f"{key} ({d.name!r}): neither `embedded` nor `interactions` is set; "
                f"name an embedded dataset (ml-1m, ml-100k) or point `interactions` at your log"
            )
        if d.embedded is not None and (d.interactions or d.items):
            raise ValueError(
                f"{key} ({d.name!r}): `embedded: {d.embedded}` and file paths are both set; keep one"
            )
        if d.embedded is None and (not d.text_fields or d.template is None or d.items is None):
            raise ValueError(
                f"{key} ({d.name!r}): user data needs `items` (the item table), `text_fields` and "
                f"`template`, e.g. template: '{{title}} ({{year}})' with text_fields: [title, year]"
            )
        if d.text_fields and d.template is not None:
            missing = [f for f in template_fields(d.template) if f not in d.text_fields]
            if missing:
                raise ValueError(
                    f"{key}.template={d.template!r} uses {missing}, which are not in "
                    f"text_fields={d.text_fields}; add them to text_fields or fix the template"
                )
    for key, value in (("data.sources", cfg.data.sources), ("data.target", [cfg.data.target])):
        for name in value:
            if name is not None and name not in names:
                raise ValueError(f"{key}: unknown domain {name!r}; known domains: {names}")
    if cfg.data.target is not None and cfg.data.target in cfg.data.sources:
        raise ValueError(
            f"data.target={cfg.data.target!r} is also in data.sources: the target would leak into "
            f"pretraining; remove it from data.sources"
        )
    for name, weight in cfg.data.mixture.items():
        if name not in cfg.data.sources:
            raise ValueError(
                f"data.mixture.{name}: {name!r} is not in data.sources={cfg.data.sources}"
            )
        if weight <= 0:
            raise ValueError(f"data.mixture.{name}={weight}: weights must be > 0")
    if cfg.data.resampled and cfg.data.epoch_batches is None:
        raise ValueError(
            "data.resampled=true needs data.epoch_batches (a resampled stream has no natural end)"
        )


def _check_stages(cfg: RunConfig) -> None:
    st = cfg.stages
    if st.pretrain.enabled and cfg.data.domains and not cfg.data.sources:
        raise ValueError(
            "stages.pretrain is enabled but data.sources is empty; list source domains or set "
            "stages.pretrain.enabled=false"
        )
    needs_target = st.zero_shot or st.adapt.enabled or st.baselines
    if needs_target and cfg.data.target is None and cfg.data.domains:
        raise ValueError(
            "stages zero_shot/adapt/baselines need data.target; name the target domain or disable them"
        )
    if cfg.tune.search_space and cfg.tune.stage == "adapt" and st.adapt.mode == "auto":
        raise ValueError(
            "tune.stage=adapt with stages.adapt.mode=auto: auto trains two adapt models "
            "(adapt_lora, adapt_full); sweep one of them with stages.adapt.mode=lora or full"
        )
    if st.zero_shot and not st.pretrain.enabled:
        raise ValueError(
            "stages.zero_shot=true evaluates the pretrained model, but stages.pretrain.enabled=false; "
            "enable pretraining or set stages.zero_shot=false"
        )


def _check_model(cfg: RunConfig) -> None:
    if cfg.model.mode == "cached" and cfg.peft.lm_target_modules:
        raise ValueError(
            f"peft.lm_target_modules={cfg.peft.lm_target_modules} but model.mode=cached freezes the LM; "
            f"use model.mode=end_to_end or drop peft.lm_target_modules"
        )
    ada = cfg.peft.adalora
    if cfg.peft.method == "adalora" and ada.target_r > ada.init_r:
        raise ValueError(
            f"peft.adalora.target_r={ada.target_r} > init_r={ada.init_r}: AdaLoRA only prunes rank"
        )
    if cfg.model.dim % cfg.model.user_tower.heads:
        raise ValueError(
            f"model.dim={cfg.model.dim} is not divisible by model.user_tower.heads="
            f"{cfg.model.user_tower.heads}; pick a dim that is a multiple of heads"
        )


def _check_eval(cfg: RunConfig) -> None:
    m = METRIC_RE.match(cfg.eval.metric)
    if not m:
        raise ValueError(
            f"eval.metric={cfg.eval.metric!r}: expected recall@K, ndcg@K or mrr@K (e.g. ndcg@10)"
        )
    k = int(m.group(2))
    if m.group(1) != "mrr" and k not in cfg.eval.ks:
        raise ValueError(f"eval.metric={cfg.eval.metric!r}: K={k} is not in eval.ks={cfg.eval.ks}")
    if any(k <= 0 for k in cfg.eval.ks):
        raise ValueError(f"eval.ks={cfg.eval.ks}: every K must be positive")


# --- environment: files on disk and the launcher -------------------------------------------


def launcher_strategy(path: Path) -> str:
    """The strategy an Accelerate YAML provides: ddp, zero2, zero3, zero3_offload, fsdp, single."""
    spec = yaml.safe_load(path.read_text()) or {}
    kind = str(spec.get("distributed_type", "NO")).upper()
    if kind != "DEEPSPEED":
        return {"MULTI_CPU": "ddp", "MULTI_GPU": "ddp", "FSDP": "fsdp"}.get(kind, "single")
    ds = spec.get("deepspeed_config") or {}
    stage, offload = ds.get("zero_stage"), ds.get("offload_optimizer_device", "none")
    if ds.get("deepspeed_config_file"):
        import json

        ds_file = (path.parent / ds["deepspeed_config_file"]).resolve()
        if not ds_file.exists():
            ds_file = Path(ds["deepspeed_config_file"])
        zero = json.loads(ds_file.read_text()).get("zero_optimization", {})
        stage = zero.get("stage")
        offload = (zero.get("offload_optimizer") or {}).get("device", "none")
    if stage == 3:
        return "zero3_offload" if offload not in (None, "none") else "zero3"
    return "zero2" if stage == 2 else f"zero{stage}"


def check_environment(cfg: RunConfig, base: Path | None = None) -> list[str]:
    """Checks that read the disk. Raises ConfigError; returns notes worth printing."""
    base = base or Path.cwd()
    notes: list[str] = []
    for i, d in enumerate(cfg.data.domains):
        for field in ("interactions", "items"):
            value = getattr(d, field)
            if value is not None and not (base / value).exists():
                raise ConfigError(
                    f"data.domains.{i}.{field}={value!r}: no such file (looked in {base / value}); "
                    f"fix the path or use `embedded:` for the bundled MovieLens data"
                )
    enc = cfg.model.item_encoder
    if not enc.startswith("embedded:"):
        local = base / enc
        looks_local = enc.startswith((".", "/", "~")) or local.exists()
        if looks_local and not (local / "config.json").exists():
            raise ConfigError(
                f"model.item_encoder={enc!r}: no HF checkpoint there (looked for {local / 'config.json'}); "
                f"point it at a folder holding config.json and weights"
            )
        if not looks_local:
            notes.append(f"model.item_encoder={enc!r} is read from the local HF cache (offline)")
    if cfg.distributed.launcher is not None:
        path = base / cfg.distributed.launcher
        if not path.exists():
            raise ConfigError(
                f"distributed.launcher={cfg.distributed.launcher!r}: no such file; see launch/ for templates"
            )
        provided = launcher_strategy(path)
        wanted = cfg.distributed.strategy
        if wanted not in ("auto", provided):
            raise ConfigError(
                f"distributed.strategy={wanted!r} but distributed.launcher={cfg.distributed.launcher!r} "
                f"provides {provided!r}, which cannot run it; pick a launch/ template for {wanted!r} "
                f"or set distributed.strategy={provided!r}"
            )
    return notes
