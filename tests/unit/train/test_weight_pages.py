"""Paging out a frozen fp32 base: its memory goes back to the OS, its values never change."""

import mmap
import os
import struct
from types import SimpleNamespace

import pytest
import torch

from specialize.models.tiny import save_tiny_model
from specialize.train import fused_lora, weight_pages
from specialize.train.trainer import _frozen_base_pages

PAGE = mmap.PAGESIZE


def _resident_pages(tensor) -> int:
    """How many of the pages wholly inside `tensor` this process has mapped (/proc/self/pagemap)."""
    low, high = weight_pages.whole_pages(tensor)
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(low // PAGE * 8)
        entries = pagemap.read((high - low) // PAGE * 8)
    return sum(entry >> 63 for (entry,) in struct.iter_unpack("<Q", entries))


def _resident_share(layers) -> float:
    """The share of the layers' weights' whole pages this process has mapped."""
    pages = [weight_pages.whole_pages(layer.weight) for layer in layers]
    total = sum((high - low) // PAGE for low, high in pages)
    return sum(_resident_pages(layer.weight) for layer in layers) / total


def _lora_model(path):
    """A LoRA model over weights memory-mapped from a safetensors file, routed through fused layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    model = get_peft_model(base, config)
    fused_lora.install(model)
    return model


def _q_proj(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight


def _frozen(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


@pytest.fixture
def lora_model(tiny_model_dir, tmp_path):
    # A model of its own (the kernel pages out only pages no other mapping shares), written
    # through to the disk (and only clean ones), with layers wide enough that the kernel's
    # fault-around (up to 16 pages beside a page read, here the norms' weights) maps few of them.
    path = save_tiny_model(
        tmp_path / "model", tiny_model_dir, hidden_size=256, intermediate_size=1024
    )
    with open(path / "model.safetensors", "rb+") as weights:
        os.fsync(weights.fileno())
    model = _lora_model(path)
    if not weight_pages.in_file_mapping(_q_proj(model).data_ptr(), 1, weight_pages.file_mappings()):
        pytest.fail("transformers no longer memory-maps safetensors weights: nothing to page out")
    return model


def test_the_frozen_base_leaves_memory_and_training_under_autocast_does_not_read_it_back(
    lora_model,
):
    before = _frozen(lora_model)  # reads every page in
    assert _resident_share(fused_lora.fused_bases(lora_model)) == 1.0
    handed_back = weight_pages.page_out_frozen_base(lora_model, torch.bfloat16)
    lm_head = lora_model.get_output_embeddings().weight
    assert handed_back >= lm_head.numel() * 4 - 2 * PAGE  # the tied embedding at least
    assert _resident_pages(_q_proj(lora_model)) == 0
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lora_model(input_ids=ids, labels=ids).loss
    loss.backward()
    # the products read the kept bf16 copies: the fp32 base was not read back in
    assert _resident_share(fused_lora.fused_bases(lora_model)) < 0.1
    after = _frozen(lora_model)  # read back from the file, bitwise
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_a_weight_changed_in_place_keeps_its_change(lora_model):
    weight = _q_proj(lora_model)
    weight.data[0, :8] += 1.0  # a private copy of that page now, not the file's
    expected = weight.detach().clone()
    weight_pages.page_out([weight])
    assert torch.equal(weight, expected)


def test_weights_not_backed_by_a_file_are_left_alone():
    layer = torch.nn.Linear(512, 512)
    assert weight_pages.page_out([layer.weight]) == 0


def test_the_trainer_pages_out_only_when_training_under_cpu_bf16(lora_model):
    assert _frozen_base_pages(lora_model, SimpleNamespace(bf16=False)) is None
    assert _frozen_base_pages(lora_model, None) is None
    callback = _frozen_base_pages(lora_model, SimpleNamespace(bf16=True))
    _frozen(lora_model)
    callback.on_train_begin(None, None, None)
    assert callback.paged_out > 0 and _resident_pages(_q_proj(lora_model)) == 0
    _frozen(lora_model)  # a retention probe reads the fp32 weights in again
    callback.on_save(None, None, None)
    assert _resident_pages(_q_proj(lora_model)) == 0
