"""Image rows: the TRL, OpenAI and own layouts; every bad image a named defect; the same photo kept out of two splits."""

import base64
import json
import struct
import zlib

import pytest
import yaml
from PIL import Image

from specialize.data.config import load_data_config
from specialize.data.media import MAX_IMAGE_PIXELS, difference_hash, hamming, image_info
from specialize.data.prepare import prepare
from specialize.data.validate import check_file


def card(path, colour, stripe=None, size=(96, 64)):
    """A flat card with a seeded pattern of blocks (distinct photos get distinct hashes)."""
    import numpy as np

    rng = np.random.default_rng(stripe or 0)
    blocks = rng.integers(0, 120, size=(8, 12, 1)) + np.array(colour) // 2
    pattern = Image.fromarray(blocks.clip(0, 255).astype("uint8"), "RGB")
    pattern.resize(size, Image.Resampling.NEAREST).save(path)
    return path


def huge_png(path, side=20000):
    """A real 20000x20000 greyscale PNG (~0.4 MB on disk, 400 megapixels when decoded)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    packer, row = zlib.compressobj(9), b"\0" * (side + 1)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def trl(image, question="Which card is this?", answer="Gold"):
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ],
        "images": [image],
    }


def openai(url, question="Which card is this?", answer="Gold"):
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
            {"role": "assistant", "content": answer},
        ]
    }


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    red = card(folder / "red.png", (200, 20, 20), stripe=3)
    card(folder / "blue.png", (20, 20, 200), stripe=9)
    data = red.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.png").write_bytes(b"this is not an image")
    huge_png(folder / "huge.png")
    return folder


def checked(path):
    return list(check_file(path))


def test_the_three_layouts_become_one_multimodal_row(tmp_path, images):
    url = "data:image/png;base64," + base64.b64encode((images / "blue.png").read_bytes()).decode()
    marker = {
        "messages": [
            {"role": "user", "content": "<image>\nWhich card?"},
            {"role": "assistant", "content": "Gold"},
        ],
        "images": [str(images / "red.png")],
    }
    own = {
        "messages": [
            {"role": "user", "content": "Which card?", "image": str(images / "red.png")},
            {"role": "assistant", "content": "Gold"},
        ]
    }
    both = trl(str(images / "red.png"))
    both["messages"][0]["content"][0]["path"] = str(images / "red.png")  # parts and list agree
    rows = [
        both,
        openai(url),
        openai(str(images / "blue.png")),
        marker,
        own,
    ]
    result = checked(write(tmp_path / "rows.jsonl", rows))
    assert [c.kind for c in result] == ["multimodal"] * 5
    assert all(not c.errors for c in result), [d.line() for c in result for d in c.defects]
    assert result[0].row["images"] == [str(images / "red.png")]
    assert result[0].row["messages"][0]["content"][0] == {
        "type": "image",
        "path": str(images / "red.png"),
    }
    assert result[1].row["images"] == [url]  # a data URL stays a data URL
    assert result[3].row["messages"][0]["content"][0]["type"] == "image"


def test_a_chat_row_mentioning_image_tags_stays_text(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "What does <image> mean in my template?"},
            {"role": "assistant", "content": "It marks where a picture goes."},
        ]
    }
    [result] = checked(write(tmp_path / "rows.jsonl", [row]))
    assert result.kind == "chat" and not result.defects


@pytest.mark.parametrize(
    ("name", "category", "words"),
    [
        ("missing.png", "missing_media", "not found"),
        ("corrupt.png", "unreadable_media", "not an image"),
        ("truncated.png", "unreadable_media", "truncated"),
        ("huge.png", "image_too_large", "20000x20000 = 400,000,000 pixels"),
    ],
)
def test_bad_images_are_named_defects_with_file_line(tmp_path, images, name, category, words):
    rows = [trl(str(images / "red.png")), trl(str(images / name))]
    good, bad = checked(write(tmp_path / "rows.jsonl", rows))
    assert good.row is not None
    assert bad.row is None
    [defect] = bad.errors
    assert defect.category == category
    assert words in defect.message
    assert defect.line().startswith(f"{tmp_path / 'rows.jsonl'}:2: messages[0].content[0].path:")


def test_huge_png_is_refused_from_its_header(images):
    with pytest.raises(ValueError, match="limit"):
        image_info(images / "huge.png")
    assert MAX_IMAGE_PIXELS < 20000 * 20000


def test_more_or_fewer_images_than_placeholders(tmp_path, images):
    two = trl(str(images / "red.png"))
    two["images"].append(str(images / "blue.png"))
    none = trl(str(images / "red.png"))
    none["messages"][0]["content"] = "Which card is this?"  # the picture would be lost
    fewer = trl(str(images / "red.png"))
    fewer["messages"][0]["content"].insert(0, {"type": "image"})
    results = checked(write(tmp_path / "rows.jsonl", [two, none, fewer]))
    for result in results:
        assert result.row is None
        assert [d.category for d in result.errors] == ["media_count_mismatch"]
    assert "more images than places" in results[0].errors[0].message
    assert "more images than places" in results[1].errors[0].message
    assert "fewer images than places" in results[2].errors[0].message


def test_remote_image_urls_are_refused(tmp_path):
    [result] = checked(write(tmp_path / "rows.jsonl", [openai("https://example.org/card.png")]))
    assert [d.category for d in result.errors] == ["remote_media"]


def test_difference_hash_survives_resize_and_tells_photos_apart(images, tmp_path):
    red = Image.open(images / "red.png")
    red.resize((300, 200)).save(tmp_path / "red-big.jpg", quality=90)
    same = difference_hash(Image.open(tmp_path / "red-big.jpg"))
    assert hamming(difference_hash(red), same) <= 4
    assert hamming(difference_hash(red), difference_hash(Image.open(images / "blue.png"))) > 4


def test_prepare_hashes_images_and_keeps_the_same_photo_out_of_train(tmp_path, images):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(6):
        card(photos / f"train-{k}.png", (30 * k, 100, 200 - 30 * k), stripe=k + 1)
    card(photos / "test-0.png", (250, 250, 0), stripe=7)
    # The test photo, re-encoded under another name, hides in train: it must be caught.
    Image.open(photos / "test-0.png").resize((120, 80)).save(
        photos / "copy-of-test.jpg", quality=92
    )
    train = [trl(f"photos/train-{k}.png") for k in range(6)]  # same question, different photos
    train.append(trl("photos/copy-of-test.jpg", "What card do I hold?"))
    write(tmp_path / "train.jsonl", train)
    write(tmp_path / "test.jsonl", [trl("photos/test-0.png", "Name this card.")])
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"path": "train.jsonl", "split": "train"},
                    {"path": "test.jsonl", "split": "test"},
                ],
                "model": None,
            }
        )
    )
    manifest = prepare(load_data_config(config), tmp_path / "out", progress=False)
    rejects = [
        json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    ]
    assert [r["reason"] for r in rejects] == ["leak_image"]
    assert "test.jsonl:1" in rejects[0]["detail"]
    assert manifest.counts["kept_by_split"]["train"] == 6  # same text, new photo: not duplicates
    assert manifest.leakage["removed_from_train"]["image"] == 1
    assert manifest.images["count"] == 7
    entry = manifest.images["files"][str(photos / "train-0.png")]
    assert len(entry["sha256"]) == 64 and entry["splits"] == ["train"]
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Images" in report and "thumbnails" in report


def test_auto_split_keeps_every_question_about_one_photo_together(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rows = []
    for k in range(12):
        card(photos / f"p{k}.png", (20 * k, 90, 160), stripe=100 + k)
        for question in ("Which card is this?", "What does it cost?", "It broke. What now?"):
            rows.append(trl(f"photos/p{k}.png", question, f"Answer {k}"))
    write(tmp_path / "all.jsonl", rows)
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump(
            {"sources": [{"path": "all.jsonl"}], "model": None, "split": {"val": 0.2, "test": 0.2}}
        )
    )
    manifest = prepare(load_data_config(config), tmp_path / "out", progress=False)
    assert manifest.counts["rejected"] == 0  # no question lost as a leak of its own photo
    splits = {f["splits"][0] for f in manifest.images["files"].values()}
    assert all(len(f["splits"]) == 1 for f in manifest.images["files"].values())
    assert len(splits) >= 2
