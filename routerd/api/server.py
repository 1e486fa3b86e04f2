"""`routerd api`: build the app from settings and run it under uvicorn until SIGTERM."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from enum import IntEnum

import anyio
import uvicorn

from routerd.allocator import map_large_blocks
from routerd.api.app import create_app
from routerd.api.keys import KeysError, KeysFile
from routerd.api.settings import ApiSettings
from routerd.client import Publisher
from routerd.config.model import ConfigError
from routerd.observe.logs import configure_logging
from routerd.reload import Reloader

log = logging.getLogger(__name__)


class ApiExit(IntEnum):
    OK = 0
    # A second signal cut the graceful stop short.
    FORCED = 1
    # The settings, the keys file or the route config stop it from starting.
    STARTUP = 2


class _Uncoloured(logging.Filter):
    """Drops the ANSI-coloured copy uvicorn attaches to some messages as an extra: routerd's
    formatters would print it as one more field."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def run(settings: ApiSettings) -> ApiExit:
    """Serve the API until SIGTERM or SIGINT (uvicorn finishes the requests in flight);
    SIGHUP reloads the route config, as the watch of its folders does."""
    common = settings.common
    configure_logging(common.log_format, common.log_level)
    logging.getLogger("uvicorn.error").addFilter(_Uncoloured())
    try:
        keys = KeysFile(settings.keys_path)
        publisher = Publisher(
            common.amqp_url,
            config=common.config_path,
            publish_timeout=common.publish_timeout,
            app_id="routerd-api",
        )
    except (KeysError, ConfigError) as exc:
        log.error("routerd api cannot start: %s", exc)
        return ApiExit.STARTUP
    rejections = None
    if settings.rejections_db is not None:
        from routerd.rejections.store import RejectionStore, StoreError

        try:
            rejections = RejectionStore.open(settings.rejections_db)
        except StoreError as exc:
            log.error("routerd api cannot start: %s", exc)
            return ApiExit.STARTUP
    log.info(
        "routerd api starting",
        extra={
            "listen": settings.listen_addr,
            "config": str(common.config_path),
            "amqp_url": common.redacted_url,
            "customers": len(set(keys.store.customers.values())),
            "max_in_flight": settings.max_in_flight,
        },
    )
    for warning in common.warnings:
        log.warning(warning)
    # `run` owns the process. A body near the size limit passes through blocks of its size
    # as it does in `serve`; mapped, they leave no heap holes behind (routerd/allocator.py,
    # scripts/bench_api.py).
    map_large_blocks()
    app = create_app(
        publisher, keys, rejections, watch_config=True, max_in_flight=settings.max_in_flight
    )
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        # routerd's own logging (configure_logging) formats uvicorn's records too.
        log_config=None,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )
    return anyio.run(_serve, _Server(config), app.state.reloader, backend="asyncio")


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: `_serve` handles signals the routerd
    way (anyio), so a graceful stop exits 0 instead of re-raising the signal."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(server: uvicorn.Server, reloader: Reloader) -> ApiExit:
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            tg.start_soon(_on_signals, signals, server, reloader)
            try:
                await server.serve()
            except SystemExit:
                # uvicorn exits when it cannot bind the address (it has logged why);
                # `started` stays false.
                pass
            finally:
                tg.cancel_scope.cancel()
    if not server.started:
        return ApiExit.STARTUP
    return ApiExit.FORCED if server.force_exit else ApiExit.OK


async def _on_signals(
    signals: AsyncIterator[signal.Signals], server: uvicorn.Server, reloader: Reloader
) -> None:
    async for signum in signals:
        if signum is signal.SIGHUP:
            reloader.request_reload("SIGHUP")
            continue
        # The first signal: stop accepting, finish the requests in flight (each waits for
        # its broker confirm), then close the publisher. A second one: stop now.
        if server.should_exit:
            log.warning("second %s, stopping now", signum.name)
            server.force_exit = True
        else:
            log.info("%s, finishing the requests in flight", signum.name)
            server.should_exit = True
