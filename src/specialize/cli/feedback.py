"""`specialize feedback serve | export`: collect comparisons in the browser, export preference rows."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer
from rich.console import Console

from specialize.models.catalog import DEFAULT_MODEL

app = typer.Typer(
    help="Human preferences: a comparison page, and export for DPO/reward training.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)


@app.command("serve")
def serve_cmd(
    prompts: Path = typer.Option(
        ..., help="Prompts: jsonl with prompt or messages, or text lines."
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model reference."),
    adapter: list[str] = typer.Option(
        [], help="Registered adapter names: two to compare them, one (or none) for two samples."
    ),
    session: str | None = typer.Option(
        None, help="Session name; default: derived from model, adapters and prompts."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8766, help="Port."),
    labeller: list[str] = typer.Option(
        [],
        help="A person who labels (repeatable); each gets their own link. Default: your user name.",
    ),
) -> None:
    """Generate the answer pairs once, then serve the page where people choose."""
    from specialize.adapters.host import ModelHost
    from specialize.demo.steps import fingerprint
    from specialize.errors import ConfigError
    from specialize.feedback import identity, store
    from specialize.feedback.pairs import make_pairs, read_prompts
    from specialize.serve.app import serve
    from specialize.serve.feedback_api import FeedbackSession

    if len(adapter) > 2:
        raise ConfigError(["give at most two --adapter names"])
    session = session or f"fb-{fingerprint(model, adapter, prompts)[:12]}"
    if store.next_pair(session, "\0")[2] == 0:
        model_host = ModelHost(model, adapter)
        sources = list(adapter) if len(adapter) == 2 else [adapter[0] if adapter else "base"]
        pairs = make_pairs(model_host, read_prompts(prompts), sources)
        store.add_pairs(session, pairs)
        console.print(f"session {session}: {len(pairs)} pairs generated")
    for name in labeller or [getpass.getuser()]:
        link = f"http://{host}:{port}/feedback?token={identity.issue(session, name)}"
        console.print(f"{name} labels at {link}")
    console.print(f"session {session}; each link is that person's alone; Ctrl-C to stop")
    serve(host, port, feedback=FeedbackSession(session))


@app.command("export")
def export_cmd(
    out: Path = typer.Option(
        ..., help="Preference rows (jsonl) for the data stage and DPO/reward training."
    ),
    session: str | None = typer.Option(None, help="Only this session (default: every session)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts and agreement as JSON."),
) -> None:
    """Labels -> preference rows (prompt, chosen, rejected) and agreement statistics."""
    from specialize.cli.output import print_json
    from specialize.feedback.export import export

    summary = export(out, session)
    if as_json:
        print_json(console, {**summary, "out": str(out)})
        return
    console.print(
        f"{summary['rows']} preference rows from {summary['labels']} labels by {len(summary['annotators'])} "
        f"people -> {out}; skipped (no direction): {summary['skipped'] or 'none'}"
    )
    agreement = summary["agreement"]
    if agreement.get("comparisons"):
        alpha = agreement["krippendorff_alpha"]
        kappa = agreement.get("cohen_kappa")
        console.print(
            f"agreement on {agreement['pairs_with_two_or_more']} shared pairs: {agreement['percent_agreement']}%; "
            f"Krippendorff's alpha {alpha['value']} (95% CI {alpha['ci95'][0]} to {alpha['ci95'][1]}, "
            f"n={alpha['n_labels']} labels by {len(summary['annotators'])} people)"
            + (f"; Cohen's kappa {kappa}" if kappa is not None else "")
        )
    else:
        console.print(agreement["note"])
