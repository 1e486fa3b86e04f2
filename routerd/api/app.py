"""The reference public API as an ASGI app: `POST /v1/send`, `GET /healthz`, `GET /readyz`,
`GET /metrics`, the OpenAPI document. Each answer is the one docs/client.md's error table
gives for the client's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from routerd.api.body import BodyTooLarge, read_body
from routerd.api.customer import CustomerRefused, with_customer
from routerd.api.keys import Customers
from routerd.api.metrics import ApiMetrics
from routerd.api.settings import DEFAULT_MAX_IN_FLIGHT
from routerd.client import (
    BrokerUnavailable,
    NotConfirmed,
    Publisher,
    PublishError,
    RequestInvalid,
    Unroutable,
)
from routerd.config.model import RouteTable
from routerd.reload import Reloader, TableHolder

if TYPE_CHECKING:
    from routerd.rejections.store import RejectionStore

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying a 503: a broker restart takes a few.
RETRY_AFTER_SECONDS = 5


def openapi_document() -> bytes:
    """The OpenAPI 3.1 document shipped beside this module (`routerd/api/openapi.yaml`)."""
    return files("routerd.api").joinpath("openapi.yaml").read_bytes()


def error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """Every error answer: JSON with a readable `error` and whatever else the status needs."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def create_app(
    publisher: Publisher,
    keys: Customers,
    rejections: RejectionStore | None = None,
    *,
    watch_config: bool = False,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> Starlette:
    """The API over one `Publisher` (built with the route config) and the customers' keys,
    and, when given, the rejections database `GET /v1/rejections` reads.

    The app's lifespan connects the publisher (a broker that is down is logged, and each
    send answers 503 until it is back) and closes it on shutdown. `/readyz` answers 503
    while there is no broker session, and starts one connect attempt in the background, so
    an API that gets no sends still becomes ready again once the broker is back.

    With `watch_config`, the route config is reloaded as `routerd serve` reloads it (its
    files watched, `app.state.reloader.request_reload` for SIGHUP; a config `routerd lint`
    rejects is refused and the running one stays), so the API checks requests against the
    rules routerd applies.

    At most `max_in_flight` sends hold a body at once, from reading it to the broker's
    confirm; the others wait, first come first served, before their body is read, so the
    HTTP server stops reading their sockets after a small buffer. Memory then follows that
    number times the body limit, not how many clients send at once.
    """
    table = publisher.table
    if table is None:
        raise ValueError("the API needs a Publisher built with config=<routes.yaml>")
    document = openapi_document()
    metrics = ApiMetrics()
    reconnecting: set[asyncio.Task[None]] = set()

    async def use_table(new: RouteTable) -> None:
        publisher.use_table(new)

    reloader = Reloader(table.path, TableHolder(table), metrics, before_swap=use_table)
    in_flight = anyio.CapacityLimiter(max_in_flight)

    async def send(request: Request) -> Response:
        started = time.perf_counter()
        answer = await _send(request)
        metrics.send_seconds.observe(time.perf_counter() - started)
        metrics.answers.labels(str(answer.status_code), _first_reason(answer)).inc()
        return answer

    async def _send(request: Request) -> Response:
        customer = _customer(request, keys)
        if customer is None:
            return _unauthorized()
        async with in_flight:
            return await _accept(request, customer)

    async def _accept(request: Request, customer: str) -> Response:
        try:
            # The running config's limit: a reload may have changed it.
            raw = await read_body(request, publisher_table(publisher).limits.max_body_bytes)
        except BodyTooLarge as exc:
            # The rest of the body is never read, so the connection cannot be reused.
            return error(413, str(exc), {"Connection": "close"}, limit=exc.limit)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _invalid("invalid_json", f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _invalid("not_an_object", "the body must be a JSON object")
        try:
            body = with_customer(body, customer)
        except CustomerRefused as exc:
            return error(400, str(exc), reasons=[exc.as_dict()])
        try:
            message_id = await publisher.send(body)
        except RequestInvalid as exc:
            return error(400, "routerd would reject this send request", reasons=exc.as_dicts())
        except (Unroutable, NotConfirmed, BrokerUnavailable) as exc:
            return _unavailable(exc)
        log.debug("send request accepted", extra={"message_id": message_id, "customer": customer})
        return JSONResponse({"message_id": message_id}, status_code=202)

    async def list_rejections(request: Request) -> Response:
        customer = _customer(request, keys)
        if customer is None:
            return _unauthorized()
        if rejections is None:
            return error(
                404, "rejections are not enabled on this API (routerd api --rejections-db)"
            )
        from routerd.rejections.api import RejectionsPageError, rejections_page

        try:
            page = await rejections_page(rejections, customer, request.query_params)
        except RejectionsPageError as exc:
            return error(400, str(exc), parameter=exc.parameter)
        except Exception as exc:
            log.warning("reading rejections failed: %s", str(exc).split("\n", 1)[0])
            return error(
                503,
                "rejections cannot be read right now; retry later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse(page)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if publisher.connected:
            return JSONResponse({"status": "ready"})
        if not reconnecting:
            task = asyncio.create_task(_connect_quietly(publisher))
            reconnecting.add(task)
            task.add_done_callback(reconnecting.discard)
        return JSONResponse(
            {"status": "not ready", "reason": "no session with the broker; reconnecting"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def metrics_page(request: Request) -> Response:
        metrics.broker_connected.set(1 if publisher.connected else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/yaml")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Why not fail the start on a broker that is down: the API should answer 503 with
        # Retry-After, and each send connects again, so it recovers on its own.
        try:
            await publisher.connect()
        except BrokerUnavailable as exc:
            log.warning("the broker is not reachable yet, sends answer 503: %s", exc)
        try:
            async with anyio.create_task_group() as tg:
                if watch_config:
                    await tg.start(reloader.run)
                yield
                tg.cancel_scope.cancel()
        finally:
            for task in list(reconnecting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await publisher.close()
            if rejections is not None:
                await rejections.close()

    app = Starlette(
        routes=[
            Route("/v1/send", send, methods=["POST"]),
            Route("/v1/rejections", list_rejections, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/openapi.yaml", openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.reloader = reloader
    return app


def publisher_table(publisher: Publisher) -> RouteTable:
    table = publisher.table
    assert table is not None, "create_app checked it"
    return table


async def _connect_quietly(publisher: Publisher) -> None:
    try:
        await publisher.connect()
    except BrokerUnavailable as exc:
        log.info("the broker is still not reachable: %s", exc)


def _first_reason(answer: Response) -> str:
    # The metric's label: bounded to the codes routerd and the API define.
    if answer.status_code != 400 or not isinstance(answer, JSONResponse):
        return ""
    reasons = orjson.loads(answer.body).get("reasons") or [{}]
    return str(reasons[0].get("code", ""))


def _customer(request: Request, keys: Customers) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return keys.customer_of(key.strip())


def _unauthorized() -> Response:
    return error(
        401,
        "missing or unknown API key: send Authorization: Bearer <api key>",
        {"WWW-Authenticate": 'Bearer realm="routerd"'},
    )


def _invalid(code: str, message: str) -> Response:
    return error(400, message, reasons=[{"code": code, "message": message, "pointer": ""}])


def _unavailable(exc: PublishError) -> Response:
    # The client's message names the broker URL (redacted) or the queue: for the log only.
    log.warning("send request not accepted: %s", exc)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, NotConfirmed):
        return error(
            503,
            "the broker did not confirm the send request; it may have been stored, "
            "retry with the same message_id",
            headers,
            message_id=exc.message_id,
        )
    if isinstance(exc, Unroutable):
        return error(
            503,
            "the send request was not stored: routing is not ready, retry later",
            headers,
            message_id=exc.message_id,
        )
    return error(503, "the send request was not stored: the broker is unavailable", headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error answering %s %s", request.method, request.url.path)
    return error(500, "internal error; the send request may not have been stored")
