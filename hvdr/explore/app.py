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
it has no authentication, so it refuses what a web page of another site could send
it. ``Guard`` answers, before any route,

* 421 a ``Host`` other than ``127.0.0.1:PORT`` or ``localhost:PORT`` (a DNS
  rebinding: another site's name resolved to 127.0.0.1);
* 403 an ``Origin`` other than ``http://`` one of those (a cross-site request);

* 415 a POST whose ``Content-Type`` is not ``application/json`` (a form or
  ``text/plain``, which a page of another site may send without asking);

and a POST of more than ``TRACE_BYTES_MAX`` bytes is answered 413 (read in chunks
and stopped there, so no more is held).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hvdr.explore import view
from invariants.trace import TRACE_BYTES_MAX
from model import ModelConfig

#: The only Content-Type a POST may have.
JSON_TYPE = "application/json"

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
    return Starlette(routes=routes, middleware=[Middleware(Guard)])


class Guard:
    """Refuses a request whose ``Host`` or ``Origin`` is not this server's own
    (421, 403), or a POST that is not JSON (415), before any route sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = guard(Request(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard(request: Request) -> Response | None:
    """The 421, 403 or 415 answer for a foreign ``Host`` or ``Origin`` or a POST
    that is not JSON, or None; the port is the listening socket's."""
    server = request.scope.get("server")
    port = server[1] if server else None
    hosts = (f"127.0.0.1:{port}", f"localhost:{port}")
    host = request.headers.get("host", "")
    if host.lower() not in hosts:
        msg = f"Host {host!r} is not this server's; hvdr explore answers only "
        msg += f"{hosts[0]} and {hosts[1]} (a page of another site, by DNS rebinding?)"
        return _error(msg, 421)
    origin = request.headers.get("origin")
    origins = tuple(f"http://{name}" for name in hosts)
    if origin is not None and origin.lower() not in origins:
        msg = f"Origin {origin!r} is another site's; hvdr explore answers only its "
        msg += f"own page ({origins[0]} or {origins[1]})"
        return _error(msg, 403)
    kind = request.headers.get("content-type", "")
    if request.method == "POST" and kind.split(";")[0].strip().lower() != JSON_TYPE:
        msg = f"Content-Type {kind!r}: {request.url.path} takes {JSON_TYPE} only"
        return _error(msg, 415)
    return None


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _answer(compute: Callable[[], dict[str, Any]]) -> Response:
    """Run ``compute`` off the event loop (the model and Graphviz take CPU time)."""
    try:
        result = await run_in_threadpool(compute)
    except view.RequestError as error:
        return _error(str(error))
    return JSONResponse(result)


async def _body(request: Request, route: str) -> dict[str, Any] | Response:
    """The request's JSON object, or the 400 answer saying what is wrong with it
    (413 when it is too long)."""
    data = await _read(request)
    if data is None:
        msg = f"the request is over {TRACE_BYTES_MAX >> 20} MiB "
        msg += f"({TRACE_BYTES_MAX} bytes), the most a trace may be"
        return _error(msg, 413)
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


async def _read(request: Request) -> bytearray | None:
    """The body, or None once it is over ``TRACE_BYTES_MAX``: read chunk by chunk
    and stopped there, so no more than that is ever held."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > TRACE_BYTES_MAX:
        return None
    data = bytearray()
    async for chunk in request.stream():
        if len(data) + len(chunk) > TRACE_BYTES_MAX:
            return None
        data += chunk
    return data


def _trace(body: dict[str, Any]) -> view.Loaded:
    source = body.get("source")
    name = source if isinstance(source, str) and source else "the trace"
    return view.load(body["trace"], name)
