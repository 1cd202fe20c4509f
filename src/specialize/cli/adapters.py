"""`specialize adapters list | show | register | tag | rm | merge | export | check` and `specialize serve`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from specialize.adapters import registry as adapters
from specialize.cli.output import print_json, print_table
from specialize.errors import ConfigError
from specialize.models.catalog import DEFAULT_MODEL

app = typer.Typer(
    help="Adapters: a registry of specialists on their base models.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every registered adapter: base, method, data, settings, scores, size."""
    entries = adapters.list_all()
    if as_json:
        console.print_json(json.dumps(entries))
        return
    columns = ["name", "base", "method", "settings", "val loss", "retention", "MiB", "tags"]
    rows = []
    for e in entries:
        h, s = e["hyperparameters"], e["scores"]
        rows.append(
            [
                e["name"],
                f"{Path(e['base_model']).name} ({e['base_hash'][:8]})",
                e["method"] or "",
                f"r{h.get('r')} lr {h.get('learning_rate')}",
                f"{s['best_val_loss']:.4g}" if s.get("best_val_loss") is not None else "",
                s.get("retention_verdict") or "",
                f"{e['size_bytes'] / 2**20:.1f}",
                ",".join(e["tags"]),
            ]
        )
    print_table(console, columns, rows, title=f"{len(entries)} adapter(s)")


@app.command("show")
def show_cmd(name: str) -> None:
    """Everything recorded about one adapter."""
    console.print_json(json.dumps(adapters.get(name)))


@app.command("register")
def register_cmd(
    name: str = typer.Argument(..., help="Name to serve it under."),
    path: Path = typer.Argument(..., help="PEFT adapter dir or run dir."),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="The base model it was trained on."
    ),
) -> None:
    """Register an adapter; refused when its run says it was trained on another base."""
    entry = adapters.register(name, path, base_model=model)
    console.print(
        f"registered {entry['name']} on {entry['base_model']} ({entry['base_hash'][:12]})"
    )


@app.command("tag")
def tag_cmd(name: str, tag: str) -> None:
    console.print(", ".join(adapters.tag(name, tag)))


@app.command("rm")
def rm_cmd(
    name: str,
    delete_files: bool = typer.Option(False, help="Also delete the adapter's folder."),
) -> None:
    """Remove an adapter from the registry (its files stay unless --delete-files)."""
    entry = adapters.remove(name, delete_files=delete_files)
    console.print(f"removed {entry['name']}")


@app.command("merge")
def merge_cmd(
    name: str, out: Path = typer.Option(..., help="New folder for the merged model.")
) -> None:
    """Write base+adapter merged into one safetensors model (with tokenizer and chat template)."""
    from specialize.adapters.export import merge

    console.print(f"merged model: {merge(adapters.get(name), out)}")


@app.command("export")
def export_cmd(
    name: str,
    format: str = typer.Option(
        "peft",
        help="peft (PEFT, vLLM --enable-lora), merged (transformers), gguf (merged model), "
        "gguf-lora (llama.cpp --lora) or ollama (base GGUF + LoRA-GGUF + Modelfile).",
    ),
    out: Path = typer.Option(..., help="New folder for the export."),
    quant: str = typer.Option("f16", help="GGUF weights: f16 or q8_0 (gguf, ollama)."),
    with_base: bool = typer.Option(
        False, help="peft: copy the exact base the adapter was trained on into the export."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Export for other tools; the chat template and the base's provenance travel with it."""
    from specialize.adapters import export

    formats = ("peft", "merged", "gguf", "gguf-lora", "ollama")
    if format not in formats:
        raise ConfigError([f"--format {format!r}: expected one of {', '.join(formats)}"])
    if quant not in ("f16", "q8_0"):
        raise ConfigError([f"--quant {quant!r}: expected f16 or q8_0"])
    entry = adapters.get(name)
    path = {
        "peft": lambda: export.export_peft(entry, out, with_base=with_base),
        "merged": lambda: export.merge(entry, out),
        "gguf": lambda: export.export_gguf(entry, out, quant),
        "gguf-lora": lambda: export.export_lora_gguf(entry, out),
        "ollama": lambda: export.export_ollama(entry, out, quant),
    }[format]()
    record = json.loads((path / export.EXPORT_MARKER).read_text())
    if as_json:
        console.print_json(json.dumps({"path": str(path), **record}))
        return
    console.print(f"{format} export: {path}")
    base = record["base"]
    origin = f", de-quantised from {base['gguf']['file']}" if base.get("gguf") else ""
    console.print(f"base: {base['local_path']}{origin} (see {path / 'README.md'})")


@app.command("check")
def check_cmd(
    names: list[str] = typer.Argument(..., help="Adapters to serve together (two or more)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model."),
    items: int = typer.Option(20, help="Retention (core) items per adapter."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Interference check: each adapter's answers on its own validation chats and on core items are
    the same when served among the others as when served alone."""
    from specialize.adapters.check import interference

    report = interference(model, names, core_items_count=items)
    if as_json:
        print_json(console, report)
        if not report["identical"]:
            raise typer.Exit(1)
        return
    grid = Table(title="Interference check (greedy answers, alone vs among others)")
    for column in (
        "adapter",
        "own items same",
        "core items same",
        "own score alone/among",
        "core score alone/among",
        "engine (mixed batch) same",
    ):
        grid.add_column(column)
    for name, row in report["adapters"].items():
        grid.add_row(
            name,
            f"{row['own']['same']}/{row['own']['n']}",
            f"{row['core']['same']}/{row['core']['n']}",
            f"{row['own']['alone']:.3f} / {row['own']['among']:.3f}",
            f"{row['core']['alone']:.3f} / {row['core']['among']:.3f}",
            f"{row['engine']['same']}/{row['engine']['n']}",
        )
    console.print(grid)
    console.print(report["verdict"])
    if not report["identical"]:
        raise typer.Exit(1)


def register_serve(root: typer.Typer) -> None:
    @root.command("serve")
    def serve_cmd(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model reference."),
        adapter: list[str] = typer.Option(
            [], help="NAME (registered) or NAME=RUN_DIR (registered now); repeatable."
        ),
        host: str = typer.Option("127.0.0.1", help="Address to bind."),
        port: int = typer.Option(8000, help="Port."),
        api_key: str | None = typer.Option(
            None, help="Require 'Authorization: Bearer KEY' (or SPECIALIZE_API_KEY)."
        ),
        admin_key: str | None = typer.Option(
            None,
            help="Separate key for loading/unloading adapters (or SPECIALIZE_ADMIN_KEY); "
            "without it /admin is closed once --api-key is set.",
        ),
        insecure: bool = typer.Option(
            False, help="Allow binding beyond this machine without an API key."
        ),
        max_tokens: int = typer.Option(512, help="Most tokens one request may ask for."),
        max_body_bytes: int = typer.Option(1_000_000, help="Largest request body."),
        max_in_flight: int = typer.Option(64, help="Requests running or queued; more get 429."),
        max_batch: int = typer.Option(32, help="Rows decoded together in one forward pass."),
        speech_model: str | None = typer.Option(
            None,
            help="Also serve POST /v1/audio/transcriptions with this speech model "
            "(e.g. whisper-tiny-en); its form field model=base picks it.",
        ),
        speech_adapter: list[str] = typer.Option(
            [],
            help="Speech adapter: NAME (registered) or NAME=RUN_DIR; repeatable "
            "(implies --speech-model, default the adapter's own base).",
        ),
        max_audio_mb: float = typer.Option(25.0, help="Largest audio upload in MiB (413 above)."),
        max_audio_seconds: float = typer.Option(
            600.0, help="Longest recording in seconds (413 above)."
        ),
    ) -> None:
        """OpenAI-compatible server: the base and every adapter on one loaded base model (and,
        with --speech-model/--speech-adapter, speech to text on /v1/audio/transcriptions)."""
        from specialize.adapters.host import ModelHost
        from specialize.serve.app import serve
        from specialize.serve.openai_api import Limits

        names = []
        for spec in adapter:
            name, sep, path = spec.partition("=")
            if sep:
                adapters.register(name, path, base_model=model, replace=True)
            names.append(name)
        from specialize.serve.guard import LOOPBACK_BINDS

        key = api_key or os.environ.get("SPECIALIZE_API_KEY")
        admin = admin_key or os.environ.get("SPECIALIZE_ADMIN_KEY")
        if host not in LOOPBACK_BINDS and not key and not insecure:
            raise ConfigError(
                [
                    f"--host {host}: serving beyond this machine needs --api-key "
                    "(or --insecure to serve without one)"
                ]
            )
        if key and admin and key == admin:
            raise ConfigError(["--admin-key must differ from --api-key"])
        speech = _speech_host(speech_model, speech_adapter, max_audio_mb, max_audio_seconds, key)
        model_host = ModelHost(model, names)
        console.print(f"serving {', '.join(model_host.names())} on http://{host}:{port}/v1")
        if speech:
            console.print(
                f"speech: {', '.join(speech[0].names())} on http://{host}:{port}/v1/audio/transcriptions"
            )
        serve(
            host,
            port,
            speech=speech,
            model_host=model_host,
            limits=Limits(
                max_tokens,
                max_body_bytes,
                max_in_flight,
                key,
                admin,
                max_batch=max_batch,
            ),
        )


def _speech_host(
    model: str | None, specs: list[str], max_mb: float, max_seconds: float, key: str | None
):
    """(SpeechHost, AudioLimits) for `serve --speech-model/--speech-adapter`, or None."""
    if model is None and not specs:
        return None
    from specialize.models.catalog import DEFAULT_SPEECH_MODEL
    from specialize.models.speech import is_speech_adapter, speech_base_of
    from specialize.serve.audio_api import AudioLimits, SpeechHost

    found, problems = {}, []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            entry = adapters.get(name, missing_ok=True)
            if entry is None:
                problems.append(f"--speech-adapter {name!r}: not registered; use NAME=RUN_DIR")
                continue
            path = entry["path"]
        if not is_speech_adapter(path):
            problems.append(f"--speech-adapter {spec!r}: not a speech adapter (a method: asr run)")
            continue
        found[name] = path
    if problems:
        raise ConfigError(problems)
    first = next(iter(found.values()), None)
    base = model or (speech_base_of(first) if first else None) or DEFAULT_SPEECH_MODEL
    limits = AudioLimits(int(max_mb * 2**20), max_seconds, key)
    return SpeechHost(base, found), limits
