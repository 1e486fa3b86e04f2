"""Reading a request body without ever holding more than the route config's limit."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body is over `limit` bytes, by its Content-Length or by what arrived."""

    def __init__(self, limit: int, declared: int | None) -> None:
        self.limit = limit
        self.declared = declared
        super().__init__(str(self))

    def __str__(self) -> str:
        size = f" ({self.declared} bytes)" if self.declared is not None else ""
        return f"the request body is larger{size} than the limit of {self.limit} bytes"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or `BodyTooLarge` as soon as it is known to exceed `limit`.

    A declared Content-Length over the limit is refused before a byte is read; a body
    without one (chunked) or longer than it says is cut off at the first chunk past it.
    """
    # The HTTP server has already refused a Content-Length that is not a number.
    declared_text = request.headers.get("content-length", "")
    if declared_text.isdigit() and int(declared_text) > limit:
        raise BodyTooLarge(limit, int(declared_text))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, None)
        chunks.append(chunk)
    return b"".join(chunks)
