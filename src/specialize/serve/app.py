"""The local web app: one FastAPI factory for the dashboard (runs, reports, comparisons), the
preference-comparison page, and the OpenAI-compatible model endpoints."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from specialize.errors import SpecializeError

STATIC = Path(__file__).with_name("static")


def create_app(
    host=None, limits=None, feedback=None, speech=None, *, local_only: bool = True
) -> FastAPI:
    """Return the app; state lives in $SPECIALIZE_HOME (registry and run directories).

    With a ModelHost: the OpenAI-compatible endpoints (and their limits) only; with a
    FeedbackSession: the comparison page and its endpoints only; with neither: the dashboard.
    Every app sits behind the Guard (Host header when `local_only`, keys, streamed body limit)."""
    from dataclasses import replace

    from specialize.serve.guard import Access, Guard

    app = FastAPI(title="specialize", docs_url=None, redoc_url=None)
    access = Access(local_only=local_only)
    if feedback is not None:
        from specialize.serve.feedback_api import add_feedback_routes

        add_feedback_routes(app, feedback)
    if host is not None:
        from specialize.serve.openai_api import Limits, add_openai_routes

        limits = limits or Limits()
        add_openai_routes(app, host, limits)
        access = Access(limits.api_key, limits.admin_key, limits.max_body_bytes, local_only)
    if speech is not None:  # (SpeechHost, AudioLimits): /v1/audio/transcriptions
        from specialize.serve.audio_api import TRANSCRIPTIONS, AudioLimits, add_audio_routes

        speech_host, audio_limits = speech
        audio_limits = audio_limits or AudioLimits(api_key=access.api_key)
        add_audio_routes(app, speech_host, audio_limits)
        # The upload has its own size limit; the multipart envelope adds a little around the file.
        envelope = audio_limits.max_bytes + 64 * 1024
        access = replace(
            access,
            api_key=access.api_key or audio_limits.api_key,
            path_limits={**access.path_limits, TRANSCRIPTIONS: envelope},
        )
    if host is None and feedback is None and speech is None:
        _dashboard_routes(app)
    app.add_middleware(Guard, access=access)
    return app


def _dashboard_routes(app: FastAPI) -> None:
    from specialize.track import runs as track_runs
    from specialize.track.report import REPORT_FILE, compare_page, write_run_report
    from specialize.train.config import RecipeConfig

    @app.get("/", response_class=HTMLResponse)
    def runs_page() -> str:
        return (STATIC / "runs.html").read_text(encoding="utf-8")

    @app.get("/api/runs")
    def runs_api(
        base: str | None = None, method: str | None = None, tag: str | None = None
    ) -> list[dict]:
        return track_runs.list_rows(base=base, method=method, tag=tag)

    @app.get("/runs/{run_id}/report", response_class=HTMLResponse)
    def report(run_id: str) -> str:
        run = _run(run_id)  # by registry id only: never a path from the request
        path = Path(run["path"]) / REPORT_FILE
        if not path.is_file():
            path = write_run_report(run["path"], RecipeConfig)
        return path.read_text(encoding="utf-8")

    @app.get("/compare", response_class=HTMLResponse)
    def compare(run: list[str] = Query(...)) -> str:
        if len(run) < 2:
            raise HTTPException(400, "choose two or more runs to compare")
        ids = [_run(r)["id"] for r in run]
        return compare_page(track_runs.compare(ids))

    def _run(run_id: str) -> dict:
        matches = [r for r in track_runs.list_rows() if r["id"] == run_id]
        if not matches:
            raise HTTPException(404, f"no run with id {run_id!r}")
        try:
            run = track_runs.find_run(matches[0]["id"])
        except SpecializeError as exc:
            raise HTTPException(404, exc.one_line()) from exc
        if not Path(run["path"]).is_dir():
            raise HTTPException(
                404,
                f"run {run_id!r} is registered but its folder {run['path']} was deleted; "
                f"remove the entry with `specialize runs rm {run_id}`",
            )
        return run


def serve(
    bind: str, port: int, *, model_host=None, limits=None, feedback=None, speech=None
) -> None:
    """Serve until Ctrl-C or SIGTERM; then running answers get a few seconds to finish before
    they are cancelled."""
    import uvicorn

    from specialize.serve.guard import LOOPBACK_BINDS

    app = create_app(model_host, limits, feedback, speech, local_only=bind in LOOPBACK_BINDS)
    uvicorn.run(app, host=bind, port=port, log_level="warning", timeout_graceful_shutdown=3)
