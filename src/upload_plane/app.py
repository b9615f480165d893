"""The application factory: routes, dependencies, error mapping, lifespan. Nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware, DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from . import failpoints, oversize
from .auth.controller import AccountController, LoginController, UserAdminController
from .auth.middleware import AuthMiddleware
from .auth.passwords import PasswordHashing
from .cases.controller import CaseController, LogController
from .cases.service import CaseService
from .db import Database, close_request_session, create_database, request_session, schema_charset_problems
from .errors import DomainError, RequestTooLarge, Unauthenticated
from .files.controller import FileController
from .files.service import FileService
from .forwarded import TrustedProxies
from .headers import response_headers
from .links.controller import UploadLinkController, link_info
from .metrics import MeteredStorage, Metrics, meter_engine
from .observe import RequestObserver
from .openapi import SwaggerPage
from .paths import project_path
from .problems import PROBLEM_JSON, ApiRequest, problem_response, send_problem
from .processing import runner as processing
from .processing.controller import PreviewController
from .processing.metrics import ProcessingMetrics
from .processing.service import ProcessingService
from .settings import Settings
from .storage import S3Storage, Storage
from .uploads.context import ClaimWaiters, Uploads
from .uploads.controller import LinkBatchController, LogUploadController, UploadController
from .uploads.queries import UPLOADS_BY_STATUS
from .uploads.reaper import Reaper, ReapReport
from .uploads.state import UploadStatus
from .uppy.controller import LINK_DEPENDENCIES, USER_DEPENDENCIES, UppyController
from .uppy.service import UppyService

log = logging.getLogger("upload_plane")


class DeclaredBodyLimit(ASGIMiddleware):
    """Refuse any request that declares a body over the limit, on every route, before any work.

    Litestar's own ``request_max_body_size`` covers bodies that are read (including chunked ones);
    this also covers routes that never read theirs, so no route can carry file bytes.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                raise RequestTooLarge(f"request bodies are limited to {self.limit} bytes")
        await next_app(scope, receive, send)


class RequestSessionCloser(ASGIMiddleware):
    """Close the request's database session (``db.request_session``) once the response is sent."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        try:
            await next_app(scope, receive, send)
        finally:
            await close_request_session(scope)  # type: ignore[arg-type]


async def provide_db_session(request: Request[Any, Any, Any], state: State) -> AsyncIterator[AsyncSession]:
    """The request's session (shared with authentication), committed when the handler succeeds."""
    session = request_session(request.scope, state.db)  # type: ignore[arg-type]
    try:
        yield session
    except BaseException:
        await session.rollback()
        raise
    await session.commit()


def provide_cases(db_session: NamedDependency[AsyncSession]) -> CaseService:
    return CaseService(db_session)


def provide_uploads(state: State) -> Uploads:
    return state.uploads  # type: ignore[no-any-return]


def provide_files(state: State) -> FileService:
    return FileService(state.uploads)


def provide_processing(state: State) -> ProcessingService:
    return ProcessingService(state.uploads)


@get("/health", tags=["operations"], summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/ready", tags=["operations"], summary="The database (with a utf8mb4 schema) and the bucket are reachable"
)
async def ready(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    checks: dict[str, str] = {}
    for name, probe in (("database", state.db.ping), ("storage", state.storage.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except DomainError as exc:
            checks[name] = exc.detail
    if checks["database"] == "ok":
        checks["schema"] = await _schema_check(state)
    if checks["storage"] == "ok" and state.settings.lock.on:
        checks["object_lock"] = await _lock_check(state)
    if all(v == "ok" for v in checks.values()):
        return Response({"status": "ready", "checks": checks})
    body = {
        "type": "about:blank",
        "title": "Not ready",
        "status": 503,
        "code": "NOT_READY",
        "detail": "A dependency is unavailable or misconfigured",
        "instance": request.url.path,
        "checks": checks,
    }
    return Response(body, status_code=503, media_type=PROBLEM_JSON)


async def _schema_check(state: State) -> str:
    """``ok`` once the schema was found utf8mb4 (then not asked again), else what is wrong."""
    if state.get("schema_ok"):
        return "ok"
    try:
        problems = await schema_charset_problems(state.db.engine)
    except SQLAlchemyError:
        return "could not be read"
    if problems:
        return f"tables are not utf8mb4 (run upload-plane migrate): {'; '.join(problems[:5])}"
    state.schema_ok = True
    return "ok"


async def _lock_check(state: State) -> str:
    """``ok`` once the bucket was found lock-enabled (then not asked again), else what is wrong."""
    if state.get("lock_ok"):
        return "ok"
    try:
        enabled = await state.storage.object_lock_enabled()
    except DomainError as exc:
        return exc.detail
    if not enabled:
        return (
            f"UPLOAD_PLANE_OBJECT_LOCK is {state.settings.object_lock} but the bucket has no Object Lock "
            "(it can only be chosen when a bucket is made: upload-plane init-storage on a new bucket)"
        )
    state.lock_ok = True
    return "ok"


@get("/metrics", tags=["operations"], summary="Prometheus metrics", media_type="text/plain")
async def metrics(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Request, store and database latency, presigned URLs, uploads by state, reaper actions.
    With ``UPLOAD_PLANE_METRICS_TOKEN`` set, only for ``Authorization: Bearer <that token>``."""
    expected = state.settings.metrics_token
    if expected and not secrets.compare_digest(
        request.headers.get("authorization", "").encode(), f"Bearer {expected}".encode()
    ):
        raise Unauthenticated("this endpoint needs the metrics token")
    registry: Metrics = state.metrics
    try:
        async with state.db.connect() as conn:
            counts = dict(await conn.all(UPLOADS_BY_STATUS))
    except SQLAlchemyError:
        counts = None  # the database is down: the other series still answer
    if counts is not None:
        for status in UploadStatus:
            registry.uploads.labels(status.value).set(counts.get(status.value, 0))
    await processing.report(state.processing_metrics, state.db, state.get("queue"))
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@get("/docs", include_in_schema=False)
async def docs() -> Redirect:
    return Redirect("/schema/swagger")


def _page(name: str) -> str:
    page = project_path("web-demo") / name
    return page.read_text() if page.exists() else "<h1>upload-plane</h1><p><a href=/docs>API</a></p>"


def _page_handlers() -> list[Any]:
    """The web demo at ``/`` and the upload-link page at ``/u/{token}`` (the token stays in the
    page: ``Referrer-Policy: no-referrer`` keeps it out of other sites' logs)."""
    index_html, link_html = _page("index.html"), _page("link.html")

    @get("/", include_in_schema=False, media_type="text/html")
    async def index() -> str:
        return index_html

    @get("/u/{token:str}", include_in_schema=False, media_type="text/html")
    async def link_page() -> str:
        return link_html

    return [index, link_page]


#: Browser assets, served from the web demo's own folder and its npm packages (``npm ci`` in
#: web-demo/, run by the Makefile); nothing comes from a CDN at run time.
ASSETS = {
    "/assets": "app",
    "/vendor/uppy": "node_modules/uppy/dist",
    "/vendor/crc64nvme": "node_modules/@aws-sdk/checksums/dist-es/submodules/crc/crc64-nvme",
    "/vendor/hash-wasm": "node_modules/hash-wasm/dist",
    "/vendor/swagger-ui": "node_modules/swagger-ui-dist",
}


def _asset_routers() -> list[Any]:
    routers = []
    for path, folder in ASSETS.items():
        directory = project_path("web-demo") / folder
        if not directory.is_dir():
            log.warning("%s is missing (run `make web-deps`); %s/* will answer 404", directory, path)
            continue
        routers.append(
            create_static_files_router(path=path, directories=[directory], include_in_schema=False)
        )
    return routers


async def reap_every(state: State, settings: Settings) -> None:
    """The optional in-process reaper (``UPLOAD_PLANE_REAPER_INTERVAL``): safe with any number of
    replicas doing the same (``uploads/reaper.py``)."""
    reaper = Reaper(state.uploads)
    while True:
        await asyncio.sleep(settings.reaper_interval)
        try:
            report = await reaper.run()
        except Exception:
            log.exception("the in-process reaper failed; it runs again in %s s", settings.reaper_interval)
            continue
        for action, count in report.as_dict().items():
            if count:
                state.metrics.reaper.labels(action).inc(count)
        if report.total() or report.errors:
            log.info("reaper: %s", report.as_dict())


class UploadPlane(Litestar):
    """Litestar, with every HTTP request's client resolved (``forwarded.py``: a trusted proxy's
    ``X-Forwarded-For``), observed (``observe.py``: request id, access line, latency, security
    headers) and refused when oversized (``oversize.py``), from outside all middleware."""

    observer: RequestObserver
    proxies: TrustedProxies

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await self.observer(self.proxies.resolve(scope), receive, send, self._unless_oversized)

    async def _unless_oversized(self, scope: Any, receive: Any, send: Any) -> None:
        """The application, for requests no larger than it needs (``oversize.py``)."""
        refused = oversize.refusal(scope)
        if refused is not None:
            await send_problem(send, refused, scope["path"])
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, storage: Storage | None = None) -> Litestar:
    """The application. ``storage`` replaces the S3 gateway (tests wrap it to count store calls)."""
    for warning in settings.check():
        log.warning(warning)
    failpoints.arm(settings.failpoints)
    registry = Metrics()
    processing_metrics = ProcessingMetrics(registry.registry)
    for action in ReapReport().as_dict():
        registry.reaper.labels(action)  # every action's series exists (at 0) before its first run

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db: Database = create_database(settings)
        meter_engine(db.engine, registry)
        db.observe = registry.observe_statement
        app.state.db = db
        app.state.storage = MeteredStorage(storage if storage is not None else S3Storage(settings), registry)
        app.state.uploads = Uploads(db, app.state.storage, settings, ClaimWaiters())
        app.state.hashing = PasswordHashing(settings.password_hash_concurrency, settings.password_hash_cost)
        app.state.uppy = UppyService(app.state.uploads)
        # Long-lived objects built so far never become garbage; keeping them out of the collector's
        # generations stops full collections from stalling large responses (10,000 signed parts).
        reaping = (
            asyncio.create_task(reap_every(app.state, settings)) if settings.reaper_interval > 0 else None
        )
        jobs = contextlib.AsyncExitStack()  # processing: in-process jobs, or a queue client
        app.state.queue = await jobs.enter_async_context(processing.for_api(db, settings, processing_metrics))
        gc.freeze()
        try:
            yield
        finally:
            await jobs.aclose()
            if reaping is not None:
                reaping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reaping
            app.state.hashing.close()
            await app.state.storage.aclose()
            await db.dispose()

    public_api = Router(path="/api/v1", route_handlers=[LoginController])
    api = Router(
        path="/api/v1",
        route_handlers=[
            AccountController,
            UserAdminController,
            CaseController,
            LogController,
            FileController,
            LogUploadController,
            UploadController,
            UploadLinkController,
            PreviewController,
        ],
        middleware=[DefineMiddleware(AuthMiddleware)],
        security=[{"bearer": []}, {"session": []}],
    )

    uppy_for_users = Router(
        path="/",
        route_handlers=[UppyController],
        dependencies=USER_DEPENDENCIES,
        security=[{"bearer": []}, {"session": []}],
    )
    uppy_for_links = Router(
        path="/links/{token:str}", route_handlers=[UppyController], dependencies=LINK_DEPENDENCIES
    )
    batches_for_links = Router(path="/links/{token:str}", route_handlers=[LinkBatchController])

    app = UploadPlane(
        route_handlers=[
            public_api,
            api,
            uppy_for_users,
            uppy_for_links,
            batches_for_links,
            link_info,
            health,
            ready,
            metrics,
            docs,
            *_page_handlers(),
            *_asset_routers(),
        ],
        dependencies={
            "db_session": Provide(provide_db_session),
            "cases": Provide(provide_cases, sync_to_thread=False),
            "uploads": Provide(provide_uploads, sync_to_thread=False),
            "files": Provide(provide_files, sync_to_thread=False),
            "processing": Provide(provide_processing, sync_to_thread=False),
        },
        exception_handlers={Exception: problem_response},
        lifespan=[lifespan],
        state=State({"settings": settings, "metrics": registry, "processing_metrics": processing_metrics}),
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins), allow_credentials=True)
        if settings.cors_origins
        else None,
        request_max_body_size=settings.max_request_body,
        middleware=[DeclaredBodyLimit(settings.max_request_body), RequestSessionCloser()],
        request_class=ApiRequest,
        openapi_config=OpenAPIConfig(
            title="upload-plane",
            version="1.0.0",
            description=(
                "Presigned-URL control plane for resumable multipart uploads straight into S3. "
                "File bytes never pass through this API."
            ),
            path="/schema",
            render_plugins=[
                SwaggerPage(
                    js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
                    css_url="/vendor/swagger-ui/swagger-ui.css",
                    standalone_preset_js_url="/vendor/swagger-ui/swagger-ui-standalone-preset.js",
                    favicon="<link rel='icon' type='image/png' href='/vendor/swagger-ui/favicon-32x32.png'>",
                )
            ],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An access token (JWT) from login or refresh, or a personal access token",
                    ),
                    "session": SecurityScheme(
                        type="apiKey",
                        name="upload_plane_session",
                        security_scheme_in="cookie",
                        description="The session cookie set at login (same-origin pages)",
                    ),
                }
            ),
        ),
        debug=False,
        logging_config=None,  # logging is the process's (logs.configure), not reset by each app
    )
    app.observer = RequestObserver(registry, response_headers(settings))
    app.proxies = TrustedProxies(settings.trusted_proxies)
    return app
