"""The explorer's web application: the page and a small JSON interface, on Starlette.

Routes (every answer is JSON but the page's; bodies are JSON objects):

* ``GET /``: the page (``page.html``);
* ``GET /api/start``: the initial state of the configuration ``hvdr explore`` was
  started with;
* ``POST /api/view`` ``{"trace": TEXT, "at": N, "source": NAME}``: what the page
  shows after step ``N`` (the last step when ``at`` is left out) of the trace;
  ``source`` names an uploaded file in error messages;
* ``POST /api/step`` ``{"trace": TEXT, "at": N, "call": STEP}``: the trace cut after
  step ``N`` with the trace-format step ``STEP`` appended, and its view;
* ``POST /api/back`` ``{"trace": TEXT, "at": N}``: the trace cut before step ``N``
  (its last step when ``at`` is left out), and its view.

``TEXT`` is a trace in the trace format (docs/trace-format.md): the page holds it,
loads it from a file and saves it as it is, so the server keeps no session. Bad
input (a body that is not JSON, a malformed trace, an action the model does not
have or refuses, a step out of range) is answered with status 400 and
``{"error": MESSAGE}``, the message naming what was wrong and what is allowed.
A configuration (``hvdr explore``'s own, or a trace header's) over the caps of
``view.BOUNDS_MAX``, or a trace of more than ``view.STEPS_MAX`` steps, is a 400 too,
naming the field, the value and the cap: each request replays its trace, so these
keep one under a second.

The server is meant for 127.0.0.1 only (``hvdr.commands.explore`` binds it there):
it has no authentication.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from hvdr.explore import view
from invariants.trace import TRACE_BYTES_MAX
from model import ModelConfig

#: The keys each POST route accepts in its body.
KEYS = {
    "view": ("trace", "at", "source"),
    "step": ("trace", "at", "call"),
    "back": ("trace", "at"),
}


def page() -> str:
    """The page's HTML (a file of this package)."""
    return resources.files("hvdr.explore").joinpath("page.html").read_text("utf-8")


def make_app(config: ModelConfig, mutant: str | None = None) -> Starlette:
    """The explorer for ``config`` (and ``mutant``, the rules of a broken variant)."""
    html = page()
    first = view.start(config, mutant)

    async def index(request: Request) -> Response:
        del request
        return HTMLResponse(html)

    async def start(request: Request) -> Response:
        del request
        return await _answer(lambda: view.show(view.load(first)))

    async def show(request: Request) -> Response:
        body = await _body(request, "view")
        if isinstance(body, Response):
            return body
        return await _answer(lambda: view.show(_trace(body), body.get("at")))

    async def step(request: Request) -> Response:
        body = await _body(request, "step")
        if isinstance(body, Response):
            return body

        def run() -> dict[str, Any]:
            text = view.take(_trace(body), body.get("at"), body.get("call"))
            return view.show(view.load(text))

        return await _answer(run)

    async def back(request: Request) -> Response:
        body = await _body(request, "back")
        if isinstance(body, Response):
            return body
        return await _answer(
            lambda: view.show(view.load(view.back(_trace(body), body.get("at"))))
        )

    routes = [
        Route("/", index),
        Route("/api/start", start),
        Route("/api/view", show, methods=["POST"]),
        Route("/api/step", step, methods=["POST"]),
        Route("/api/back", back, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _error(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _answer(compute: Callable[[], dict[str, Any]]) -> Response:
    """Run ``compute`` off the event loop (the model and Graphviz take CPU time)."""
    try:
        result = await run_in_threadpool(compute)
    except view.RequestError as error:
        return _error(str(error))
    return JSONResponse(result)


async def _body(request: Request, route: str) -> dict[str, Any] | Response:
    """The request's JSON object, or the 400 answer saying what is wrong with it."""
    data = await request.body()
    if len(data) > TRACE_BYTES_MAX:
        return _error(f"the request is over {TRACE_BYTES_MAX >> 20} MiB")
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return _error(f"the request body is not JSON: {error}")
    keys = KEYS[route]
    if not isinstance(body, dict):
        return _error(f"the request body must be a JSON object with keys {keys}")
    unknown = sorted(set(body) - set(keys))
    if unknown:
        return _error(f"unknown keys {unknown}; /api/{route} takes {list(keys)}")
    if not isinstance(body.get("trace"), str):
        msg = "'trace' must be the text of a trace (docs/trace-format.md)"
        return _error(msg)
    return body


def _trace(body: dict[str, Any]) -> view.Loaded:
    source = body.get("source")
    name = source if isinstance(source, str) and source else "the trace"
    return view.load(body["trace"], name)
