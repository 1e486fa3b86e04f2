"""`routerd.api`: the reference public API, `POST /v1/send` over `routerd.client`.

Needs the `api` extra (Starlette, uvicorn). `create_app(publisher, keys)` is the ASGI app
(`routerd.api.app`); `routerd api` runs it (`routerd.api.server.run`). This module itself
imports neither, so the CLI can read the settings without the extra installed.
See docs/api.md.
"""

from __future__ import annotations

from routerd.api.keys import KeysError, KeyStore, hash_key
from routerd.api.settings import API_ENV_VARS, ApiSettings

__all__ = ["API_ENV_VARS", "ApiSettings", "KeyStore", "KeysError", "hash_key"]
