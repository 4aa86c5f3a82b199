"""ApiError: a plain exception that still builds OpenAI's envelope."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from bastion_edge.errors import ApiError, bad_request


@contextlib.contextmanager
def passing_through() -> Iterator[None]:
    yield  # contextlib assigns the exception's __traceback__ when it propagates


def test_api_error_raised_through_a_context_manager_keeps_its_identity() -> None:
    with pytest.raises(ApiError) as caught, passing_through():
        raise bad_request("bad model", "model_not_found", param="model")
    assert caught.value.__traceback__ is not None
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400, "model_not_found", "model")


def test_api_error_chains_as_cause_and_context() -> None:
    with pytest.raises(ApiError) as caught:
        try:
            raise KeyError("x")
        except KeyError as e:
            raise ApiError(502, "upstream broke", "bad_gateway", "server_error") from e
    assert isinstance(caught.value.__cause__, KeyError)


def test_api_error_body_is_the_openai_envelope() -> None:
    error = ApiError(404, "No such model", "model_not_found", "not_found_error", "model")
    assert json.loads(error.body()) == {"error": {
        "message": "No such model", "type": "not_found_error", "param": "model",
        "code": "model_not_found"}}
    assert str(error) == "404 model_not_found: No such model"
