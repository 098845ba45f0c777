#!/usr/bin/env bash
# The tests again on the oldest torch onecycle supports (scripts/floor-constraints.txt: torch 2.4.1,
# torchvision 0.19.1), in a venv of its own, .venv-floor/, that sees none of the system's packages:
#   bash scripts/floor.sh [PYTEST ARGS]      (PYTHON=python3.12 to build it from another interpreter)
# The newest release is what `pip install -e ".[dev]"` brings; CI (.ci/run) runs both. The only torch 2.4.1
# on PyPI for Linux is the CUDA build (about 5 GB with its nvidia packages); it runs on the CPU all the same.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# torch 2.4.1 has wheels for CPython 3.8 to 3.12 only: say so rather than let pip say "no matching distribution"
"$python" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' || {
  echo "scripts/floor.sh: torch 2.4.1 needs Python 3.10 to 3.12; $python is $("$python" -V 2>&1)." \
       "Set PYTHON=python3.12 (or another 3.10-3.12)" >&2
  exit 2
}
[ -x .venv-floor/bin/python ] || "$python" -m venv .venv-floor
.venv-floor/bin/python -m pip install -q -e ".[dev]" -c scripts/floor-constraints.txt
# activated, so that the tests' scripts find this venv's `python` and `onecycle` first on PATH
source .venv-floor/bin/activate
python -c 'import torch, torchvision; print(f"floor: torch {torch.__version__}, torchvision {torchvision.__version__}")'
python -m pytest "$@"
