#!/usr/bin/env bash
# The GPU check: CUDA tests, then `pfadseg bench gpu-check` (composer; both stages in fp32 and bf16 beside their
# per-parameter form, with ops, kernels, busy % and MFU per step; inference at batch 1 and 64; one category through
# the stage loops; 1, 2, 4 processes sharing the GPU; torch.compile, bounded; projected protocol time). Prints the
# tables; writes gpu-check.json after each phase (and the test log) into --out.
#
#   benchmarks/gpu-check.sh --out DIR [--device cuda|cpu] [--wheels DIR] [--no-compile]
#
# --device cpu runs the same code at tiny sizes (CI runs it so the script cannot rot). --wheels DIR installs the
# wheels found there first (for a GPU image without the project's dependencies: dvclive, tqdm, ...; download
# them beforehand with `pip download --only-binary=:all: --no-deps -d DIR dvclive ...`).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda out="" wheels="" compile=--compile
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --no-compile) compile=--no-compile; shift ;;
    *) echo "gpu-check.sh: unknown argument $1 (use --out DIR [--device cuda|cpu] [--wheels DIR] [--no-compile])" >&2
       exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "gpu-check.sh: --out DIR is required" >&2; exit 2; }
mkdir -p "$out"
python=${PYTHON:-python3}

if [ -n "$wheels" ]; then
  site="$(mktemp -d)"
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "$device" = cuda ]; then
  "$python" -m pytest -q -m gpu tests 2>&1 | tee "$out/gpu-tests.log" | tail -3
  "$python" -m pfadseg.cli bench gpu-check --device cuda --out "$out" "$compile"
else
  "$python" -m pfadseg.cli bench gpu-check --device cpu --tiny --no-compile --out "$out"
fi
