import pytest

from specialize.errors import ModelError
from specialize.models.loading import content_hash, load_model, model_info, resolve_model


def test_local_directory_resolves(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.kind == "dir" and resolved.path == tiny_model_dir.resolve()


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_says_what_to_use_instead():
    with pytest.raises(ModelError) as info:
        resolve_model("someone/some-model")
    line = info.value.one_line()
    assert "local" in line and "alias" in line


def test_unknown_reference():
    with pytest.raises(ModelError, match="unknown model"):
        resolve_model("no-such-thing")


def test_info_of_tiny_model(tiny_model_dir):
    info = model_info(str(tiny_model_dir))
    assert info.architecture == "LlamaForCausalLM"
    model, _ = load_model(str(tiny_model_dir))
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert info.chat_template is True and info.context_length == 2048
    assert len(info.content_hash) == 64 and info.size_bytes > 0


def test_content_hash_is_cached_and_follows_the_weights(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    first = content_hash(copy)
    assert content_hash(copy) == first == content_hash(tiny_model_dir)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert content_hash(copy) != first
