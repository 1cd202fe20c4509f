"""Read input files as a stream of raw rows, each with the place it came from.

Readers never raise on bad content: a line that is not UTF-8 or not JSON becomes a row carrying
that problem, so validation can count it and carry on. Memory stays flat for jsonl, csv, parquet
and text folders; a `.json` file is one document and is parsed whole. A folder written by
`datasets.save_to_disk` (a Dataset, or a DatasetDict whose splits are read in turn) and an
`.arrow` file are memory-mapped Arrow, read in batches; their rows are numbered from 1 per split.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialize.errors import UserFileError

TEXT_SUFFIXES = (".txt", ".md")
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")


@dataclass
class RawRow:
    """One input row: where it came from, and its parsed value or why it could not be parsed."""

    source: str  # the file
    line: int  # 1-based line (jsonl, csv), element index + 1 (json, parquet) or file number
    value: Any = None
    problem: tuple[str, str] | None = None  # (category, message) when the row could not be read
    raw_text: str | None = None  # the undecodable or unparsable text, kept for rejects.jsonl

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def read_rows(path: str | Path) -> Iterator[RawRow]:
    """Yield every row of a supported file or text folder, in order."""
    path = Path(path)
    if not path.exists():
        raise UserFileError("not found", where=str(path), fix="check the path")
    if path.is_dir():
        if is_saved_dataset(path):
            yield from _read_saved_dataset(path)
        else:
            yield from _read_text_folder(path)
        return
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise UserFileError(
            f"unsupported file type {path.suffix!r}",
            where=str(path),
            fix=f"use one of {', '.join(FILE_SUFFIXES)} or a folder of {'/'.join(TEXT_SUFFIXES)} files",
        )
    yield from reader(path)


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # blank lines carry no row; JSONL writers often end with one
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = ("not_utf8", f"byte {exc.start} is not UTF-8")
                yield RawRow(
                    str(path), number, problem=problem, raw_text=raw.decode("utf-8", "replace")
                )
                continue
            try:
                yield RawRow(str(path), number, json.loads(text))
            except json.JSONDecodeError as exc:
                problem = ("malformed_json", f"{exc.msg} at column {exc.colno}")
                yield RawRow(str(path), number, problem=problem, raw_text=text.rstrip("\n"))


def _read_json(path: Path) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        yield RawRow(str(path), 1, problem=("not_utf8", f"byte {exc.start} is not UTF-8"))
        return
    except json.JSONDecodeError as exc:
        yield RawRow(
            str(path), exc.lineno, problem=("malformed_json", f"{exc.msg} at column {exc.colno}")
        )
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]  # {"data": [...]} is a common wrapper
    if not isinstance(data, list):
        yield RawRow(
            str(path),
            1,
            problem=("malformed_json", "expected a list of records (or {'data': [...]})"),
        )
        return
    for index, item in enumerate(data, start=1):
        yield RawRow(str(path), index, item)


def _read_csv(path: Path) -> Iterator[RawRow]:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut by the 4 KiB window
            yield RawRow(str(path), 1, problem=("not_utf8", f"byte {exc.start} is not UTF-8"))
            return
    with open(path, encoding="utf-8", errors="strict", newline="") as handle:
        reader = csv.DictReader(handle)
        line = 1
        try:
            for record in reader:
                # DictReader's line_num is the line where the record ended (records can span lines).
                line = reader.line_num
                if None in record:
                    extra = record.pop(None)
                    yield RawRow(
                        str(path),
                        line,
                        problem=("malformed_csv", f"{len(extra)} more field(s) than the header"),
                    )
                    continue
                yield RawRow(str(path), line, _parse_csv_cells(record))
        except UnicodeDecodeError as exc:
            yield RawRow(
                str(path), line + 1, problem=("not_utf8", f"byte {exc.start} is not UTF-8")
            )
        except csv.Error as exc:
            yield RawRow(str(path), reader.line_num, problem=("malformed_csv", str(exc)))


def _parse_csv_cells(record: dict[str, str]) -> dict[str, Any]:
    """CSV cells are strings; a cell holding a JSON list or object (messages) is decoded."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        stripped = (value or "").strip()
        if stripped[:1] in "[{":
            try:
                out[key] = json.loads(stripped)
                continue
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise UserFileError(f"cannot read parquet ({exc})", where=str(path)) from None
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield RawRow(str(path), number, record)


def is_saved_dataset(folder: Path) -> bool:
    """True for a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _read_saved_dataset(folder: Path) -> Iterator[RawRow]:
    if (folder / "dataset_dict.json").is_file():
        try:
            splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError) as exc:
            raise UserFileError(
                f"unreadable dataset_dict.json ({exc})", where=str(folder / "dataset_dict.json")
            ) from None
        for split in splits:
            yield from _read_saved_dataset(folder / split)
        return
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / f["filename"] for f in state["_data_files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserFileError(
            f"unreadable state.json ({exc})",
            where=str(folder / "state.json"),
            fix="write the folder with datasets' save_to_disk",
        ) from None
    number = 0
    for file in files:
        for record in _arrow_records(file):
            number += 1
            yield RawRow(str(folder), number, record)


def _read_arrow(path: Path) -> Iterator[RawRow]:
    for number, record in enumerate(_arrow_records(path), start=1):
        yield RawRow(str(path), number, record)


def _arrow_records(path: Path) -> Iterator[dict]:
    """Records of an Arrow file: the stream format `datasets` writes, or the IPC file format."""
    import pyarrow as pa

    if not path.is_file():
        raise UserFileError(
            "not found", where=str(path), fix="check the dataset folder is complete"
        )
    try:
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
                batches = iter(reader)
            except pa.ArrowInvalid:
                source.seek(0)
                file_reader = pa.ipc.open_file(source)
                batches = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            for batch in batches:
                yield from batch.to_pylist()
    except pa.ArrowInvalid as exc:
        raise UserFileError(
            f"cannot read Arrow data ({exc})", where=str(path), fix="check the file is Arrow"
        ) from None


def _read_text_folder(folder: Path) -> Iterator[RawRow]:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
    )
    if not files:
        raise UserFileError(
            f"no {'/'.join(TEXT_SUFFIXES)} files in the folder",
            where=str(folder),
            fix="point at text files",
        )
    for file in files:
        try:
            yield RawRow(str(file), 1, {"text": file.read_bytes().decode("utf-8")})
        except UnicodeDecodeError as exc:
            yield RawRow(str(file), 1, problem=("not_utf8", f"byte {exc.start} is not UTF-8"))


_READERS = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".arrow": _read_arrow,
}
