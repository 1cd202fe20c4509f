"""Time one forward of a mixed-adapter batch: PEFT's `adapter_names` path against our stacked
LoRA (`adapters/batched_lora.py`, gather + bmm, or grouped by adapter), on the real model's shapes.

    .venv/bin/python benchmarks/lora_gather.py [--model smollm2-135m-instruct] [--batch 8]
        [--repeats 10] [--rank 8] [--targets q_proj,v_proj] [--threads 1]

It makes three random LoRA adapters (rank --rank, and 2x, 4x that, on --targets) in a temporary
home, prefills `--batch` chat prompts (rows cycle over base and the three adapters), then times
for one decode step (one new token per row, on the prompts' KV cache) and for the prefill:
    single   every row with one adapter, PEFT's ordinary path (the best case for a batch)
    peft     rows with mixed adapters, PEFT's `adapter_names`
    gather   rows with mixed adapters, stacked weights, gather + bmm
    group    rows with mixed adapters, stacked weights, index_select + one matmul per adapter
Each line gives the median and the min over --repeats runs (n). It also checks that the three
mixed paths give the same logits (max abs difference).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q_proj,v_proj")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="lora-gather-")
    # The default model materialises into this home (~500 MB): removed at exit, as each run
    # left one behind in /tmp before.
    atexit.register(shutil.rmtree, home, True)
    os.environ.setdefault("SPECIALIZE_HOME", home)

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, DynamicCache

    from specialize.adapters.batched_lora import BatchedLora
    from specialize.models.generation import render_prompt_ids
    from specialize.models.loading import load_model, resolve_model

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model).path
    names = ["legal", "medical", "travel"]
    folders = []
    for index, name in enumerate(names):
        torch.manual_seed(index)
        rank = args.rank * 2**index
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=args.targets.split(","),
            init_lora_weights=False,
            use_rslora=index == 2,
        )
        folder = Path(os.environ["SPECIALIZE_HOME"]) / name
        get_peft_model(AutoModelForCausalLM.from_pretrained(path), config).save_pretrained(folder)
        folders.append(folder)
    model, tokenizer = load_model(resolve_model(args.model))
    model = PeftModel.from_pretrained(model, folders[0], adapter_name=names[0])
    for name, folder in zip(names[1:], folders[1:], strict=True):
        model.load_adapter(folder, adapter_name=name)
    model.eval()

    rows = [(["base", *names])[i % 4] for i in range(args.batch)]
    question = "How long does a mortgage decision take at a bank?"
    prompts = [
        render_prompt_ids(tokenizer, [{"role": "user", "content": question[: 20 + 3 * i]}])
        for i in range(args.batch)
    ]
    width = max(map(len, prompts))
    ids = torch.full((args.batch, width), tokenizer.pad_token_id or 0)
    mask = torch.zeros((args.batch, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    peft_names = ["__base__" if r == "base" else r for r in rows]
    with torch.inference_mode():
        cache = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=DynamicCache(),
            use_cache=True,
            adapter_names=peft_names,
        ).past_key_values
    step_ids = torch.full((args.batch, 1), 42)
    step_mask = torch.cat([mask, torch.ones((args.batch, 1), dtype=torch.long)], 1)
    step_positions = mask.sum(-1, keepdim=True)
    gather, group = BatchedLora(model, names, "gather"), BatchedLora(model, names, "group")

    def forward(kind: str, decode: bool):
        inputs = (
            {"input_ids": step_ids, "attention_mask": step_mask, "position_ids": step_positions}
            if decode
            else {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        )
        inputs |= {"past_key_values": cache if decode else DynamicCache(), "use_cache": True}
        inputs["logits_to_keep"] = 1
        with torch.inference_mode():
            if kind == "single":
                model.set_adapter(names[0])
                out = model(**inputs)
            elif kind == "peft":
                out = model(**inputs, adapter_names=peft_names)
            else:
                with (gather if kind == "gather" else group).rows(rows) as extra:
                    out = model(**inputs, **extra)
        if decode:
            cache.crop(-1)
        return out.logits[:, -1].float()

    print(
        f"{args.model}: batch {args.batch} ({', '.join(rows)}), prompt width {width}, ranks "
        f"{[args.rank * 2**i for i in range(3)]} on {args.targets} (the last with rsLoRA), "
        f"{torch.get_num_threads()} threads, n={args.repeats} per line"
    )
    for decode in (True, False):
        reference = forward("peft", decode)
        for kind in ("single", "peft", "gather", "group"):
            logits = forward(kind, decode)
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                forward(kind, decode)
                times.append(time.perf_counter() - started)
            diff = (
                ""
                if kind == "single"
                else f", max |logit diff| vs peft {(logits - reference).abs().max():.2e}"
            )
            print(
                f"{'decode step' if decode else 'prefill'} {kind:7s}: median "
                f"{statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms{diff}"
            )


if __name__ == "__main__":
    main()
