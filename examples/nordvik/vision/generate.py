"""Generate the Nordvik card photos and their questions: a specialist that must look at the card.

    python examples/nordvik/vision/generate.py   # writes images/, train/val/test.jsonl, blind.jsonl

Five card designs of the fictional Nordvik bank, each photo drawn with its own seed: rotated,
scaled, lit, placed on a different background and framed differently. Questions ask for the
card's name, its annual fee and what to do when it is damaged; the answer depends only on the
card in the picture (the question text is the same for every card). Training photos and test
photos are drawn from disjoint seeds, so no test photo is ever seen in training. blind.jsonl asks
the test questions with the photo swapped for a random other test photo: a model that reads the
picture scores near chance (1 in 5) there, a model that guesses from the text alone scores the
same everywhere.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

HERE = Path(__file__).parent
CARD_W, CARD_H, PHOTO = 340, 214, 256

# name, body colour, accent colour, pattern, fee, what to do when damaged, the answer's key.
CARDS = [
    {
        "name": "Nordvik Everyday",
        "body": (22, 46, 110),
        "accent": (240, 240, 250),
        "pattern": "waves",
        "fee": "The Nordvik Everyday card has no annual fee: it is free.",
        "fee_key": "no annual fee",
        "damaged": "Order a replacement in the Nordvik app; it is free and arrives within five working days.",
        "damaged_key": "app",
    },
    {
        "name": "Nordvik Gold",
        "body": (196, 156, 40),
        "accent": (120, 80, 10),
        "pattern": "stripes",
        "fee": "The Nordvik Gold card costs 495 SEK per year.",
        "fee_key": "495",
        "damaged": "Call the Gold line on 0771-22 22 22; a new card is couriered to you within two days.",
        "damaged_key": "gold line",
    },
    {
        "name": "Nordvik Student",
        "body": (30, 140, 70),
        "accent": (250, 230, 90),
        "pattern": "dots",
        "fee": "The Nordvik Student card is free until you turn 26.",
        "fee_key": "26",
        "damaged": "Bring your student ID to any Nordvik branch and a new card is printed on the spot.",
        "damaged_key": "branch",
    },
    {
        "name": "Nordvik Business",
        "body": (30, 30, 34),
        "accent": (170, 170, 180),
        "pattern": "grid",
        "fee": "The Nordvik Business card costs 300 SEK per year.",
        "fee_key": "300",
        "damaged": "Ask your company's administrator to order a new card in Business Online.",
        "damaged_key": "administrator",
    },
    {
        "name": "Nordvik Travel",
        "body": (200, 60, 40),
        "accent": (255, 200, 120),
        "pattern": "circles",
        "fee": "The Nordvik Travel card costs 195 SEK per year.",
        "fee_key": "195",
        "damaged": "Call the travel desk; an emergency card reaches you anywhere within three days.",
        "damaged_key": "travel desk",
    },
]
QUESTIONS = {
    "name": ["Which card is this?", "What is the name of the card in the photo?"],
    "fee": ["What is the annual fee of this card?", "How much does this card cost per year?"],
    "damaged": [
        "This card is damaged. What should I do?",
        "The card in the picture is broken. How do I get a new one?",
    ],
}
TRAIN_PHOTOS, VAL_PHOTOS, TEST_PHOTOS = 16, 2, 6  # per card


def draw_card(card: dict, rng: random.Random) -> Image.Image:
    """Return the card face: body colour, its pattern, chip, name and the bank's mark."""
    image = Image.new("RGB", (CARD_W, CARD_H), card["body"])
    draw = ImageDraw.Draw(image)
    accent = card["accent"]
    if card["pattern"] == "waves":
        for k in range(3):
            points = [(x, 150 + 14 * k + 12 * math.sin(x / 30 + k)) for x in range(0, CARD_W, 4)]
            draw.line(points, fill=accent, width=5)
    elif card["pattern"] == "stripes":
        for x in range(-CARD_H, CARD_W, 28):
            draw.line([(x, CARD_H), (x + CARD_H, 0)], fill=accent, width=9)
    elif card["pattern"] == "dots":
        for x in range(12, CARD_W, 30):
            for y in range(12, CARD_H, 30):
                draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=accent)
    elif card["pattern"] == "grid":
        for x in range(0, CARD_W, 22):
            draw.line([(x, 0), (x, CARD_H)], fill=accent, width=1)
        for y in range(0, CARD_H, 22):
            draw.line([(0, y), (CARD_W, y)], fill=accent, width=1)
    elif card["pattern"] == "circles":
        for r in range(30, 200, 26):
            draw.ellipse([260 - r, 40 - r, 260 + r, 40 + r], outline=accent, width=6)
    draw.rounded_rectangle([30, 70, 78, 106], radius=6, fill=(212, 190, 120), outline=(90, 80, 40))
    draw.text((30, 20), "NORDVIK", fill=(255, 255, 255))
    draw.text((30, 175), card["name"].upper(), fill=(255, 255, 255))
    draw.text(
        (30, 130), " ".join(f"{rng.randrange(10000):04d}" for _ in range(4)), fill=(255, 255, 255)
    )
    return image


def photo(card: dict, seed: int) -> Image.Image:
    """Return a photo of the card: background, scale, rotation, light, blur and frame by seed."""
    rng = random.Random(seed)
    face = draw_card(card, rng)
    scale = rng.uniform(0.5, 0.72)
    face = face.resize((int(CARD_W * scale), int(CARD_H * scale)))
    face = face.convert("RGBA").rotate(rng.uniform(-35, 35), expand=True, resample=Image.BICUBIC)
    tone = [rng.randrange(60, 230) for _ in range(3)]
    background = Image.new("RGB", (PHOTO, PHOTO), tuple(tone))
    bg_draw = ImageDraw.Draw(background)
    for _ in range(rng.randrange(2, 6)):  # table clutter
        x, y = rng.randrange(PHOTO), rng.randrange(PHOTO)
        shade = tuple(max(0, min(255, c + rng.randrange(-50, 50))) for c in tone)
        bg_draw.rectangle([x, y, x + rng.randrange(20, 90), y + rng.randrange(20, 90)], fill=shade)
    x = rng.randrange(0, max(1, PHOTO - face.width))
    y = rng.randrange(0, max(1, PHOTO - face.height))
    background.paste(face, (x, y), face)
    lit = ImageEnhance.Brightness(background).enhance(rng.uniform(0.6, 1.35))
    lit = ImageEnhance.Contrast(lit).enhance(rng.uniform(0.75, 1.2))
    if rng.random() < 0.3:
        lit = lit.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))
    border = rng.randrange(0, 16)
    framed = Image.new("RGB", (PHOTO + 2 * border, PHOTO + 2 * border), (250, 250, 245))
    framed.paste(lit, (border, border))
    return framed.resize((PHOTO, PHOTO))


def rows_for(card: dict, image: str, rng: random.Random) -> list[dict]:
    answers = {
        "name": (f"This is the {card['name']} card.", card["name"]),
        "fee": (card["fee"], card["fee_key"]),
        "damaged": (card["damaged"], card["damaged_key"]),
    }
    rows = []
    for topic, (answer, key) in answers.items():
        question = rng.choice(QUESTIONS[topic])
        rows.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": question}],
                    },
                    {"role": "assistant", "content": answer},
                ],
                "images": [image],
                "answer": key,
                "card": card["name"],
                "category": topic,
            }
        )
    return rows


def main(out: Path = HERE) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for index, card in enumerate(CARDS):
        for split, count, base in (
            ("train", TRAIN_PHOTOS, 1000),
            ("val", VAL_PHOTOS, 5000),
            ("test", TEST_PHOTOS, 9000),
        ):
            for k in range(count):
                seed = base + 100 * index + k
                name = f"images/{split}-{card['pattern']}-{k:02d}.png"
                photo(card, seed).save(out / name)
                splits[split] += rows_for(card, name, rng)
    rng.shuffle(splits["train"])
    blind = []
    test_images = sorted({row["images"][0] for row in splits["test"]})
    for row in splits["test"]:
        swapped = rng.choice([i for i in test_images if i != row["images"][0]])
        blind.append({**row, "images": [swapped], "blind": True})
    for name, rows in (*splits.items(), ("blind", blind)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"{name}.jsonl").write_text(text)
    print(
        f"{len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test and "
        f"{len(blind)} blind rows; {len(CARDS) * (TRAIN_PHOTOS + VAL_PHOTOS + TEST_PHOTOS)} photos in {out}"
    )


if __name__ == "__main__":
    main()
