"""Images/s for vision training and inference, and peak memory, on the shipped card photos.

Two training paths on the same rows and model:
  cached  specialize's path: the frozen encoder runs once per distinct image, steps read features
  plain   the plain transformers way: every step runs the encoder on its pixels again
and greedy inference (encoder + projector + LM generate). Each path runs in its own process, so
its peak RSS (and CUDA peak, where there is a GPU) is its own.

    python benchmarks/vision_throughput.py --model smollm2-135m-instruct --steps 20 --batch-size 8
    python benchmarks/vision_throughput.py --model PATH/TO/TINY --steps 3 --batch-size 2 --rows 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARDS = REPO / "examples" / "nordvik" / "vision"


def measure(
    path: str, model_ref: str, rows: int, steps: int, batch_size: int, random_encoder: bool
):
    """Run one path in this process; return its numbers."""
    import resource
    import time

    import torch

    from specialize.data.media import load_image
    from specialize.models.loading import default_device, load_model
    from specialize.models.vision import build_vision_lm, generate_answers
    from specialize.train.vision import collate, encode_rows, image_features

    data = [json.loads(line) for line in (CARDS / "train.jsonl").read_text().splitlines()][:rows]
    for row in data:
        row["messages"][0]["content"][0] = {"type": "image", "path": str(CARDS / row["images"][0])}
    device = default_device()
    lm, tokenizer = load_model(model_ref)
    model = build_vision_lm(lm, tokenizer, pretrained=not random_encoder).to(device)
    spec = model.spec
    examples = encode_rows(tokenizer, data, spec.placeholder, spec.image_tokens, 256)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    refs = {r for e in examples for r in e.images}
    started = time.perf_counter()
    if path == "inference":
        prompts = [row["messages"][:1] for row in data]
        pictures = [[load_image(ref) for ref in e.images] for e in examples]
        generate_answers(
            model, tokenizer, prompts, pictures, max_new_tokens=16, batch_size=batch_size
        )
        images = len(prompts)
    else:
        cache = image_features(model, refs, progress=False) if path == "cached" else None
        optimizer = torch.optim.AdamW(model.projector.parameters(), lr=1e-4)
        images = 0
        for step in range(steps):
            batch_examples = [
                examples[(step * batch_size + k) % len(examples)] for k in range(batch_size)
            ]
            if path == "plain":  # encode this batch's pixels again, as a plain loop does
                cache = {
                    ref: f
                    for ref, f in zip(
                        [r for e in batch_examples for r in e.images],
                        model.image_features(
                            [load_image(r) for e in batch_examples for r in e.images]
                        ),
                        strict=True,
                    )
                }
            batch = collate(batch_examples, cache, pad, device)
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()
            images += sum(len(e.images) for e in batch_examples)
    seconds = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "path": path,
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 2),
        "peak_rss_mb": round(peak_rss),
        "cuda_peak_mb": round(cuda_peak) if cuda_peak is not None else None,
        "device": device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--random-encoder", action="store_true", help="skip the ImageNet weights")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one path, print JSON
    args = parser.parse_args()
    if args.one:
        print(
            json.dumps(
                measure(
                    args.one,
                    args.model,
                    args.rows,
                    args.steps,
                    args.batch_size,
                    args.random_encoder,
                )
            )
        )
        return
    results = []
    for path in ("cached", "plain", "inference"):
        command = [sys.executable, __file__, "--one", path, "--model", args.model]
        command += [
            "--rows",
            str(args.rows),
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
        ]
        command += ["--random-encoder"] if args.random_encoder else []
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'path':<10} {'images':>7} {'s':>8} {'images/s':>9} {'peak RSS MB':>12} {'CUDA MB':>8}")
    for r in results:
        print(
            f"{r['path']:<10} {r['images']:>7} {r['seconds']:>8} {r['images_per_s']:>9} "
            f"{r['peak_rss_mb']:>12} {r['cuda_peak_mb'] or '-':>8}"
        )


if __name__ == "__main__":
    main()
