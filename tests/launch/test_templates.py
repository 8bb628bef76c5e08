"""Every launcher template in launch/ loads with Accelerate's own parsers.

Fast tier: nothing is launched. Each YAML goes through the same code path as
`accelerate launch --config_file ...` up to the point where processes would be
spawned, and the DeepSpeed / FSDP plugin is built from the resulting environment,
so an unknown key, an ambiguous DeepSpeed setting or a broken JSON fails here
instead of minutes into a cluster job. The templates were run for real (2 CPU
processes) as described in launch/README.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
TEMPLATES = sorted(LAUNCH.glob("*.yaml"))
DEEPSPEED_JSONS = sorted((LAUNCH / "deepspeed").glob("*.json"))
DEEPSPEED_TEMPLATES = [
    p
    for p in TEMPLATES
    if yaml.safe_load(p.read_text(encoding="utf-8"))["distributed_type"] == "DEEPSPEED"
]

# Values that the distrec run config owns; Accelerate fills them in code.
DS_AUTO_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "bf16.enabled",
    "fp16.enabled",
)


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _header(path: Path) -> str:
    """The leading block of comment lines, without the '#'."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return "\n".join(lines)


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _launch_env(path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `accelerate launch --config_file path` up to spawning; return (args, env)."""
    import accelerate.utils.launch as launch_utils

    # The launcher refuses a busy main_process_port; tests must not depend on it.
    monkeypatch.setattr(launch_utils, "is_port_in_use", lambda port: False)
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        # Mirrors accelerate.commands.launch.launch_command.
        fields = list(defaults.deepspeed_config)
        if mixed_precision_from_config:
            fields.append("mixed_precision")
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = launch_utils.prepare_deepspeed_cmd_env(args)
    else:
        env = launch_utils.prepare_multi_gpu_env(args)
    return args, env


def test_templates_exist():
    names = {p.name for p in TEMPLATES}
    expected = {
        "cpu_multiprocess.yaml",
        "ddp.yaml",
        "zero2.yaml",
        "zero3.yaml",
        "zero3_offload.yaml",
        "fsdp.yaml",
        "multinode_static.yaml",
    }
    assert expected <= names, f"missing templates: {sorted(expected - names)}"


@pytest.mark.parametrize("path", TEMPLATES, ids=_ids(TEMPLATES))
def test_template_loads_with_accelerate(path: Path):
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config.num_processes >= 1, f"{path.name}: set num_processes"
    assert config.num_processes % config.num_machines == 0, (
        f"{path.name}: num_processes={config.num_processes} is the total over "
        f"num_machines={config.num_machines} and must divide evenly"
    )


@pytest.mark.parametrize("path", TEMPLATES, ids=_ids(TEMPLATES))
def test_header_gives_launch_command(path: Path):
    header = _header(path)
    assert "accelerate launch" in header, f"{path.name}: header comment lacks the launch command"
    assert f"--config_file launch/{path.name}" in header, (
        f"{path.name}: header command must use --config_file launch/{path.name}"
    )


@pytest.mark.parametrize("path", TEMPLATES, ids=_ids(TEMPLATES))
def test_precision_is_left_to_the_run_config(path: Path):
    raw = _raw(path)
    if raw["distributed_type"] == DistributedType.DEEPSPEED:
        # Accelerate rejects even mixed_precision: 'no' next to a deepspeed_config_file.
        assert "mixed_precision" not in raw, f"{path.name}: remove mixed_precision"
    else:
        assert raw.get("mixed_precision", "no") == "no", (
            f"{path.name}: mixed_precision must be 'no'"
        )


@pytest.mark.parametrize("path", TEMPLATES, ids=_ids(TEMPLATES))
def test_nested_keys_are_launcher_options(path: Path):
    # ClusterConfig checks top-level keys only; a typo under deepspeed_config or
    # fsdp_config would be silently ignored by `accelerate launch`.
    options = {action.dest for action in launch_command_parser()._actions}
    raw = _raw(path)
    for section in ("deepspeed_config", "fsdp_config"):
        for key in raw.get(section) or {}:
            name = key if section != "fsdp_config" or key.startswith("fsdp") else f"fsdp_{key}"
            assert name in options, f"{path.name}: {section}.{key} is not an accelerate option"


@pytest.mark.parametrize("path", TEMPLATES, ids=_ids(TEMPLATES))
def test_plugin_builds_from_launch_env(path: Path, monkeypatch: pytest.MonkeyPatch):
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    monkeypatch.chdir(ROOT)  # deepspeed_config_file paths are relative to the repo root
    args, env = _launch_env(path, monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = load_config_from_file(str(path))
    if config.distributed_type == DistributedType.DEEPSPEED:
        plugin = DeepSpeedPlugin()
        assert plugin.zero_stage in (2, 3)
        for key in DS_AUTO_KEYS:
            assert plugin.is_auto(key), f"{path.name}: {key} must stay 'auto'"
    elif config.distributed_type == DistributedType.FSDP:
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2
        assert plugin.reshard_after_forward is True
        assert plugin.transformer_cls_names_to_wrap
    else:
        assert int(args.nproc_per_node) == config.num_processes // config.num_machines


@pytest.mark.parametrize("path", DEEPSPEED_TEMPLATES, ids=_ids(DEEPSPEED_TEMPLATES))
def test_deepspeed_json_is_referenced_and_valid(path: Path):
    config = load_config_from_file(str(path))
    ref = config.deepspeed_config.get("deepspeed_config_file")
    assert ref, f"{path.name}: set deepspeed_config.deepspeed_config_file"
    json_path = ROOT / ref
    assert json_path.is_file(), f"{path.name}: {ref} does not exist"
    json.loads(json_path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", DEEPSPEED_JSONS, ids=_ids(DEEPSPEED_JSONS))
def test_deepspeed_json_uses_auto(path: Path):
    ds = json.loads(path.read_text(encoding="utf-8"))
    for key in DS_AUTO_KEYS:
        assert _get(ds, key) == "auto", f"{path.name}: {key}={_get(ds, key)!r}, expected 'auto'"
    zero = ds["zero_optimization"]
    assert zero["stage"] == int(re.search(r"zero(\d)", path.name).group(1))
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    if "offload" in path.name:
        assert zero["offload_optimizer"]["device"] == "cpu"
        assert zero["offload_param"]["device"] == "cpu"


def test_every_deepspeed_json_is_used():
    referenced = {
        (ROOT / load_config_from_file(str(p)).deepspeed_config["deepspeed_config_file"]).resolve()
        for p in DEEPSPEED_TEMPLATES
    }
    unused = [p.name for p in DEEPSPEED_JSONS if p.resolve() not in referenced]
    assert not unused, f"launch/deepspeed/ files no template uses: {unused}"


def test_multinode_template_is_static():
    config = load_config_from_file(str(LAUNCH / "multinode_static.yaml"))
    assert config.num_machines == 2
    assert config.main_process_ip and config.main_process_port
    assert config.rdzv_backend == "static"


def test_slurm_script_uses_existing_template():
    script = (LAUNCH / "slurm" / "multinode.sbatch").read_text(encoding="utf-8")
    assert "scontrol show hostnames" in script
    assert "srun" in script and "accelerate launch" in script
    for ref in re.findall(r"launch/[\w./-]+\.yaml", script):
        assert (ROOT / ref).is_file(), f"multinode.sbatch refers to missing {ref}"
