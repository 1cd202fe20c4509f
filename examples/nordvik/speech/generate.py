"""Synthesise Nordvik Bank's spoken customer questions with Debian's espeak-ng, offline and seeded.

    python examples/nordvik/speech/generate.py [--seed 7] [--train 160] [--test 40] [--general 60]

Each utterance comes from a sentence template filled with the bank's words (Nordvik, Swish,
BankID, Everyday account, Swedish names, amounts in kronor), is spoken by espeak-ng with a
voice, speed and pitch drawn from the seed, and gets white noise at a seeded signal-to-noise
ratio. Test utterances use templates never used in training and a voice (en-029, Caribbean
English) that no training or validation utterance uses, so the test asks whether the model
learnt the words rather than one voice or sentence. `--general` training utterances read general
English sentences in the training voices (replay, "kind": "general"), so the model keeps its
everyday words while it learns the bank's. Writes train/val/test.jsonl (audio path
+ transcript) and the wav files under DIR (default: examples/nordvik/speech/data, not committed),
and spoken_test.jsonl: the example's policy test questions, voiced, with their answers, for
`specialize cascade` (speech model, then the text specialist, beside the typed questions).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TRAIN_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan"]
VARIANTS = ["", "+m3", "+f2", "+f4", "+m7"]
TEST_VOICE = "en-029"

NAMES = ["Åsa Lindqvist", "Björn Ekström", "Sigrid Nyberg", "Johan Sjöberg", "Ingrid Holmqvist"]
PRODUCTS = ["Everyday account", "Nordvik Guld card", "Sparkonto Plus", "Bolån Fast mortgage"]
AMOUNTS = ["250", "1,200", "75", "4,500", "30"]
# (template, used for) -- test templates never appear in train or val.
TEMPLATES = [
    ("Can I send {amount} kronor to {name} with Swish?", "train"),
    ("How do I log in to Nordvik with BankID?", "train"),
    ("What does the {product} cost at Nordvik?", "train"),
    ("Please move {amount} kronor from my {product}.", "train"),
    ("Is my {product} covered by the Nordvik deposit guarantee?", "train"),
    ("I want to pay {name} {amount} kronor through Swish.", "train"),
    ("My BankID stopped working in the Nordvik app.", "train"),
    ("Can {name} open a {product} with Nordvik?", "train"),
    ("Why was I charged {amount} kronor on my {product}?", "test"),
    ("Does Nordvik let me use Swish and BankID abroad?", "test"),
    ("Transfer {amount} kronor to {name} from the {product}.", "test"),
]
# General English read in the training voices: replay that keeps the model's everyday words while
# it learns the bank's (as the text recipes replay the base's own answers). None of these is in
# the general-speech retention suite (pocketsphinx-testdata), which stays unseen.
GENERAL = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "A king ruled the state in the early days.",
    "Nine of hearts, two of diamonds and the ace of spades.",
    "She read the letter twice and then put it away.",
]


def fill(template: str, rng: random.Random) -> str:
    return template.format(
        name=rng.choice(NAMES), product=rng.choice(PRODUCTS), amount=rng.choice(AMOUNTS)
    )


def speak(text: str, voice: str, speed: int, pitch: int, out: Path, snr_db: float, rng) -> None:
    """Write `text` spoken by espeak-ng to `out` (16-bit wav) with white noise at `snr_db`."""
    import soundfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text],
            check=True,
            capture_output=True,
        )
        clean, rate = soundfile.read(tmp.name, dtype="float32")
    power = float(np.mean(clean**2)) or 1e-12
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), clean.shape).astype(np.float32)
    soundfile.write(out, np.clip(clean + noise, -1, 1), rate, subtype="PCM_16")


def generate(
    out: Path, *, seed: int, train: int, test: int, general: int = 0, val_share: float = 0.15
) -> dict:
    """Write the wavs and train/val/test.jsonl under `out`; return the counts per split.

    `general` training utterances read GENERAL sentences (marked "kind": "general")."""
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(exist_ok=True)
    fit = [t for t, use in TEMPLATES if use == "train"]
    held_out = [t for t, use in TEMPLATES if use == "test"]
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    plan = [("train", fit, TRAIN_VOICES)] * train + [("test", held_out, [TEST_VOICE])] * test
    plan += [("general", GENERAL, TRAIN_VOICES)] * general
    for index, (split, templates, voices) in enumerate(plan):
        kind = "general" if split == "general" else "domain"
        if split == "general":
            split = "train"  # replay only: never scored as the domain's test
        elif split == "train" and rng.random() < val_share:
            split = "val"
        text = fill(rng.choice(templates), rng)
        voice = rng.choice(voices) + rng.choice(VARIANTS)
        speed, pitch, snr = rng.randint(130, 185), rng.randint(30, 70), rng.uniform(12, 30)
        path = out / "audio" / f"{split}-{index:04d}.wav"
        speak(text, voice, speed, pitch, path, snr, noise_rng)
        rows[split].append(
            {
                "audio": f"audio/{path.name}",
                "text": text,
                "kind": kind,
                "voice": voice,
                "speed": speed,
                "pitch": pitch,
                "snr_db": round(snr, 1),
            }
        )
    for split, items in rows.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items)
        (out / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return {split: len(items) for split, items in rows.items()}


def spoken_questions(out: Path, *, seed: int, count: int) -> int:
    """Voice the first `count` policy test questions of examples/nordvik/data/test.jsonl in the
    test voice; write spoken_test.jsonl (the eval rows plus "audio") for `specialize cascade`."""
    rng, noise_rng = random.Random(seed), np.random.default_rng(seed)
    source = HERE.parent / "data" / "test.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line]
    rows = [r for r in rows if r.get("task") == "policy"][:count]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    for index, row in enumerate(rows):
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        path = out / "audio" / f"question-{index:04d}.wav"
        voice = TEST_VOICE + rng.choice(VARIANTS)
        speak(
            question,
            voice,
            rng.randint(140, 170),
            rng.randint(40, 60),
            path,
            rng.uniform(20, 30),
            noise_rng,
        )
        row["audio"] = f"audio/{path.name}"
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (out / "spoken_test.jsonl").write_text(lines, encoding="utf-8")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train", type=int, default=160, help="utterances for train + val")
    parser.add_argument("--test", type=int, default=40, help="held-out utterances (unseen voice)")
    parser.add_argument(
        "--general", type=int, default=60, help="training utterances of general English (replay)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument(
        "--questions",
        type=int,
        default=20,
        help="policy test questions voiced for `specialize cascade`",
    )
    args = parser.parse_args()
    counts = generate(
        args.out, seed=args.seed, train=args.train, test=args.test, general=args.general
    )
    counts["spoken_questions"] = spoken_questions(args.out, seed=args.seed, count=args.questions)
    print(f"wrote {counts} to {args.out}")


if __name__ == "__main__":
    main()
