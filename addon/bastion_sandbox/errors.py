"""Bastion's error answers, built by the sandbox itself.

The contract: Bastion's error envelope is OpenAI's, `{"error": {"message", "type",
"param", "code"}}`, and 401, 429 and 5xx mean what they mean at OpenAI. The sandbox
plays the upstream, so it shares no error code with the proxy it stands in front of: a
mistake in the proxy's envelope must show in the tests, not be mirrored here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
SERVER_ERROR = "server_error"


@dataclass(eq=False)
class BastionError(Exception):
    """Raised by a handler; `app.error_middleware` answers it as Bastion would."""

    status: int
    message: str
    code: str
    type: str = INVALID_REQUEST
    param: str | None = None

    def __str__(self) -> str:
        return f"HTTP {self.status} ({self.code}) {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def invalid_request(message: str, code: str, param: str | None = None) -> BastionError:
    """A 400: the request itself is wrong."""
    return BastionError(400, message, code, INVALID_REQUEST, param)


def upstream_error(message: str, code: str = "upstream_error") -> BastionError:
    """A 502: the model behind Bastion failed (e.g. a field it does not implement)."""
    return BastionError(502, message, code, SERVER_ERROR)
