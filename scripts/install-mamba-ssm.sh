#!/usr/bin/env bash
# Install the `cuda` extra (mamba-ssm, pinned in pyproject.toml) WITH its Mamba-1 selective-scan CUDA kernel, on a
# CUDA node with nvcc, then check that the kernel runs. mamba-ssm 2.3 builds that kernel only when
# MAMBA_KEEP_CUDA_BUILD=TRUE; without it, it still imports and every Mamba forward fails. pyproject.toml sets the
# variable for uv ([tool.uv.extra-build-variables]) and builds against the project's torch
# ([tool.uv.extra-build-dependencies], match-runtime); this script forces a fresh source build with them.
#
#   bash scripts/install-mamba-ssm.sh          # MAX_JOBS=N limits parallel nvcc jobs (memory)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || { echo "error: nvcc not found: load your cluster's CUDA module first" >&2; exit 2; }
export MAMBA_KEEP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE  # also for uv versions that ignore extra-build-variables
uv sync --extra cuda --reinstall-package mamba-ssm --no-binary-package mamba-ssm
uv run --extra cuda python - <<'PY'
import sys

from nfjobs.models.mamba import backend_problem

problem = backend_problem("mamba_ssm", "cuda:0")
print(problem or "mamba_ssm: selective-scan kernel installed and running on cuda:0")
sys.exit(1 if problem else 0)
PY
