"""Can the frozen encoder tell the cards apart at all? A linear probe on its features, before any LM.

    python examples/nordvik/vision/probe.py

Fits a logistic regression from the pooled EfficientNet-Lite0 features (the same grid x grid
features the VLM's projector reads) to the card's name on the training photos, and reports its
accuracy on the held-out test photos with a Wilson interval. Near 100 % means the pictures carry
what the questions ask; a tuned VLM that still scores near the blind control is then a training
problem, not an encoder one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from specialize.data.media import load_image
from specialize.evaluate.stats import wilson
from specialize.models.vision import load_encoder, pixels_of

HERE = Path(__file__).parent


def photos(split: str) -> list[tuple[str, str]]:
    """Return (image, card) per distinct photo of a split."""
    rows = [json.loads(line) for line in (HERE / f"{split}.jsonl").read_text().splitlines()]
    return sorted({row["images"][0]: row["card"] for row in rows}.items())


@torch.no_grad()
def features(encoder, items: list[tuple[str, str]], grid: int = 2) -> torch.Tensor:
    batches = []
    for start in range(0, len(items), 16):
        images = [load_image(HERE / path) for path, _ in items[start : start + 16]]
        batches.append(F.adaptive_avg_pool2d(encoder.features(pixels_of(images)), grid).flatten(1))
    return torch.cat(batches)


def main() -> None:
    encoder = load_encoder()
    train, test = photos("train"), photos("test")
    names = sorted({card for _, card in train})
    x_train, x_test = features(encoder, train), features(encoder, test)
    y_train = torch.tensor([names.index(card) for _, card in train])
    y_test = torch.tensor([names.index(card) for _, card in test])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    weights = torch.zeros(x_train.shape[1], len(names), requires_grad=True)
    bias = torch.zeros(len(names), requires_grad=True)
    optimizer = torch.optim.Adam([weights, bias], lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weights + bias, y_train) + 1e-3 * weights.pow(2).sum()
        loss.backward()
        optimizer.step()
    correct = int(((x_test @ weights + bias).argmax(1) == y_test).sum())
    interval = wilson(correct, len(test))
    print(
        f"held-out card accuracy {correct}/{len(test)} = {interval.mean:.2f} "
        f"(95% CI [{interval.low:.2f}, {interval.high:.2f}]); chance {1 / len(names):.2f}; "
        f"{len(train)} training photos"
    )


if __name__ == "__main__":
    main()
