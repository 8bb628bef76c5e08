"""StageCheckpoints: a full disk mid-save, damaged files and changed batching on resume."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import shutil
from pathlib import Path

import accelerate.checkpointing
import pytest
import torch
from accelerate import Accelerator

from distrec.config import ConfigError
from distrec.train import checkpoint
from distrec.train.checkpoint import StageCheckpoints
from distrec.train.entry import run_training
from distrec.utils.files import OutOfSpace
from distrec.utils.hashing import sha256_file
from tests.train.test_resume import config


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def trained():
    """A prepared model + optimizer that has taken one step (so the optimizer has state)."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()
    return accelerator, model, optimizer


def stage(tmp_path: Path, batch_size: int = 32, grad_accum: int = 1) -> StageCheckpoints:
    return StageCheckpoints(
        tmp_path, "pretrain", keep_last=2, batch_size=batch_size, grad_accum=grad_accum
    )


def save(ckpts: StageCheckpoints, accelerator, step: int) -> Path:
    trainer = {"global_batches": step}
    return ckpts.save(
        accelerator, f"step-{step:08d}", trainer, {"pos": step}, {"0/x": torch.ones(3)}
    )


def disk_full_after(monkeypatch, budget: int) -> None:
    """Accelerate's file writes fail with ENOSPC once `budget` bytes have been written; the
    file being written is left holding the bytes that still fit (a real full disk)."""
    real = accelerate.checkpointing.save
    written = {"n": 0}

    def save(obj, f, **kwargs):
        real(obj, f, **kwargs)
        size = os.path.getsize(f)
        if written["n"] + size > budget:
            with open(f, "r+b") as file:
                file.truncate(budget - written["n"])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        written["n"] += size

    monkeypatch.setattr(accelerate.checkpointing, "save", save)


def test_disk_full_mid_save_leaves_the_previous_checkpoint_intact_and_loadable(
    tmp_path, trained, monkeypatch
):
    accelerator, model, _ = trained
    ckpts = stage(tmp_path)
    good = save(ckpts, accelerator, 10)
    before, weights = snapshot(good), model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    disk_full_after(monkeypatch, budget=20_000)  # the weights fit (16.6 kB), the optimizer not
    with pytest.raises(OutOfSpace) as caught:
        save(ckpts, accelerator, 20)
    message = str(caught.value)
    final = ckpts.root / "step-00000020"
    assert caught.value.errno == errno.ENOSPC
    assert f"writing {final}" in message and "optimizer.bin" in message
    assert "20,000 bytes) were written" in message  # what got onto the disk before it failed
    assert f"(the size of {good})" in message and "free there" in message
    assert "set output.dir to a disk with room" in message
    assert sorted(p.name for p in ckpts.root.iterdir()) == [good.name]  # no partial folder
    assert snapshot(good) == before
    monkeypatch.undo()
    assert ckpts.latest() == good
    trainer, data = ckpts.restore(accelerator, good)
    assert torch.equal(model.weight, weights)
    assert trainer["global_batches"] == 10 and data == {"pos": 10}
    assert torch.equal(ckpts.hook_tensors(good)["0/x"], torch.ones(3))


def test_disk_full_while_replacing_a_checkpoint_of_the_same_tag_keeps_the_old_one(
    tmp_path, trained, monkeypatch
):
    accelerator, _, _ = trained
    ckpts = stage(tmp_path)
    good = save(ckpts, accelerator, 10)
    before = snapshot(good)

    def manifest_fails(folder):
        (folder / checkpoint.MANIFEST).write_text('{"fi')
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / checkpoint.MANIFEST))

    monkeypatch.setattr(checkpoint, "write_manifest", manifest_fails)
    with pytest.raises(OutOfSpace, match=r"step-00000010 \(at .*manifest\.json\)"):
        save(ckpts, accelerator, 10)
    assert sorted(p.name for p in ckpts.root.iterdir()) == [good.name]
    assert snapshot(good) == before


def test_a_failure_other_than_space_still_cleans_up_and_raises_itself(
    tmp_path, trained, monkeypatch
):
    accelerator, _, _ = trained
    ckpts = stage(tmp_path)
    good = save(ckpts, accelerator, 10)

    def broken(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(accelerate.checkpointing, "save", broken)
    with pytest.raises(PermissionError):
        save(ckpts, accelerator, 20)
    assert sorted(p.name for p in ckpts.root.iterdir()) == [good.name]


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_newest_checkpoint_falls_back_to_the_previous_one_loudly(
    tmp_path, trained, caplog
):
    accelerator, _, _ = trained
    ckpts = stage(tmp_path)
    older, newest = save(ckpts, accelerator, 10), save(ckpts, accelerator, 20)
    weights = newest / "model.safetensors"
    recorded = sha256_file(weights)
    flip_byte(weights)
    flipped = sha256_file(weights)
    with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
        assert ckpts.latest() == older
    warning = caplog.text
    assert f"{weights}: sha256 {flipped}, the manifest records {recorded}" in warning
    assert "DAMAGED" in warning and "resuming from the previous checkpoint step-00000010" in warning
    aside = ckpts.root / ".corrupt-step-00000020"
    assert aside.is_dir() and not newest.exists()  # kept for inspection, never picked again
    assert ckpts.complete() == [older]


def test_every_checkpoint_damaged_is_an_error_naming_the_files_and_the_way_out(tmp_path, trained):
    accelerator, _, _ = trained
    ckpts = stage(tmp_path)
    only = save(ckpts, accelerator, 10)
    flip_byte(only / "optimizer.bin")
    (only / "data-rank0.json").unlink()
    with pytest.raises(ConfigError) as caught:
        ckpts.latest()
    message = str(caught.value)
    assert f"{only / 'optimizer.bin'}: sha256 " in message and "the manifest records" in message
    assert f"{only / 'data-rank0.json'}: missing" in message
    assert "delete the damaged checkpoint folders" in message
    assert only.exists()  # nothing set aside: a second --resume must not start from scratch


def test_a_checkpoint_from_before_manifests_is_accepted_unverified(tmp_path, trained, capsys):
    accelerator, _, _ = trained
    ckpts = stage(tmp_path)
    old = save(ckpts, accelerator, 10)
    (old / checkpoint.MANIFEST).unlink()
    assert ckpts.latest() == old
    assert "not verified" in capsys.readouterr().out


def test_the_manifest_lists_every_file_with_its_sha256(tmp_path, trained):
    accelerator, _, _ = trained
    folder = save(stage(tmp_path), accelerator, 10)
    files = json.loads((folder / checkpoint.MANIFEST).read_text())["files"]
    assert {"model.safetensors", "optimizer.bin", "trainer.json", "data-rank0.json"} <= set(files)
    assert checkpoint.MANIFEST not in files
    for name, entry in files.items():
        assert entry["sha256"] == sha256_file(folder / name), name


@pytest.mark.parametrize(
    ("changed", "was", "now"),
    [
        ({"batch_size": 64}, "train.batch_size=32", "train.batch_size=64"),
        ({"grad_accum": 4}, "train.grad_accum=1", "train.grad_accum=4"),
    ],
)
def test_resuming_with_other_batching_is_refused_naming_both_values(
    tmp_path, trained, changed, was, now
):
    accelerator, _, _ = trained
    path = save(stage(tmp_path), accelerator, 10)
    with pytest.raises(ConfigError) as caught:
        stage(tmp_path, **changed).restore(accelerator, path)
    message = str(caught.value)
    assert f"written with {was}, this run has {now}" in message
    assert f"resume with {was}, or start a new output.dir" in message
    stage(tmp_path).restore(accelerator, path)  # the same settings resume


def test_a_run_whose_disk_fills_mid_checkpoint_resumes_from_the_previous_one(
    tmp_path, synth_dir, monkeypatch
):
    assert run_training(config(tmp_path, synth_dir, "straight")) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    real = accelerate.checkpointing.save
    saves = {"n": 0}

    def second_checkpoint_fills_the_disk(obj, f, **kwargs):
        if "/.step-" in str(f) and str(f).endswith("optimizer.bin"):
            saves["n"] += 1
            if saves["n"] == 2:  # pretraining's epoch 2 (step-20); step-10 is on disk
                Path(f).write_bytes(b"\0" * 4096)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        real(obj, f, **kwargs)

    monkeypatch.setattr(accelerate.checkpointing, "save", second_checkpoint_fills_the_disk)
    cut = config(tmp_path, synth_dir, "cut")
    root = tmp_path / "cut" / "checkpoints" / "pretrain"
    with pytest.raises(OutOfSpace, match=rf"writing {root / 'step-00000020'} .*output\.dir"):
        run_training(cut)
    assert sorted(p.name for p in root.iterdir() if p.name != "best") == ["step-00000010"]
    assert checkpoint.damage(root / "step-00000010") == []
    monkeypatch.setattr(accelerate.checkpointing, "save", real)
    assert run_training(cut, resume="auto") == 0
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for name in straight["stages"]:
        assert resumed["stages"][name]["test"] == straight["stages"][name]["test"], name


# --- two ranks -------------------------------------------------------------------------------


class FakeAccelerator:
    """Writes one state file per rank; rank 1's disk fills up on the second save."""

    def __init__(self, rank: int) -> None:
        self.rank, self.saves = rank, 0

    def save_state(self, path: str) -> None:
        self.saves += 1
        os.makedirs(path, exist_ok=True)
        target = Path(path) / f"state-{self.rank}.bin"
        if self.rank == 1 and self.saves == 2:
            target.write_bytes(b"x" * 300)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        target.write_bytes(b"x" * 1000)


def two_rank_save(rank: int, root: str, port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ckpts = StageCheckpoints(Path(root), "pretrain", 2, batch_size=8, grad_accum=1)
    acc = FakeAccelerator(rank)
    ckpts.save(acc, "step-00000001", {"global_batches": 1}, {"rank": rank})
    try:
        ckpts.save(acc, "step-00000002", {"global_batches": 2}, {"rank": rank})
        outcome = "saved"
    except OutOfSpace as err:
        outcome = f"OutOfSpace: {err}"
    Path(root, f"rank{rank}.txt").write_text(outcome)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.integration
def test_a_full_disk_on_one_rank_raises_on_every_rank_without_a_hang(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=two_rank_save, args=(r, str(tmp_path), 29_637)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a rank was left waiting"
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    for outcome in outcomes:
        assert outcome.startswith("OutOfSpace: ") and "state-1.bin" in outcome, outcome
    root = tmp_path / "checkpoints" / "pretrain"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001"]
    assert checkpoint.damage(root / "step-00000001") == []
    shutil.rmtree(root)
