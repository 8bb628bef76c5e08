"""What every benchmark records beside its numbers (machine, versions, commit, load), and the
measuring tools they share: device sync, median-of-windows, peak memory, building a `Workspace`."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def device_description() -> str:
    """One line naming what ran the benchmark: the GPU, or the CPU model and its cores."""
    m = machine()
    if "gpu" in m:
        return f"{m['gpu']} x{m['gpu_count']}"
    return f"{m.get('cpu', platform.processor() or 'unknown CPU')} ({m['cpus']} cores, CPU only)"


def load_average() -> list[float]:
    """1/5/15-minute load: other users of a shared machine slow every timing down."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(path: str | Path, result: dict) -> Path:
    from distrec.train.outputs import versions

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **result,
        "machine": machine(),
        "device": device_description(),
        "load_average_at_end": load_average(),
        "versions": versions(),
        "commit": git_commit(),
    }
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def sync() -> None:
    """Wait for queued GPU work so a timestamp means the work is done (no-op on CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_windows(values: list[float]) -> dict:
    """Median and spread of per-window rates (warm-up windows already dropped)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "windows": values,
    }


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak on GPU; on CPU the process RSS sampled
    every `every_s` (ru_maxrss cannot be reset, so it cannot give a per-block peak)."""

    def __init__(self, every_s: float = 0.01) -> None:
        self.every_s = every_s
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakMemory:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self.peak = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    def report(self) -> dict:
        import torch

        kind = "cuda_max_memory_allocated" if torch.cuda.is_available() else "process_rss_sampled"
        return {
            "kind": kind,
            "peak_bytes": self.peak,
            "start_bytes": self.start,
            "increase_bytes": self.peak - self.start,
        }


def build_run(cfg, out: Path, domains: list[str]):
    """The product's own workspace (accelerator, precision, domain data) for a config."""
    from distrec.distributed.accelerator import build_accelerator
    from distrec.train.workspace import Workspace

    accelerator, precision = build_accelerator(cfg)
    return Workspace.open(cfg, accelerator, precision, out=out, names=domains)


def rank_pids(command_part: str, cfg_file: Path) -> dict[int, int]:
    """rank -> pid of each training process whose command line holds `command_part` and
    `cfg_file`: the rank's main process, not its loader workers (which share its command
    line and environment, and are its children)."""
    found: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, rank)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        ranks = [e for e in env if e.startswith(b"RANK=")]
        if ranks and command_part.encode() in cmd and str(cfg_file).encode() in cmd:
            found[int(proc.name)] = (ppid, int(ranks[0][5:]))
    return {rank: pid for pid, (ppid, rank) in found.items() if ppid not in found}
