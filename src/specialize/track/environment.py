"""What a run ran on: package versions, the project's git commit, hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = (
    "specialize",
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "safetensors",
    "tokenizers",
)


def capture_environment(**extra: Any) -> dict[str, Any]:
    """Return a JSON-ready description of software and hardware, plus `extra` (seed, precision...)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git": git_state(Path(__file__).resolve().parent),
        "hardware": hardware(),
        "argv": sys.argv,
        **extra,
    }


def git_state(where: Path) -> dict[str, Any] | None:
    """Return the commit and dirtiness of the git checkout holding `where`, if it is in one."""
    try:
        commit = _git(where, "rev-parse", "HEAD")
        dirty = bool(_git(where, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": dirty}


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(where: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, check=True, timeout=10
    )
    return result.stdout.strip()
