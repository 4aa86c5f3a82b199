"""The one builder of OpenAI-style error envelopes.

Every error the proxy produces itself goes through `ApiError`, so apps see the same
shape (and the SDKs raise the same typed exceptions) whether OpenAI, Bastion or
bastion-edge answered:

    {"error": {"message": "...", "type": "...", "param": null, "code": "..."}}
"""

from __future__ import annotations

import json

# OpenAI's `type` values, by HTTP status class.
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
SERVER_ERROR = "server_error"

JSON_CONTENT_TYPE = "application/json"


class ApiError(Exception):
    """An error answered to the app as an OpenAI envelope.

    A plain exception (not a frozen dataclass): Python sets `__traceback__` and
    `__context__` on it whenever it is raised, which a frozen slots class refuses.
    """

    def __init__(self, status: int, message: str, code: str, type: str = INVALID_REQUEST,
                 param: str | None = None) -> None:
        super().__init__(status, message, code, type, param)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param

    def __repr__(self) -> str:
        return (f"ApiError(status={self.status!r}, message={self.message!r}, "
                f"code={self.code!r}, type={self.type!r}, param={self.param!r})")

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return json.dumps(self.envelope()).encode()

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def bad_request(message: str, code: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code, INVALID_REQUEST, param)


def bad_gateway(message: str, code: str) -> ApiError:
    return ApiError(502, message, code, SERVER_ERROR)


def gateway_timeout(message: str, code: str = "upstream_timeout") -> ApiError:
    return ApiError(504, message, code, SERVER_ERROR)
