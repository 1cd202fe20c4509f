"""The comparison page's endpoints: the next pair for a person, a label, undo. With a token
configured (the server is reachable beyond this machine), every feedback request must carry it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from specialize.feedback import store

STATIC = Path(__file__).with_name("static")


@dataclass
class FeedbackSession:
    session: str
    token: str | None = None


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pair_id: str
    annotator: str = Field(..., min_length=1, max_length=64)
    choice: str
    comment: str | None = Field(None, max_length=4000)
    corrected: str | None = Field(None, max_length=20000)


class UndoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotator: str = Field(..., min_length=1, max_length=64)


def add_feedback_routes(app: FastAPI, feedback: FeedbackSession) -> None:
    @app.middleware("http")
    async def token_guard(request: Request, call_next):
        path = request.url.path
        if feedback.token and (path.startswith("/feedback") or path.startswith("/api/feedback")):
            given = (
                request.headers.get("x-feedback-token") or request.query_params.get("token") or ""
            )
            if not secrets.compare_digest(given, feedback.token):
                return JSONResponse(
                    {"detail": "missing or wrong access token (?token=...)"}, status_code=401
                )
        return await call_next(request)

    @app.get("/feedback", response_class=HTMLResponse)
    def page() -> str:
        return (STATIC / "feedback.html").read_text(encoding="utf-8")

    @app.get("/api/feedback/next")
    def next_pair(annotator: str) -> dict:
        pair, done, total = store.next_pair(feedback.session, annotator)
        shown = (
            None
            if pair is None
            else {"id": pair.id, "prompt": pair.prompt, "a": pair.first, "b": pair.second}
        )
        return {"pair": shown, "done": done, "total": total}

    @app.post("/api/feedback/label")
    def label(body: LabelRequest) -> dict:
        try:
            store.label(body.pair_id, body.annotator, body.choice, body.comment, body.corrected)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        except KeyError as exc:
            raise HTTPException(404, f"no pair {body.pair_id!r}") from exc
        except store.AlreadyLabelled as exc:
            raise HTTPException(
                409, "you already labelled this pair (undo it first to change it)"
            ) from exc
        _, done, total = store.next_pair(feedback.session, body.annotator)
        return {"done": done, "total": total}

    @app.post("/api/feedback/undo")
    def undo(body: UndoRequest) -> dict:
        return {"undone": store.undo_last(body.annotator, feedback.session)}
