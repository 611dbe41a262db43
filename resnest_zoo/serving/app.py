"""The HTTP service as an ASGI app (FastAPI): :func:`create_app`.

Endpoints (errors are JSON ``{"error": KIND, "detail": ONE LINE}`` everywhere, see :mod:`.problems`):

* ``GET /healthz``: 200 while the process lives; ``GET /readyz``: 200 once every model is loaded, 503 before;
* ``GET /v1/models``: each model's name, classes and palette;
* ``POST /v1/models/{name}/predict`` (``name``: ``segmentor/dataset`` or a saved model's name): the image as the
  body or the multipart field ``image``; ``?format=png|overlay|json`` (:mod:`.answers`);
* ``GET /metrics``: Prometheus text (:mod:`.metrics`);
* ``GET /``: the page (``page/``: every asset served from the package, none from elsewhere);
* ``GET /docs``: the OpenAPI page (FastAPI's; its script comes from a CDN, ``/openapi.json`` from here).

The models load in a background thread once the server starts, so the probes answer from the first second; the
server keeps no state between requests, so it scales by replicas. The network runs in one worker thread per
model (:mod:`.batching`), decoding and encoding in the thread pool: never on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal, Optional

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from .. import __version__
from ..devices import resolve_device
from ..errors import ConfigurationError
from .answers import FORMATS, encode
from .batching import Batcher, QueueTimeout, Ticket
from .metrics import UNKNOWN_MODEL, ServerMetrics
from .middleware import AccessLog, RequireKey
from .models import ModelSource, ServedModel, load_source, model_sources
from .problems import KINDS, Problem, one_line, problem_response
from .settings import ServeSettings
from .uploads import FIELD, decode_upload, read_upload

__all__ = ["create_app"]

logger = logging.getLogger("resnest_zoo.serving")

_PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
               "style.css": "text/css; charset=utf-8"}
_PAGE_HEADERS = {  # the page may load nothing from elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_NOT_READY_RETRY = "2"


def create_app(
    models: Iterable[str] | Mapping[str, Any],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    backend: str = "torch",
    cache_dir: str | None = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
    **settings: Any,
) -> FastAPI:
    """The HTTP service for ``models`` as an ASGI app (FastAPI), to run with any ASGI server.

    Args:
        models: names as ``resnest-zoo serve -m`` takes them (``deeplabv3plus/cityscapes``, a saved model's
            folder, ``hf:org/name``), or a mapping from the name to serve under to such a name or to a loaded
            model. They load (download, verify, build) when the server starts, in the background: ``/readyz``
            answers 503 until every one is ready.
        device, dtype, backend: as for :func:`resnest_zoo.load` and ``predict``: where the network runs (default
            CUDA when there is one), ``torch.bfloat16``/``torch.float16`` for half precision, and ``torch``,
            ``onnxruntime`` or ``openvino``.
        cache_dir: the checkpoint cache (default ``$RESNEST_ZOO_CACHE``, else torch.hub's folder).
        on_load_failure: called on the event loop with the exception if a model cannot be loaded (the app then
            stays up, not ready; :func:`resnest_zoo.serve` stops the server and raises it).
        settings: the fields of :class:`~resnest_zoo.serving.settings.ServeSettings`: ``max_batch_size``,
            ``max_wait_ms``, ``max_queue``, ``timeout``, ``max_upload_mb``, ``api_key``, ``cors_origins``, ``alpha``.

    Names, settings and the device are checked here, before anything loads
    (:class:`~resnest_zoo.UnknownModelError`, :class:`~resnest_zoo.ConfigurationError`,
    :class:`~resnest_zoo.DeviceNotAvailableError`).
    """
    sources = model_sources(models)
    saved = [source.name for source in sources if source.kind == "saved"]
    if backend != "torch" and saved:
        raise ConfigurationError(f"backend {backend!r} runs catalogue checkpoints (exported when loaded); "
                                 f"{', '.join(saved)} {'is a saved model' if len(saved) == 1 else 'are saved models'}: "
                                 "serve saved models with the torch backend")
    config = ServeSettings.make(**settings)
    target = resolve_device(device) if backend == "torch" else None
    state = _Service(sources, config, device=target, dtype=dtype, backend=backend, cache_dir=cache_dir,
                     on_load_failure=on_load_failure)
    app = FastAPI(title="resnest-zoo", version=__version__, lifespan=state.lifespan, docs_url="/docs",
                  redoc_url=None, description="Semantic segmentation with the ResNeSt-101 models of resnest_zoo. "
                                              "Errors are JSON {\"error\": kind, \"detail\": one line}.")
    app.state.service = state
    _routes(app, state)
    _error_handlers(app)
    if config.api_key is not None:
        app.add_middleware(RequireKey, key=config.api_key)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After"])
    app.add_middleware(AccessLog)  # outermost of ours: the status the client gets, 401 and CORS included
    return app


class _Service:
    """The app's models, batchers and metrics, and how a prediction request goes through them."""

    def __init__(self, sources: list[ModelSource], settings: ServeSettings, *, device: torch.device | None,
                 dtype: torch.dtype | None, backend: str, cache_dir: str | None,
                 on_load_failure: Callable[[BaseException], None] | None) -> None:
        self.sources = {source.name: source for source in sources}
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.cache_dir = cache_dir
        self.on_load_failure = on_load_failure
        self.metrics = ServerMetrics(list(self.sources), settings.max_batch_size)
        self.served: dict[str, ServedModel] = {}
        self.batchers: dict[str, Batcher] = {}
        self.failure: BaseException | None = None
        self.loading: str | None = None
        self.page = {name: resources.files(__package__).joinpath("page", name).read_bytes() for name in _PAGE_FILES}

    # ------------------------------------------------------------------------------------------- lifecycle
    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._load_all, args=(loop,), name="resnest-zoo-loading", daemon=True).start()
        try:
            yield
        finally:
            for batcher in self.batchers.values():
                await batcher.stop()

    def _load_all(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the loading thread: every model, in order; then the batchers start on the event loop."""
        began = time.perf_counter()
        loaded = []
        try:
            for source in self.sources.values():
                self.loading = source.name
                logger.info("loading %s", source.name)
                model = load_source(source, device=self.device, backend=self.backend, cache_dir=self.cache_dir)
                backend = getattr(getattr(model, "backend", None), "name", None) or "torch"
                loaded.append(ServedModel(source, model, dtype=self.dtype, backend=backend))
        except BaseException as exc:  # noqa: BLE001 -- reported on the event loop, where the server can act on it
            _tell(loop, self._failed, exc)
            return
        _tell(loop, self._ready, loaded, time.perf_counter() - began)

    def _ready(self, loaded: list[ServedModel], seconds: float) -> None:
        for served in loaded:
            batcher = Batcher(served.name, served.run, max_batch_size=self.settings.max_batch_size,
                              max_wait=self.settings.max_wait_ms / 1000, max_queue=self.settings.max_queue,
                              metrics=self.metrics)
            batcher.start()
            self.batchers[served.name] = batcher
        self.served = {served.name: served for served in loaded}
        self.loading = None
        self.metrics.ready.set(1)
        logger.info("ready: %s loaded in %.1f s", ", ".join(self.served), seconds)

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc
        logger.error("cannot serve %s: %s", self.loading, one_line(str(exc)) or type(exc).__name__)
        if self.on_load_failure is not None:
            self.on_load_failure(exc)

    # ---------------------------------------------------------------------------------------------- answers
    def readiness(self) -> Problem | None:
        """None when every model is ready, else the ``not_ready`` problem saying why."""
        if self.served:
            return None
        if self.failure is not None:
            return Problem("not_ready", f"loading {self.loading} failed: {self.failure}", {"Retry-After": "60"})
        where = f" (now {self.loading})" if self.loading else ""
        return Problem("not_ready", f"the models are loading{where}; retry shortly", {"Retry-After": _NOT_READY_RETRY})

    def lookup(self, name: str) -> ServedModel:
        if name not in self.sources:
            raise Problem("unknown_model", f"no model {name!r} on this server; its models: {', '.join(self.sources)}")
        problem = self.readiness()
        if problem is not None:
            raise problem
        return self.served[name]

    async def predict(self, name: str, request: Request, fmt: str, alpha: float | None) -> Response:
        served = self.lookup(name)
        batcher = self.batchers[name]
        ticket = batcher.admit()
        if ticket is None:
            wait = batcher.retry_after()
            why = (f"{batcher.max_queue} requests waiting already (--max-queue)" if batcher.queued >= batcher.max_queue
                   else f"{batcher.in_flight} requests in flight already (--max-queue + 2 x --max-batch-size)")
            raise Problem("overloaded", f"{name} has {why}; retry in {wait} s", {"Retry-After": str(wait)})
        try:
            return await self._admitted(served, batcher, ticket, request, fmt, alpha)
        finally:
            ticket.release()

    async def _admitted(self, served: ServedModel, batcher: Batcher, ticket: Ticket, request: Request, fmt: str,
                        alpha: float | None) -> Response:
        loop = asyncio.get_running_loop()
        timeout = self.settings.timeout
        deadline = loop.time() + timeout
        try:
            data = await asyncio.wait_for(read_upload(request, self.settings.max_upload_bytes), timeout)
        except asyncio.TimeoutError:
            raise Problem("upload_timeout", f"the upload was still arriving after {timeout:g} s (--timeout)") from None
        except ClientDisconnect:
            return _client_gone()
        image = await run_in_threadpool(decode_upload, data)
        del data
        key = served.input_size(int(image.shape[0]), int(image.shape[1]))
        work = asyncio.ensure_future(batcher.predict(ticket, image, key, deadline))
        del image
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # the client went away: its place in the queue goes back
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return _client_gone()
        gone.cancel()
        try:
            prediction = work.result()
        except QueueTimeout as exc:
            raise Problem("timeout", f"{exc}; the model is busier than --timeout {timeout:g} s allows: retry later "
                                     "(or raise --timeout, or add replicas)",
                          {"Retry-After": str(batcher.retry_after())}) from None
        except Exception as exc:
            logger.exception("prediction failed on %s", served.name)
            raise Problem("internal_error", f"the model failed on this image's batch ({type(exc).__name__}: {exc}); "
                                            "the server log has the traceback") from None
        body, media_type = await run_in_threadpool(
            encode, prediction, fmt, model=served.name, alpha=self.settings.alpha if alpha is None else alpha)
        if isinstance(body, dict):
            return JSONResponse(body)
        return Response(body, media_type=media_type)


def _tell(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Run ``callback(*args)`` on the event loop, unless the server has stopped meanwhile (then nobody listens)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: the server stopped while the models were loading
        pass


def _client_gone() -> Response:
    """What is logged and counted for a client that left before its answer (nginx's 499); nobody receives it."""
    return Response(status_code=KINDS["client_closed_request"][0])


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (after its body was read, the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# ------------------------------------------------------------------------------------------------- routes
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": f"the image (JPEG, PNG, BMP, TIFF, WebP ...) as the body, or as the multipart field {FIELD!r}",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": [FIELD],
                                               "properties": {FIELD: {"type": "string", "format": "binary"}}}},
        },
    },
}


def _error_responses(*kinds: str) -> dict[int | str, dict[str, Any]]:
    by_status: dict[int, list[str]] = {}
    for kind in kinds:
        by_status.setdefault(KINDS[kind][0], []).append(f"{kind}: {KINDS[kind][1]}")
    return {status: {"description": "; ".join(lines)} for status, lines in by_status.items()}


def _routes(app: FastAPI, service: _Service) -> None:
    @app.get("/healthz", tags=["probes"], summary="200 while the process lives")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], summary="200 once every model is loaded, 503 before",
             responses=_error_responses("not_ready"))
    async def readyz() -> Any:
        problem = service.readiness()
        if problem is not None:
            return problem_response(problem)
        return {"status": "ready", "models": list(service.served)}

    @app.get("/v1/models", tags=["models"], summary="The models: names, classes, palettes",
             responses=_error_responses("not_ready", "unauthorized"))
    async def list_models() -> Any:
        problem = service.readiness()
        if problem is not None:
            return problem_response(problem)
        return {"models": [served.describe() for served in service.served.values()]}

    @app.post("/v1/models/{name:path}/predict", tags=["models"], openapi_extra=_PREDICT_BODY,
              summary="Segment one image",
              response_class=Response,
              responses={200: {"description": "png/overlay: a PNG image; json: width, height, classes present "
                                               "(id, name, share, color) and mask_png (base64)",
                               "content": {"image/png": {}, "application/json": {}}},
                         **_error_responses("empty_body", "missing_image", "bad_request", "invalid_parameter",
                                            "unauthorized", "unknown_model", "upload_timeout", "payload_too_large",
                                            "invalid_image", "unsupported_format", "not_ready", "overloaded",
                                            "timeout")})
    async def predict(
        name: str,
        request: Request,
        format: Literal["png", "overlay", "json"] = Query(  # noqa: A002 -- the query parameter's name
            "png", description="png: the indexed mask (dataset palette); overlay: the mask on the image; json"),
        alpha: Optional[float] = Query(None, ge=0.0, le=1.0,  # noqa: UP007 -- FastAPI evaluates it on Python 3.9
                                       description="the mask's opacity in the overlay"),
    ) -> Response:
        began = time.perf_counter()
        label = name if name in service.sources else UNKNOWN_MODEL
        status = 500
        try:
            response = await service.predict(name, request, format, alpha)
            status = response.status_code
            return response
        except Problem as problem:
            status = problem.status
            return problem_response(problem)
        finally:
            service.metrics.requests.labels(label, str(status)).inc()
            if label != UNKNOWN_MODEL:
                service.metrics.latency.labels(label).observe(time.perf_counter() - began)

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(service.page["index.html"], media_type=_PAGE_FILES["index.html"], headers=_PAGE_HEADERS)

    @app.get("/page/{asset}", include_in_schema=False)
    async def page_asset(asset: str) -> Response:
        if asset not in service.page or asset == "index.html":
            raise Problem("not_found", f"no page asset {asset!r}")
        return Response(service.page[asset], media_type=_PAGE_FILES[asset], headers=_PAGE_HEADERS)


# ------------------------------------------------------------------------------------------------- errors
def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        method, path = request.method, request.url.path
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return problem_response(Problem("not_found", f"no endpoint {method} {path}; the endpoints are listed at "
                                                         "/docs (and /openapi.json)", headers))
        if exc.status_code == 405:
            allowed = headers.get("Allow", headers.get("allow", ""))
            return problem_response(Problem("method_not_allowed", f"{method} is not allowed on {path}; use "
                                                                  f"{allowed or 'another method'}", headers))
        return JSONResponse({"error": "bad_request" if exc.status_code < 500 else "internal_error",
                             "detail": one_line(str(exc.detail))}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
            given = f" (got {error['input']!r})" if "input" in error and error["input"] is not None else ""
            parts.append(f"{where}: {error.get('msg', 'invalid')}{given}")
        detail = "; ".join(parts) or "invalid request"
        if any("format" in part for part in parts):
            detail += f"; formats: {', '.join(FORMATS)}"
        return problem_response(Problem("invalid_parameter", detail))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> Response:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(Problem("internal_error", f"{type(exc).__name__} (a bug: the server log has the "
                                                          "traceback)"))
