"""The Starlette application of ``cryoset view``: a JSON API over :class:`~cryoset.view.project.Project`
and the static page shipped in ``cryoset/view/static`` (no build step, nothing fetched).

Errors are JSON ``{"error": "one line"}``: 400 for a bad request, 404 for an unknown
micrograph or class, 409 for a write based on a stale version, 500 (one line, no traceback)
for anything else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cryoset.errors import InputError
from cryoset.view.project import Conflict, Project, RequestError, open_project

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"
_log = logging.getLogger("cryoset.view")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise RequestError(f"the request body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RequestError("the request body must be a JSON object")
    return data


def _float_param(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise RequestError(f"'{name}' must be a number, got {raw!r}") from exc


def create_app(project_dir: Path | Project) -> Starlette:
    """The app over a project folder (:func:`~cryoset.view.project.open_project` checks it)."""
    project = project_dir if isinstance(project_dir, Project) else open_project(Path(project_dir))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def info(request: Request) -> Response:
        return JSONResponse({"root": str(project.root), "picks": project.picks_dir is not None,
                             "classes": project.classes_dir is not None, "ctf": project.ctf_dir is not None})

    async def micrographs(request: Request) -> Response:
        return JSONResponse({"micrographs": project.micrographs() if project.picks_dir else []})

    async def picks(request: Request) -> Response:
        key = request.path_params["key"]
        return JSONResponse({**project.picks(key), **project.render_scale(key)})

    async def edit(request: Request) -> Response:
        return JSONResponse(project.edit_pick(request.path_params["key"], await _body(request)))

    async def image(request: Request) -> Response:
        key = request.path_params["key"]
        png = project.render(key, _float_param(request, "contrast", 3.0), _float_param(request, "lowpass_a", 20.0))
        return FileResponse(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def ctf_plot(request: Request) -> Response:
        key = request.path_params["key"]
        project.micrograph(key)
        p = project.ctf_plot(key)
        if p is None:
            return _error(404, f"no CTF diagnostic plot for {key}")
        return FileResponse(p, media_type="image/png")

    async def inspection(request: Request) -> Response:
        return JSONResponse(project.inspection())

    async def apply(request: Request) -> Response:
        return JSONResponse(project.apply(await _body(request)))

    async def classes(request: Request) -> Response:
        return JSONResponse(project.classes())

    async def class_image(request: Request) -> Response:
        return Response(project.class_image(int(request.path_params["j"])), media_type="image/png")

    async def recovery(request: Request) -> Response:
        return JSONResponse(project.recovery())

    async def select(request: Request) -> Response:
        return JSONResponse(project.select_classes(await _body(request)))

    async def on_request_error(request: Request, exc: Exception) -> Response:
        msg = str(exc)
        return _error(404 if msg.startswith("no ") else 400, msg)

    async def on_conflict(request: Request, exc: Exception) -> Response:
        return _error(409, str(exc))

    async def on_input_error(request: Request, exc: Exception) -> Response:
        return _error(422, f"error: {exc}")

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, exc.detail or "error")

    async def on_other(request: Request, exc: Exception) -> Response:
        _log.exception("cryoset view: %s", exc)
        return _error(500, f"internal error ({type(exc).__name__}: {exc}); the server log has the details")

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/project", info),
        Route("/api/micrographs", micrographs),
        Route("/api/micrographs/{key}/picks", picks, methods=["GET"]),
        Route("/api/micrographs/{key}/picks", edit, methods=["POST"]),
        Route("/api/micrographs/{key}/image.png", image),
        Route("/api/micrographs/{key}/ctf.png", ctf_plot),
        Route("/api/inspection", inspection, methods=["GET"]),
        Route("/api/inspection/apply", apply, methods=["POST"]),
        Route("/api/classes", classes, methods=["GET"]),
        Route("/api/classes/{j:int}/image.png", class_image),
        Route("/api/classes/selection", select, methods=["POST"]),
        Route("/api/recovery", recovery, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={
        RequestError: on_request_error, Conflict: on_conflict, InputError: on_input_error,
        HTTPException: on_http, Exception: on_other,
    })


def serve(project_dir: Path, *, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning",
          announce: Callable[[str], None] | None = None) -> None:
    """Serve the app (blocking) on ``host:port``; loopback unless ``host`` is given. ``announce``
    gets the address once it is known to be free."""
    import socket

    import uvicorn

    app = create_app(project_dir)
    try:  # a port in use or an address not of this machine: one line, before uvicorn starts
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise InputError("--port" if exc.errno == 98 else "--host",
                         f"cannot serve on {host}:{port} ({exc.strerror or exc})") from exc
    if announce is not None:
        announce(f"http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
