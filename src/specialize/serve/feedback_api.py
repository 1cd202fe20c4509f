"""The comparison page's endpoints: who I am, the next pair, a label, undo. Every request carries
the labeller's own signed token (`?token=` or the X-Feedback-Token header); the labeller is the
one the token names, never a name sent in the request, so nobody can label or undo as another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from specialize.feedback import identity, store

STATIC = Path(__file__).with_name("static")


@dataclass
class FeedbackSession:
    session: str


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pair_id: str = Field(..., max_length=64)
    choice: str
    comment: str | None = Field(None, max_length=4000)
    corrected: str | None = Field(None, max_length=20000)


class UndoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


def add_feedback_routes(app: FastAPI, feedback: FeedbackSession) -> None:
    def labeller(request: Request) -> str:
        token = request.headers.get("x-feedback-token") or request.query_params.get("token") or ""
        name = identity.verify(feedback.session, token)
        if name is None:
            raise HTTPException(401, "missing or wrong labeller token (open your own link)")
        return name

    @app.get("/feedback", response_class=HTMLResponse)
    def page(_: str = Depends(labeller)) -> str:
        return (STATIC / "feedback.html").read_text(encoding="utf-8")

    @app.get("/api/feedback/me")
    def me(annotator: str = Depends(labeller)) -> dict:
        return {"annotator": annotator, "session": feedback.session}

    @app.get("/api/feedback/next")
    def next_pair(annotator: str = Depends(labeller)) -> dict:
        pair, done, total = store.next_pair(feedback.session, annotator)
        shown = (
            None
            if pair is None
            else {"id": pair.id, "prompt": pair.prompt, "a": pair.first, "b": pair.second}
        )
        return {"pair": shown, "done": done, "total": total}

    @app.post("/api/feedback/label")
    def label(body: LabelRequest, annotator: str = Depends(labeller)) -> dict:
        try:
            store.label(body.pair_id, annotator, body.choice, body.comment, body.corrected)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        except KeyError as exc:
            raise HTTPException(404, f"no pair {body.pair_id!r}") from exc
        except store.AlreadyLabelled as exc:
            raise HTTPException(
                409, "you already labelled this pair (undo it first to change it)"
            ) from exc
        _, done, total = store.next_pair(feedback.session, annotator)
        return {"done": done, "total": total}

    @app.post("/api/feedback/undo")
    def undo(_: UndoRequest, annotator: str = Depends(labeller)) -> dict:
        return {"undone": store.undo_last(annotator, feedback.session), "annotator": annotator}
