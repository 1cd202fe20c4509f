"""The data report: counts per reason, token lengths, truncation, tokens per epoch, sample rejects."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from specialize.artifacts import atomic_write_text
from specialize.track import html
from specialize.track.plots import histogram_png

if TYPE_CHECKING:
    from specialize.data.prepare import Candidate, DatasetManifest, Ledger

SAMPLES_PER_REASON = 3


def write_data_report(
    out: Path, manifest: DatasetManifest, splits: dict[str, list[Candidate]], ledger: Ledger
) -> Path:
    """Write report.html beside the dataset files and return its path."""
    counts = manifest.counts
    sections = [
        html.section(
            "Rows",
            html.paragraph(
                f"{counts['input']:,} input rows = {counts['kept']:,} kept + {counts['rejected']:,} rejected."
            ),
            html.table(["split", "rows"], counts["kept_by_split"].items()),
            html.table(
                ["input", "rows", "kinds", "sha256"],
                [
                    (
                        i["path"],
                        i["rows"],
                        ", ".join(f"{k}: {v}" for k, v in i["kinds"].items()),
                        i["sha256"][:16],
                    )
                    for i in manifest.inputs
                ],
            ),
        ),
        html.section(
            "Rejected rows by reason",
            html.table(["reason", "rows"], counts["rejected_by_reason"].items())
            if counts["rejected_by_reason"]
            else html.paragraph("No rows were rejected."),
            html.table(["change", "rows"], counts["changed_by_reason"].items())
            if counts["changed_by_reason"]
            else "",
        ),
        _generated_section(counts.get("generated")),
        _pii_section(counts),
        _token_section(manifest, splits),
        _audio_section(manifest, splits),
        _leakage_section(manifest),
        _images_section(manifest),
        _samples_section(ledger),
    ]
    page = html.page(
        "Data report",
        *sections,
        subtitle=f"created {manifest.created}; tokenizer {manifest.tokenizer}",
    )
    return atomic_write_text(out / "report.html", page)


def _generated_section(generated: dict | None) -> str:
    if not generated:
        return ""
    return html.section(
        "Fact augmentation",
        html.paragraph(
            f"{generated['rows']:,} rows generated from {generated['from_train_rows']:,} train rows "
            "(train only, after the split; each marked `generated`)."
        ),
        html.table(["made by", "rows"], generated["by"].items()),
        html.table(["skipped because", "rows"], generated["skipped"].items())
        if generated["skipped"]
        else "",
    )


def _token_section(manifest: DatasetManifest, splits: dict[str, list[Candidate]]) -> str:
    if not manifest.tokens:
        return html.section(
            "Token lengths",
            html.paragraph("No tokenizer configured (model: null); lengths not measured."),
        )
    max_length = manifest.config["max_length"]
    lengths = {
        name: [c.tokens for c in rows if c.tokens is not None] for name, rows in splits.items()
    }
    png = histogram_png(lengths, title="Tokens per row", xlabel="tokens", limit=max_length)
    rows = [
        (name, s["rows"], s["mean"], s["max"], s["truncated_at_max_length"])
        for name, s in manifest.tokens.items()
        if isinstance(s, dict)
    ]
    return html.section(
        "Token lengths",
        html.image(png, "token length histogram"),
        html.table(
            ["split", "rows", "mean tokens", "max tokens", f"over max_length {max_length}"], rows
        ),
        html.paragraph(
            f"Estimated training tokens per epoch: {manifest.tokens['train_tokens_per_epoch']:,}."
        ),
    )


def _audio_section(manifest: DatasetManifest, splits: dict[str, list[Candidate]]) -> str:
    if not manifest.audio:
        return ""
    seconds = {
        name: [c.row["seconds"] for c in rows if "seconds" in c.row]
        for name, rows in splits.items()
    }
    png = histogram_png(
        seconds,
        title="Seconds per recording",
        xlabel="seconds",
        limit=manifest.config["audio"]["max_seconds"],
    )
    rows = [
        (
            name,
            s["recordings"],
            s["unique_recordings"],
            s["total_seconds"],
            s["mean_seconds"],
            s["max_seconds"],
            ", ".join(f"{rate} Hz: {n}" for rate, n in s["sample_rates"].items()),
        )
        for name, s in manifest.audio.items()
    ]
    return html.section(
        "Recordings",
        html.image(png, "recording duration histogram"),
        html.table(
            ["split", "recordings", "unique", "total s", "mean s", "max s", "sample rates"], rows
        ),
        html.paragraph(
            "Recordings are resampled to 16 kHz mono when used; a recording lands in one split only."
        ),
    )


def _leakage_section(manifest: DatasetManifest) -> str:
    removed = manifest.leakage["removed_from_train"]
    text = (
        "Train rows removed because they (or their question) also appear in val, test or an eval file: "
        f"{removed['exact']} exact, {removed['near']} near"
        + (f", {removed['image']} showing the same photo." if "image" in removed else ".")
    )
    files = manifest.leakage.get("eval_files") or []
    return html.section(
        "Leakage",
        html.paragraph(text),
        html.paragraph("Eval files checked: " + (", ".join(files) or "none")),
    )


THUMBNAILS = 12


def _images_section(manifest: DatasetManifest) -> str:
    """Image counts per split and a strip of the first thumbnails (only for datasets with images)."""
    images = getattr(manifest, "images", None)
    if not images:
        return ""
    return html.section(
        "Images",
        html.paragraph(
            f"{images['count']:,} distinct images, each opened, fully decoded and hashed "
            "(sha256 in manifest.json; a difference hash keeps the same photo out of two splits)."
        ),
        html.table(["split", "images"], images["by_split"].items()),
        html.image(_thumbnail_strip(list(images["files"])[:THUMBNAILS]), "thumbnails"),
    )


def _thumbnail_strip(refs: list[str]) -> bytes:
    """Return a PNG with the images side by side, 96 pixels high."""
    import io

    from PIL import Image

    from specialize.data.media import load_image

    height, pad = 96, 4
    thumbs = []
    for ref in refs:
        if ref.startswith("data-url:"):
            continue  # shown by hash only; the URL itself is not kept in the manifest
        image = load_image(ref)
        image.thumbnail((height * 2, height))
        thumbs.append(image)
    width = sum(t.width + pad for t in thumbs) + pad
    strip = Image.new("RGB", (max(width, 1), height + 2 * pad), (255, 255, 255))
    x = pad
    for thumb in thumbs:
        strip.paste(thumb, (x, pad))
        x += thumb.width + pad
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return buffer.getvalue()


def _samples_section(ledger: Ledger) -> str:
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for record in ledger.rejects:
        if len(by_reason[record["reason"]]) < SAMPLES_PER_REASON:
            by_reason[record["reason"]].append(record)
    if not by_reason:
        return ""
    parts = []
    for reason, records in by_reason.items():
        for record in records:
            row = (
                record["row"]
                if isinstance(record["row"], str)
                else json.dumps(record["row"], ensure_ascii=False)
            )
            parts.append(html.paragraph(f"{reason} - {record['where']}: {record['detail']}"))
            parts.append(html.pre(row[:1500]))
    return html.section("Sample rejected rows", *parts)


def _pii_section(counts: dict) -> str:
    """Rows with personal data, by kind and by id scheme / phone region (before masking)."""
    by_kind = counts.get("pii_rows_by_kind") or {}
    if not by_kind:
        return html.section("Personal data", html.paragraph("No personal data found."))
    rows = list(by_kind.items()) + [
        (f"  {detail}", n) for detail, n in (counts.get("pii_rows_by_detail") or {}).items()
    ]
    return html.section("Personal data (rows, before masking)", html.table(["kind", "rows"], rows))
