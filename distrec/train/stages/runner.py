"""Run a config's stages in order, skipping those a resumed run already finished."""

from __future__ import annotations

from collections.abc import Sequence

from distrec.train.domains import check_graph_record

# The built-in stages register themselves on import (their `order` sets the run order).
from distrec.train.stages import adapt, baselines, distill, transfer  # noqa: F401
from distrec.train.stages.pipeline import Pipeline
from distrec.train.stages.registry import STAGES, planned_stages
from distrec.train.trainer import TrainHook
from distrec.train.workspace import Workspace


def run_stages(ws: Workspace, hooks: Sequence[TrainHook] = ()) -> dict[str, dict]:
    """Run every planned stage; on resume, finished stages are read back from `stages.json`
    (and the pretrained base from its export) instead of being re-run."""
    if ws.resume or ws.is_main:  # a resumed run checks its graph, a new one records it
        check_graph_record(ws.out, ws.graph, write=not ws.resume)
    pipe = Pipeline(ws, hooks)
    for name in planned_stages(ws.cfg):
        if name not in pipe.results:
            STAGES.get(name).run(pipe)
    return pipe.results.stages
