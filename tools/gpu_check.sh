#!/usr/bin/env bash
# One command that proves every CUDA path of the kit on a bare GPU machine (issue 22): tools/gpu_check.py's parts, in
# minutes, with a report on stdout and in $OUT/gpu_report.json (+ the logs) when OUT is set. On a machine without a GPU
# every part says "no CUDA device: skipped" and it exits 0; `--device cpu --smoke` runs every part tiny on the CPU.
#   bash tools/gpu_check.sh [--budget SECONDS] [--parts cuda_tests,training,ddp,bench] [--device cpu --smoke]
# It runs $PYTHON (default python3) as it is, from the repository root with PYTHONPATH=. : no install step, no .venv.
# torch must be there; fastcore (which the package imports) is installed from the wheels in .whl/ when it is missing
# ($GPU_CHECK_WHEELS: another folder of wheels), offline, into a temporary folder put first on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_sh.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$PY" -c 'import sys, importlib.util
def has(name):
    try: return importlib.util.find_spec(name) is not None
    except ImportError: return False
sys.exit(3 if not has("torch") else 4 if not has("fastcore") else 0)' || status=$?
if [ $status -eq 3 ]; then
  echo "gpu_check: $PY cannot import torch; run with PYTHON=/path/to/a/python that has torch" >&2; exit 2
elif [ $status -eq 4 ]; then
  shopt -s nullglob; wheels=("${GPU_CHECK_WHEELS:-.whl}"/*.whl); shopt -u nullglob
  if [ ${#wheels[@]} -gt 0 ]; then
    echo "gpu_check: fastcore is missing: installing ${wheels[*]} into $TMP/site (offline)"
    if ! "$PY" -m pip install -q --no-index --no-deps --target "$TMP/site" "${wheels[@]}"; then
      echo "gpu_check: pip could not install them; unpacking the wheels instead"   # a wheel is a zip of the package
      for w in "${wheels[@]}"; do "$PY" -m zipfile -e "$w" "$TMP/site"; done
    fi
    export PYTHONPATH="$TMP/site:$PYTHONPATH"
  else
    echo "gpu_check: fastcore is missing and ${GPU_CHECK_WHEELS:-.whl}/ holds no wheel: put one there (on a machine with" \
         "internet: python3 -m pip download --no-deps --only-binary=:all: -d .whl 'fastcore>=1.12.3,<2') and carry .whl here" >&2
  fi
elif [ $status -ne 0 ]; then
  echo "gpu_check: $PY failed to start (exit status $status)" >&2; exit 2
fi
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}   # deterministic cuBLAS, set before CUDA starts
rc=0
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  "$PY" tools/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log" || rc=$?
else
  "$PY" tools/gpu_check.py "$@" || rc=$?
fi
exit $rc
