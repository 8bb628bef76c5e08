"""The search space: YAML specs keyed by dotted run-config paths, checked before Ray starts.

    tune:
      search_space:
        train.lr: {loguniform: [1.0e-4, 1.0e-2]}
        model.temperature: {choice: [0.03, 0.05, 0.1]}
        peft.r: {grid: [4, 8, 16]}
        data.max_history: {randint: [20, 50]}      # both ends included
        data.mixture.ml-1m: {uniform: [0.5, 2.0]}

Every key is validated by applying candidate values as overrides to the run config
(`distrec.config.load`), so a typo gets the usual did-you-mean error and a value the
schema refuses (an int field swept with `uniform`, a negative lr) fails here, not
half-way through a sweep.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from distrec.config import ConfigError
from distrec.config.load import apply_override, config_from_dict

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
EXAMPLE = "{loguniform: [1.0e-4, 1.0e-2]}, {uniform: [lo, hi]}, {randint: [lo, hi]}, {choice: [a, b]} or {grid: [a, b]}"
# Keys a trial may not change: they belong to the sweep, not to one training run.
FROZEN = ("tune", "output")


@dataclass(frozen=True)
class Param:
    """One swept key: its dotted run-config path, spec kind (KINDS) and values."""

    key: str
    kind: str
    values: tuple  # choice/grid: the options; ranges: (lo, hi)

    def candidates(self) -> list:
        """Values that validation applies: every option, or both ends of a range (typed as
        the sampler will produce them, so `uniform` on an int field is caught)."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        if self.kind == "randint":
            return [int(v) for v in self.values]
        return [float(v) for v in self.values]

    def ray_domain(self):
        """The Ray Tune sampler (or grid_search) for this spec; randint's hi is included."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        lo, hi = self.values
        if self.kind == "randint":
            # Ray's upper bound is exclusive; ours is inclusive, as the YAML reads.
            return tune.randint(int(lo), int(hi) + 1)
        sampler = tune.uniform if self.kind == "uniform" else tune.loguniform
        return sampler(float(lo), float(hi))


def parse_space(space: dict[str, Any]) -> list[Param]:
    """Spec shapes only (no run config needed); raises ConfigError naming the key and the fix."""
    if not space:
        raise ConfigError(
            "tune.search_space is empty: add at least one key, e.g. "
            "tune.search_space: {train.lr: {loguniform: [1.0e-4, 1.0e-2]}}"
        )
    return [_parse_one(key, spec) for key, spec in space.items()]


def _parse_one(key: str, spec: Any) -> Param:
    where = f"tune.search_space.{key}"
    if key.split(".")[0] in FROZEN:
        raise ConfigError(
            f"{where}: {key.split('.')[0]}.* cannot be swept (it configures the sweep itself); "
            f"set it in the run config instead"
        )
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            f"{where}={spec!r}: expected one mapping such as {EXAMPLE}; "
            f"to fix a value for every trial, set it in the run config instead"
        )
    kind, values = next(iter(spec.items()))
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown spec {kind!r}; expected one of {list(KINDS)}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.{kind}={values!r}: expected a non-empty list")
    if kind in ("choice", "grid"):
        return Param(key, kind, tuple(values))
    if len(values) != 2:
        raise ConfigError(f"{where}.{kind}={values!r}: expected [lo, hi], two numbers")
    lo, hi = values
    numeric = (int,) if kind == "randint" else (int, float)
    if not all(isinstance(v, numeric) and not isinstance(v, bool) for v in values):
        kind_text = "integers" if kind == "randint" else "numbers"
        raise ConfigError(f"{where}.{kind}={values!r}: lo and hi must be {kind_text}")
    if not lo < hi:
        raise ConfigError(f"{where}.{kind}={values!r}: lo must be below hi")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}.loguniform={values!r}: lo must be > 0 for a log scale")
    return Param(key, kind, (lo, hi))


def override(key: str, value: Any) -> str:
    """A dotted override that carries the exact value (JSON is YAML, so types survive)."""
    if hasattr(value, "item"):  # numpy scalars from Ray's samplers
        value = value.item()
    return f"{key}={json.dumps(value)}"


def apply_params(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the run-config tree with `values` (dotted key -> value) applied."""
    out = copy.deepcopy(tree)
    for key, value in values.items():
        apply_override(out, override(key, value))
    return out


def validate_space(tree: dict[str, Any], params: list[Param]) -> None:
    """Apply every candidate value of every key to the run config; raise on the first refusal."""
    for p in params:
        for value in p.candidates():
            try:
                config_from_dict(apply_params(tree, {p.key: value}), source="<tune>")
            except ConfigError as err:
                detail = str(err).split("\n", 1)[-1].strip()
                hint = ""
                if p.kind in ("uniform", "loguniform") and "integer" in detail:
                    hint = (
                        f"; {p.key} takes integers: use {{randint: [lo, hi]}} or {{choice: [...]}}"
                    )
                raise ConfigError(
                    f"tune.search_space.{p.key}: the run config refuses {p.key}={value!r}: "
                    f"{detail.removeprefix('- ')}{hint}"
                ) from None


def check_searcher(params: list[Param], search_alg: str) -> None:
    """Refuse `grid` specs under Optuna, which cannot sample them."""
    if search_alg == "optuna" and any(p.kind == "grid" for p in params):
        grid = [p.key for p in params if p.kind == "grid"]
        raise ConfigError(
            f"tune.search_space: {grid} use `grid`, which Optuna cannot sample; use `choice` "
            f"with tune.search_alg=optuna, or tune.search_alg=random for a grid"
        )


def ray_space(params: list[Param]) -> dict[str, Any]:
    """Ray Tune's param_space: dotted key -> its sampler."""
    return {p.key: p.ray_domain() for p in params}
