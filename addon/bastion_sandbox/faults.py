"""Fault injection, driven by request headers, for rehearsing the proxy's error handling.

`x-sandbox-fault` holds comma-separated faults, applied in this order:

- `delay-ms=N`               wait N ms before answering;
- `reset`                    abort the TCP connection without any response;
- `status=NNN`               answer NNN (400-599) with an OpenAI envelope (429 and 503
                             carry `retry-after: 0`);
- `stall-after-headers-ms=N` send the headers (and the first SSE event) then pause N ms.

`x-sandbox-token-delay-ms: N` paces SSE events N ms apart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from aiohttp import web
from aiohttp.typedefs import Handler

from bastion_sandbox.errors import INVALID_REQUEST, SERVER_ERROR, BastionError, invalid_request
from bastion_sandbox.replies import error_response
from bastion_sandbox.state import is_sandbox_path, state_of

FAULT_HEADER = "x-sandbox-fault"
TOKEN_DELAY_HEADER = "x-sandbox-token-delay-ms"
_MAX_MS = 600_000


@dataclass(frozen=True, slots=True)
class FaultPlan:
    delay_ms: int = 0
    status: int | None = None
    reset: bool = False
    stall_after_headers_ms: int = 0
    token_delay_ms: int = 0


NO_FAULTS = FaultPlan()


def parse_faults(fault: str | None, token_delay: str | None = None) -> FaultPlan:
    """The plan for a request's fault headers; ValueError names what is wrong."""
    plan = NO_FAULTS
    for raw in (fault or "").split(","):
        item = raw.strip().lower()
        if not item:
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if name == "reset" and not sep:
            plan = replace(plan, reset=True)
        elif name == "delay-ms" and sep:
            plan = replace(plan, delay_ms=_millis(value, name))
        elif name == "stall-after-headers-ms" and sep:
            plan = replace(plan, stall_after_headers_ms=_millis(value, name))
        elif name == "status" and sep:
            if not value.isdigit() or not 400 <= int(value) <= 599:
                raise ValueError(f"{FAULT_HEADER}: status must be 400..599, got {value!r}")
            plan = replace(plan, status=int(value))
        else:
            raise ValueError(
                f"{FAULT_HEADER}: unknown fault {item!r} (use delay-ms=N, status=NNN, "
                "reset, stall-after-headers-ms=N)"
            )
    if token_delay is not None:
        plan = replace(plan, token_delay_ms=_millis(token_delay.strip(), TOKEN_DELAY_HEADER))
    return plan


def _millis(value: str, name: str) -> int:
    if not value.isdigit() or int(value) > _MAX_MS:
        raise ValueError(f"{name} must be an integer 0..{_MAX_MS}, got {value!r}")
    return int(value)


_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "sandbox_fault"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "not_found"),
    408: ("timeout_error", "request_timeout"),
    409: ("conflict_error", "conflict"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
    502: ("server_error", "upstream_error"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "upstream_timeout"),
}


def fault_error(status: int) -> BastionError:
    """The OpenAI-style error the sandbox answers for `status=NNN`."""
    default_type = SERVER_ERROR if status >= 500 else INVALID_REQUEST
    type_, code = _STATUS_ERRORS.get(status, (default_type, "sandbox_fault"))
    return BastionError(status, f"Injected fault: HTTP {status} (x-sandbox-fault).", code, type_)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    headers = request.headers
    if (FAULT_HEADER not in headers and TOKEN_DELAY_HEADER not in headers) or is_sandbox_path(
        request.path
    ):
        return await handler(request)
    try:
        plan = parse_faults(headers.get(FAULT_HEADER), headers.get(TOKEN_DELAY_HEADER))
    except ValueError as exc:
        raise invalid_request(str(exc), "invalid_sandbox_fault", FAULT_HEADER) from None
    state = state_of(request)
    state.plan = plan
    if plan.delay_ms:
        await asyncio.sleep(plan.delay_ms / 1000)
    if plan.reset:
        state.aborted = True
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never sent: the connection is gone
    if plan.status is not None:
        extra = {"retry-after": "0"} if plan.status in (429, 503) else None
        return error_response(fault_error(plan.status), extra)
    response = await handler(request)
    if plan.stall_after_headers_ms and isinstance(response, web.Response) and not response.prepared:
        return await _stall_after_headers(request, response, plan.stall_after_headers_ms)
    return response


async def _stall_after_headers(
    request: web.Request, response: web.Response, stall_ms: int
) -> web.StreamResponse:
    """Send a buffered reply's headers, pause, then its body."""
    body = response.body
    data = body if isinstance(body, bytes) else b""
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(data)
    await stream.prepare(request)
    await asyncio.sleep(stall_ms / 1000)
    await stream.write(data)
    await stream.write_eof()
    return stream
