#!/usr/bin/env bash
# Regenerate requirements.lock: pip resolves pyproject's dependencies (with the dev extra) in a
# scratch venv beside the CPU torch that setup.sh installs, and the result is frozen. Run it after
# changing a dependency in pyproject.toml; tests/unit/test_setup_lock.py fails until you do.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=$(sed -n 's/^TORCH_VERSION=//p' scripts/setup.sh)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
python3 -m venv "$SCRATCH/venv"
pip() { "$SCRATCH/venv/bin/python" -m pip --disable-pip-version-check --quiet "$@"; }
pip install --upgrade pip
pip install "torch==$TORCH_VERSION+cpu" || pip install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
pip install -e ".[dev]"
{
  echo "# The versions setup.sh installs (pip's resolution of pyproject.toml with the dev extra, on"
  echo "# Linux x86-64 beside CPU torch $TORCH_VERSION). Regenerate with scripts/lock.sh after changing a"
  echo "# dependency. torch is installed first, by build (CPU or CUDA); the data wheels without"
  echo "# their dependencies (see setup.sh)."
  pip freeze --exclude-editable | grep -v -E '^(torch|uv)=='
} > requirements.lock
echo "lock: $(grep -c '==' requirements.lock) pins written to requirements.lock"
