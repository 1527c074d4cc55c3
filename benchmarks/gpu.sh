#!/usr/bin/env bash
# Capture and SDE-IG throughput on resnet50 at 224 px on a CUDA GPU (benchmarks/gpu_throughput.py).
#
#   benchmarks/gpu.sh                 # on a machine with CUDA: full size, prints one JSON object
#   benchmarks/gpu.sh --cpu-smoke     # no GPU: the same script on the CPU at a tiny size
#
# Extra arguments go to gpu_throughput.py (e.g. --images 1024 --batch-size 128).
# PYTHON defaults to the project's venv when present, else python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" == "--cpu-smoke" ]]; then
  shift
  exec "$PYTHON" "$here/gpu_throughput.py" --device cpu --model resnet18 --size 32 \
    --images 16 --batch-size 8 --sde-images 2 --draws 2 --steps 2 --repeats 1 "$@"
fi

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "benchmarks/gpu.sh: no CUDA device is available (torch.cuda.is_available() is False);" \
       "nothing measured. Run it on a GPU machine, or use --cpu-smoke to check the script." >&2
  exit 2
fi
"$PYTHON" -c 'import torch; print("device:", torch.cuda.get_device_name(0))' >&2
exec "$PYTHON" "$here/gpu_throughput.py" --device cuda "$@"
