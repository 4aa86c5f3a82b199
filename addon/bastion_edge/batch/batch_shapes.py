"""OpenAI's Files and Batch API shapes, and batch input validation. Pure.

Output and error files use OpenAI's JSONL line format:
    {"id": "batch_req_...", "custom_id": "...",
     "response": {"status_code": 200, "request_id": "...", "body": {...}} | null,
     "error": {"code": "...", "message": "..."} | null}
A line whose request got a non-2xx answer lands in the error file with that response;
a line that could not be sent at all lands there with `error` set.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from bastion_edge.errors import ApiError, bad_request

FILE_PURPOSES = ("batch", "user_data", "assistants", "vision", "fine-tune", "evals")
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions",
                   "/v1/responses")
COMPLETION_WINDOWS = {"24h": 24 * 3600}
# Statuses in which a batch still has work for a runner.
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
MAX_LIST_LIMIT = 10_000

Json = dict[str, Any]


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def file_not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", "file_not_found", param="id")


def batch_not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id}'.", "batch_not_found",
                    param="batch_id")


def file_object(file_id: str, size: int, created_at: int, filename: str,
                purpose: str) -> Json:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": created_at,
            "filename": filename, "purpose": purpose, "status": "processed",
            "expires_at": None, "status_details": None}


def new_batch(batch_id: str, input_file_id: str, endpoint: str, window: str,
              metadata: Json | None, now: int) -> Json:
    return {
        "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
        "input_file_id": input_file_id, "completion_window": window, "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now,
        "in_progress_at": None, "expires_at": now + COMPLETION_WINDOWS[window],
        "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
        "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
    }


def batch_create_params(body: Json) -> tuple[str, str, str, Json | None]:
    """(input_file_id, endpoint, completion_window, metadata) of a create, or a 400."""
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise bad_request("Missing required parameter: 'input_file_id'.",
                          "missing_required_parameter", "input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in BATCH_ENDPOINTS:
        raise bad_request(f"Invalid 'endpoint': expected one of {', '.join(BATCH_ENDPOINTS)}.",
                          "invalid_value", "endpoint")
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise bad_request("Invalid 'completion_window': expected '24h'.", "invalid_value",
                          "completion_window")
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or any(
            not isinstance(v, str) for v in metadata.values())):
        raise bad_request("Invalid 'metadata': up to 16 string values.", "invalid_value",
                          "metadata")
    assert isinstance(endpoint, str) and isinstance(window, str)
    return file_id, endpoint, window, metadata


@dataclass(frozen=True, slots=True)
class BatchLine:
    number: int  # 1-based line number in the input file
    custom_id: str
    body: Json


def parse_line(raw: bytes, number: int, endpoint: str) -> BatchLine:
    """One input line, or ValueError saying what is wrong (OpenAI's validation codes)."""
    try:
        line = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise LineInvalid("invalid_json_line", f"line {number} is not valid JSON: {e}",
                          number) from e
    if not isinstance(line, dict):
        raise LineInvalid("invalid_json_line", f"line {number} is not a JSON object", number)
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineInvalid("missing_required_parameter",
                          f"line {number}: 'custom_id' must be a non-empty string", number,
                          "custom_id")
    if line.get("method") != "POST":
        raise LineInvalid("invalid_value", f"line {number}: 'method' must be POST", number,
                          "method")
    if line.get("url") != endpoint:
        raise LineInvalid("mismatched_endpoint",
                          f"line {number}: 'url' {line.get('url')!r} is not the batch's "
                          f"endpoint {endpoint}", number, "url")
    body = line.get("body")
    if not isinstance(body, dict):
        raise LineInvalid("invalid_value", f"line {number}: 'body' must be a JSON object",
                          number, "body")
    return BatchLine(number, custom_id, body)


class LineInvalid(ValueError):
    def __init__(self, code: str, message: str, line: int, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.line, self.param = code, message, line, param

    def error(self) -> Json:
        return {"code": self.code, "message": self.message, "param": self.param,
                "line": self.line}


def batch_errors(errors: list[Json]) -> Json:
    return {"object": "list", "data": errors}


def result_line(custom_id: str, request_id: str, status: int | None, body: Any,
                error: Json | None = None) -> Json:
    """A line of the output or error file."""
    response = None if status is None else {"status_code": status, "request_id": request_id,
                                            "body": body}
    return {"id": new_id("batch_req_"), "custom_id": custom_id, "response": response,
            "error": error}


def is_success(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def list_page(items: list[Json], limit: int) -> Json:
    """OpenAI's cursor page (`after` is applied by the caller's query)."""
    shown = items[:limit]
    return {"object": "list", "data": shown,
            "first_id": shown[0]["id"] if shown else None,
            "last_id": shown[-1]["id"] if shown else None,
            "has_more": len(items) > limit}


def list_limit(query: dict[str, str], default: int) -> int:
    raw = query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise bad_request(f"Invalid 'limit': expected 1..{MAX_LIST_LIMIT}.", "invalid_value",
                          "limit")
    return int(raw)


def counts(total: int, completed: int, failed: int) -> Json:
    return {"total": total, "completed": completed, "failed": failed}
