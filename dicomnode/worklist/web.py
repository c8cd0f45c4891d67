"""The worklist's HTTP side: the page, the JSON API, /healthz and /metrics (Starlette).

With a token configured, every request but /healthz must carry it, either as
``Authorization: Bearer <token>`` or as the ``dicomnode_token`` cookie. Opening the page as
``/?token=<token>`` once sets that cookie (HttpOnly, SameSite=Strict, so other sites cannot
make the browser use it) and redirects to ``/`` so the token leaves the address bar.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomnode.telemetry import Telemetry
from dicomnode.worklist.store import WorklistEntry, WorklistStore

log = logging.getLogger(__name__)

COOKIE = "dicomnode_token"
STATIC_DIR = Path(str(resources.files("dicomnode.worklist") / "static"))
_OPEN_PATHS = frozenset({"/healthz"})
_MAX_BY = 64


def create_app(
    store: WorklistStore,
    *,
    token: str | None,
    viewer_url: str | None,
    health: Callable[[], dict[str, Any]],
    metrics: Telemetry,
) -> Starlette:
    """The worklist web application.

    `health()` returns a JSON-able dict, by convention with ``dicom_listener`` (bool),
    ``engines_loaded`` and ``outbox_backlog``; /healthz answers 200 when its ``healthy`` key
    (default: ``dicom_listener``) is true and the worklist database answers, 503 otherwise.
    """

    def item(entry: WorklistEntry, now: float) -> dict[str, Any]:
        uid = quote(entry.study_uid, safe="")
        return {
            "study_uid": entry.study_uid,
            "series_uid": entry.series_uid,
            "accession_number": entry.accession_number,
            "patient_name": entry.patient_name,
            "patient_id": entry.patient_id,
            "study_description": entry.study_description,
            "arrived_at": entry.arrived_at,
            "result_at": entry.result_at,
            "waiting_seconds": round(entry.waiting_seconds(now), 1),
            "score": entry.score,
            "category": entry.category,
            "state": entry.state,
            "error": entry.error,
            "warnings": list(entry.warnings),
            "top_slice_sop_uid": entry.top_slice_sop_uid,
            "top_slice_index": entry.top_slice_index,
            "top_slice_frame_number": entry.top_slice_frame_number,
            "acknowledged": entry.acknowledged,
            "acknowledged_by": entry.acknowledged_by,
            "acknowledged_at": entry.acknowledged_at,
            "thumbnail_url": f"/api/studies/{uid}/thumbnail.png" if entry.has_thumbnail else None,
            "viewer_url": _viewer_link(viewer_url, entry),
        }

    def page(request: Request) -> Response:
        given = request.query_params.get("token")
        if token is not None and given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse("invalid token", status_code=401)
            response: Response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            return response
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-store"})

    def worklist(request: Request) -> Response:
        q = request.query_params
        try:
            acknowledged = _parse_bool(q.get("acknowledged"))
            entries = store.list(category=q.get("category") or None, state=q.get("state") or None,
                                 acknowledged=acknowledged)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        now = time.time()
        return JSONResponse({"now": now, "items": [item(e, now) for e in entries]},
                            headers={"Cache-Control": "no-store"})

    async def acknowledge(request: Request) -> Response:
        uid = request.path_params["study_uid"]
        # `by` as a query parameter or in a JSON body ({"by": "..."}).
        by = request.query_params.get("by")
        if by is None and (await request.body()):
            by = await _by_from_body(request)
        by = (by or "").strip()
        if not by or len(by) > _MAX_BY:
            return JSONResponse({"error": f"'by' is required (1-{_MAX_BY} characters)"}, status_code=400)
        if not await run_in_threadpool(store.acknowledge, uid, by):
            return JSONResponse({"error": "unknown study"}, status_code=404)
        entry = await run_in_threadpool(store.get, uid)
        assert entry is not None
        return JSONResponse(item(entry, time.time()))

    def study(request: Request) -> Response:
        entry = store.get(request.path_params["study_uid"])
        if entry is None:
            return JSONResponse({"error": "unknown study"}, status_code=404)
        return JSONResponse(item(entry, time.time()))

    def thumbnail(request: Request) -> Response:
        png = store.thumbnail(request.path_params["study_uid"])
        if png is None:
            return JSONResponse({"error": "no thumbnail for this study"}, status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    def healthz(request: Request) -> Response:
        try:
            body = dict(health())
        except Exception as exc:
            log.exception("health check failed")
            return JSONResponse({"healthy": False, "error": str(exc)}, status_code=503)
        try:
            store.ping()
            body["worklist_db"] = True
        except Exception as exc:
            log.error("worklist database does not answer: %s", exc)
            body["worklist_db"] = False
        healthy = bool(body.get("healthy", body.get("dicom_listener", False))) and body["worklist_db"]
        body["healthy"] = healthy
        return JSONResponse(body, status_code=200 if healthy else 503)

    def prometheus(request: Request) -> Response:
        data, content_type = metrics.render()
        return Response(data, headers={"Content-Type": content_type})

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/worklist", worklist, methods=["GET"]),
        Route("/api/worklist/{study_uid}/ack", acknowledge, methods=["POST"]),
        Route("/api/studies/{study_uid}", study, methods=["GET"]),
        Route("/api/studies/{study_uid}/thumbnail.png", thumbnail, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes)
    if token is not None:
        app.add_middleware(TokenMiddleware, token=token)
    return app


class TokenMiddleware:
    """Refuse (401) any request but /healthz without the token (Bearer header or cookie)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"error": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="dicomnode"'})
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), self._token):
            return True
        cookie = Request(scope).cookies.get(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self._token):
            return True
        # The page itself may be opened once with ?token=; it checks the value and sets the cookie.
        return scope["path"] == "/" and b"token=" in scope.get("query_string", b"")


def _viewer_link(template: str | None, entry: WorklistEntry) -> str | None:
    if not template:
        return None
    return (template.replace("{study_uid}", quote(entry.study_uid, safe=""))
            .replace("{accession_number}", quote(entry.accession_number, safe="")))


def _parse_bool(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"acknowledged: expected true or false, got {value!r}")


async def _by_from_body(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            data = json.loads(await request.body())
        except ValueError:
            return None
        value = data.get("by") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None
    return None


class WebServer:
    """Serves an ASGI app with uvicorn in a background thread; port 0 picks a free port."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._app = app
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the web server is not started")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Bind, serve in a thread, and return once requests are answered (or raise)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            where = f"{self.host}:{self._requested_port}"
            raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
        sock.set_inheritable(True)
        self._socket = sock
        config = uvicorn.Config(self._app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="worklist-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"web server on {self.host}:{self.port} stopped during start-up")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"web server on {self.host}:{self.port} did not start in {timeout:g} s")
            time.sleep(0.01)
        log.info("worklist web server listening on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("web server thread did not stop within %g s", timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
