"""The server's error answers: every one is JSON ``{"error": KIND, "detail": ONE LINE}`` with the status of its kind.

:data:`KINDS` is the one table of kinds and statuses (the OpenAPI description and the docs read it). A handler
raises :class:`Problem`; :func:`problem_response` turns one into the answer.
"""
from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

__all__ = ["KINDS", "Problem", "problem_response", "one_line"]

KINDS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "a request the server cannot read: a malformed multipart body or Content-Length"),
    "empty_body": (400, "no image in the request body"),
    "missing_image": (400, "a multipart form without the field 'image'"),
    "invalid_parameter": (400, "a query parameter out of range, such as format=gif or alpha=2"),
    "unauthorized": (401, "no or a wrong API key"),
    "not_found": (404, "no such endpoint"),
    "unknown_model": (404, "no model of that name on this server; the detail lists the models"),
    "method_not_allowed": (405, "an endpoint that does not take this method (the Allow header says which do)"),
    "upload_timeout": (408, "an upload still arriving when the request's time (--timeout) ran out"),
    "payload_too_large": (413, "a request body larger than --max-upload-mb, refused before it is read"),
    "invalid_image": (422, "a body that is not a readable image: not an image, truncated, a decompression bomb"),
    "unsupported_format": (422, "an answer format the model cannot give (an indexed PNG of more than 256 classes)"),
    "client_closed_request": (499, "the client went away before its answer (logged and counted, never sent)"),
    "internal_error": (500, "a bug: the server log has the traceback"),
    "not_ready": (503, "the models are still loading (or failed to load); retry after Retry-After seconds"),
    "overloaded": (503, "the model's queue is full (--max-queue); retry after Retry-After seconds"),
    "timeout": (504, "the request waited longer than --timeout for its forward pass"),
}

_MAX_DETAIL = 600


def one_line(text: str) -> str:
    """``text`` on one line (whitespace collapsed), cut to a readable length."""
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_DETAIL else line[:_MAX_DETAIL - 3] + "..."


class Problem(Exception):
    """An error answer: its ``kind`` (a key of :data:`KINDS`, which gives the status), a one-line ``detail``, and
    extra response headers (``Retry-After``, ``Allow``, ``WWW-Authenticate``)."""

    def __init__(self, kind: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        super().__init__(detail)
        self.kind = kind
        self.detail = one_line(detail)
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        return KINDS[self.kind][0]


def problem_response(problem: Problem) -> JSONResponse:
    """The JSON answer of ``problem``."""
    return JSONResponse({"error": problem.kind, "detail": problem.detail}, status_code=problem.status,
                        headers=problem.headers)
