"""`routerd api`: build the app from settings and run it under uvicorn until SIGTERM."""

from __future__ import annotations

import logging
from enum import IntEnum

import uvicorn

from routerd.api.app import create_app
from routerd.api.keys import KeysError, KeyStore
from routerd.api.settings import ApiSettings
from routerd.client import Publisher
from routerd.config.model import ConfigError
from routerd.observe.logs import configure_logging

log = logging.getLogger(__name__)


class ApiExit(IntEnum):
    OK = 0
    # The settings, the keys file or the route config stop it from starting.
    STARTUP = 2


def run(settings: ApiSettings) -> ApiExit:
    """Serve the API until SIGTERM or SIGINT (uvicorn finishes the requests in flight)."""
    common = settings.common
    configure_logging(common.log_format, common.log_level)
    try:
        keys = KeyStore.load(settings.keys_path)
        publisher = Publisher(
            common.amqp_url,
            config=common.config_path,
            publish_timeout=common.publish_timeout,
            app_id="routerd-api",
        )
    except (KeysError, ConfigError) as exc:
        log.error("routerd api cannot start: %s", exc)
        return ApiExit.STARTUP
    log.info(
        "routerd api starting",
        extra={
            "listen": settings.listen_addr,
            "config": str(common.config_path),
            "amqp_url": common.redacted_url,
            "customers": len(set(keys.customers.values())),
        },
    )
    config = uvicorn.Config(
        create_app(publisher, keys),
        host=settings.listen_host,
        port=settings.listen_port,
        # routerd's own logging (configure_logging) formats uvicorn's records too.
        log_config=None,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    return ApiExit.OK if server.started else ApiExit.STARTUP
