"""Folders swapped into place whole, and the out-of-space cause behind a failure."""

import errno
import os

import pytest

from distrec.utils import files
from distrec.utils.files import no_space_cause, out_of_space_error, swap_into_place


def test_swap_replaces_the_old_folder_and_puts_it_back_when_the_rename_fails(tmp_path, monkeypatch):
    final, staging = tmp_path / "d", tmp_path / ".d.tmp"
    final.mkdir()
    (final / "a").write_text("old")
    staging.mkdir()
    (staging / "a").write_text("new")
    real = os.replace
    calls = {"n": 0}

    def second_rename_fails(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="I/O error"):
        swap_into_place(staging, final)
    assert (final / "a").read_text() == "old"
    monkeypatch.setattr(files.os, "replace", real)
    swap_into_place(staging, final)
    assert (final / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_the_out_of_space_cause_is_found_behind_wrappers_and_ray_tasks():
    full = OSError(errno.ENOSPC, "No space left on device", "/x/seq-000003.tar")
    try:
        try:
            raise full
        except OSError as err:
            raise RuntimeError("writing shards failed") from err
    except RuntimeError as wrapped:
        assert no_space_cause(wrapped) is full
    ray_exceptions = pytest.importorskip("ray.exceptions")
    task_error = ray_exceptions.RayTaskError("_write_group", "traceback", full)
    assert no_space_cause(task_error) is full
    assert no_space_cause(OSError(errno.EDQUOT, "Disk quota exceeded")) is not None
    assert no_space_cause(OSError(errno.EIO, "I/O error")) is None


def test_the_error_says_how_much_space_is_needed_and_free(tmp_path):
    previous = tmp_path / "step-1"
    previous.mkdir()
    (previous / "w").write_bytes(b"x" * 3 * 2**20)
    cause = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".step-2.tmp/w"))
    err = out_of_space_error(
        cause, tmp_path / "step-2", written=2**20, previous=previous, elsewhere="set output.dir"
    )
    message = str(err)
    assert err.errno == errno.ENOSPC
    assert "1.0 MiB (1,048,576 bytes) were written" in message
    assert f"about 3.0 MiB (3,145,728 bytes) (the size of {previous})" in message
    assert "MiB" in message.split("with ")[1] and message.endswith("or set output.dir")
    fresh = out_of_space_error(
        cause, tmp_path / "step-2", written=2**20, previous=None, elsewhere="x"
    )
    assert "more than the 1.0 MiB (1,048,576 bytes) written before it failed" in str(fresh)
