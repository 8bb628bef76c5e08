"""Knowledge distillation (stages.distill): a frozen teacher's next-item distribution taught
to a student, as a loss term next to the student's own heads.

The teacher's catalog is encoded once per stage (sharded over ranks like evaluation, and
kept on disk with `cache_teacher`); per step only its user tower runs, on the very windows
the student trains on, so the two distributions are over the same positions and candidates.
The teacher is a plain module on every rank, outside the backend's wrapper.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from distrec.config.schema import DistillConfig
from distrec.heads import LossContext
from distrec.models.io import ItemVectors, TrainBatch, TrainOutputs
from distrec.train.evaluation import Evaluator
from distrec.train.trainer import LossTerm, Trainer
from distrec.train.workspace import Workspace
from distrec.utils.hashing import sha256_file, sha256_json
from distrec.utils.progress import log


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, top_k: int | None
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), mean over rows [P, C]; with
    `top_k`, over the teacher's k best candidates of each row only (renormalised)."""
    if top_k is not None and top_k < teacher.shape[1]:
        best = teacher.topk(top_k, dim=1).indices
        student, teacher = student.gather(1, best), teacher.gather(1, best)
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    return kl * temperature**2


def student_logits(out: TrainOutputs) -> torch.Tensor:
    """[P, C] the student's next-item logits over its candidates (as the retrieval head's)."""
    return (out.users @ out.candidates.T).float() * out.scale.float() + out.bias[None, :].float()


def catalog_inputs(request: TrainBatch) -> torch.Tensor:
    """[B, T] the windows' inputs as catalog indices (end to end they index the candidates)."""
    items = request.candidates.items
    local = (request.inputs - 1).clamp(min=0)
    return torch.where(request.inputs > 0, items[local], torch.zeros_like(request.inputs))


class Distillation(LossTerm):
    """alpha * kd_loss between the teacher's and the student's next-item logits at every
    real training position."""

    def __init__(self, ws: Workspace, teacher: nn.Module, cfg: DistillConfig, source: Path):
        self.ws, self.teacher = ws, teacher
        self.alpha, self.temperature, self.top_k = cfg.alpha, cfg.temperature, cfg.top_k
        teacher.to(ws.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.catalogs = {
            name: teacher_catalog(ws, teacher, name, source if cfg.cache_teacher else None)
            for name in (ws.cfg.data.target,)
        }

    @torch.no_grad()
    def teacher_logits(self, request: TrainBatch) -> torch.Tensor:
        """[P, C] the teacher's logits over the request's candidates at its real positions."""
        catalog = self.catalogs[request.domain]
        states = self.teacher.user_states(catalog.vectors[catalog_inputs(request)], request.domain)
        users = states[request.real_positions()]
        items = request.candidates.items
        chosen = ItemVectors(catalog.vectors[items], catalog.bias[items], catalog.scale)
        return self.teacher.score(users, chosen)

    def loss(self, trainer: Trainer, out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
        """The weighted distillation term (0, keeping the graph, for an all-padding batch)."""
        if out.users.shape[0] == 0:
            return out.users.sum() * 0.0
        with torch.autocast(device_type=out.users.device.type, enabled=False):
            teacher = self.teacher_logits(ctx.batch)
            return self.alpha * kd_loss(student_logits(out), teacher, self.temperature, self.top_k)


def teacher_catalog(ws: Workspace, teacher: nn.Module, domain: str, source: Path | None):
    """The teacher's [N+1] catalog vectors (encoded sharded like evaluation); with `source`
    (its weights file), read from / written to <output.dir>/distill/ under its sha256."""
    path = None
    if source is not None:
        d = ws.domains[domain]
        # The weights, the catalog and the precision it is encoded in make the vectors.
        key = sha256_json(
            [sha256_file(source), d.manifest.data["catalog"]["sha256"], ws.precision]
        )[:16]
        path = ws.out / "distill" / f"teacher-{domain}-{key}.safetensors"
        if path.exists():
            saved = load_file(str(path))
            log(f"distill: teacher catalog of {domain} read from {path}")
            return ItemVectors(*(saved[k].to(ws.device) for k in ("vectors", "bias", "scale")))
    with ws.accelerator.autocast():
        found = Evaluator(ws).catalog(teacher, ws.domains[domain])
    found = ItemVectors(*(t.float() for t in found))
    if path is not None and ws.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        names = ("vectors", "bias", "scale")
        tensors = {k: v.cpu().contiguous() for k, v in zip(names, found, strict=True)}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)  # a crash mid-write leaves no half file to be read back
    return found
