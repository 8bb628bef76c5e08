"""How the towers execute while a stage trains: `torch.compile` (train.compile) and the LM's
activation checkpointing (model.activation_checkpointing).

Applied by the Trainer to the model it is given, before `accelerator.prepare`, to submodules
only: the item tower's LM and the user tower. The typed-request `Recommender.forward` stays
eager, since every wrapper (DDP, DeepSpeed, PEFT) hooks it and its dispatch on request types
would only be graph-broken.

Compiling is in place (what `nn.Module.compile` does: the module's `__call__` goes through
the compiled function), so parameter names, state dicts, checkpoints and PEFT's adapter
files are the same as eager. End-to-end batches change shape every step (distinct items x
longest text), hence `dynamic=True`: one graph for every shape instead of a recompile per
shape (`compile_stats` counts them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from distrec.config.schema import RunConfig
from distrec.models.towers import ItemTower, UserTower
from distrec.utils.progress import log

BACKEND = "inductor"
FIX = "set train.compile=false to train eager without trying"


def compiled_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The submodules `train.compile` compiles, by name within `model` (PEFT-wrapped or not):
    every text item tower's LM and every user tower."""
    parts = {}
    for name, module in model.named_modules():
        if isinstance(module, ItemTower) and module.lm is not None:
            parts[f"{name}.lm"] = module.lm
        elif isinstance(module, UserTower):
            parts[name] = module
    return parts


@dataclass
class GuardedCompile:
    """One module's calls through its compiled `__call__`, until a compilation fails: then
    one log line names the module, the reason and the fix, and the module runs eager."""

    name: str
    module: nn.Module
    compiled: Callable | None = None
    calls: int = 0
    failure: str | None = None

    def install(self) -> bool:
        """Compile the module's `__call__` in place; False (logged, eager) when refused."""
        try:
            self.compiled = torch.compile(self.module._call_impl, dynamic=True, backend=BACKEND)
        except Exception as err:  # any refusal falls back to eager
            self.fall_back(err)
            return False
        self.module._compiled_call_impl = self
        return True

    def __call__(self, *args, **kwargs):
        """The compiled call; on a compilation error the same call again, eager."""
        try:
            out = self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise  # not the compiler's failure: eager would run out too
        except Exception as err:  # backends raise many kinds
            self.fall_back(err)
            return self.module._call_impl(*args, **kwargs)
        self.calls += 1
        return out

    def fall_back(self, err: Exception) -> None:
        """Log why compiling failed, once, and run the module eager from now on."""
        self.failure = describe_failure(err)
        backend = getattr(BACKEND, "__name__", BACKEND)
        log(
            f"train.compile: torch.compile (backend {backend}) failed on {self.name} "
            f"({self.failure}); training continues eager. {FIX}"
        )
        self.restore()

    def restore(self) -> None:
        """Back to the module's eager `__call__`."""
        if self.module._compiled_call_impl is self:
            self.module._compiled_call_impl = None


def describe_failure(err: BaseException) -> str:
    """`Type: first line` of the error's root cause (dynamo wraps a backend's own error in
    BackendCompilerFailed, whose first line names only the backend)."""
    root = err
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    lines = [ln.strip() for ln in str(root).splitlines() if ln.strip()]
    text = f"{type(root).__name__}: {lines[0] if lines else 'no message'}"
    if root is not err:
        text = f"{type(err).__name__} <- {text}"
    return text[:300]


@dataclass
class TrainExecution:
    """What `prepare_execution` changed on a model, undone by `restore` after training."""

    compiled: list[GuardedCompile] = field(default_factory=list)

    def restore(self) -> None:
        """Every compiled module back to eager: the trained model leaves the stage plain."""
        for guard in self.compiled:
            guard.restore()

    @property
    def active(self) -> list[str]:
        """Names of the modules still running compiled."""
        return [g.name for g in self.compiled if g.failure is None]


def compile_parts(model: nn.Module) -> list[GuardedCompile]:
    """`torch.compile` every part `compiled_parts` names, each guarded by an eager fallback."""
    guards = []
    for name, module in compiled_parts(model).items():
        if isinstance(module._compiled_call_impl, GuardedCompile):
            continue  # already compiled by an earlier stage's Trainer
        guard = GuardedCompile(name, module)
        if guard.install():
            guards.append(guard)
    return guards


def enable_activation_checkpointing(model: nn.Module) -> list[str]:
    """Activation checkpointing of every text item tower's LM (HF's per-layer checkpoint of
    each layer's forward), non-reentrant: the reentrant variant gives the LoRA weights of a
    frozen base no gradient unless the layers' inputs require grad (transformers forces that
    with a hook on the embeddings; tests/models/test_checkpointing.py). Returns the LMs'
    names."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, ItemTower) and module.lm is not None:
            module.lm.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
            names.append(f"{name}.lm")
    return names


def prepare_execution(model: nn.Module, cfg: RunConfig) -> TrainExecution:
    """Apply the run's execution options to `model` in place (before `accelerator.prepare`):
    the LM's activation checkpointing end to end, then `torch.compile` of its parts."""
    if cfg.model.activation_checkpointing and cfg.model.mode == "end_to_end":
        enable_activation_checkpointing(model)
    execution = TrainExecution()
    if cfg.train.compile:
        execution.compiled = compile_parts(model)
    return execution


def compile_stats() -> dict[str, int]:
    """Dynamo's process-wide counters: frames compiled, distinct graphs, graph breaks and
    recompilations (a recompile per step would mean the dynamic shapes did not hold)."""
    from torch._dynamo.utils import counters

    return {
        "frames_compiled": int(counters["frames"]["ok"]),
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "recompiles": int(sum(counters["recompiles"].values())),
    }
