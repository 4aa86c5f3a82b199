"""When OpenTelemetry export is on, and what `error.type` says (telemetry/otel.py)."""

from __future__ import annotations

import pytest

from bastion_edge.telemetry.otel import OtelExport, error_type, wanted


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
])
def test_export_follows_the_standard_variables(environ: dict[str, str],
                                               expected: bool) -> None:
    assert wanted(environ) is expected


def test_no_exporter_without_the_variables() -> None:
    assert OtelExport.from_environment({}, lambda model: model or "none") is None


@pytest.mark.parametrize(("error", "status", "expected"), [
    (None, 200, None), (None, 404, "404"), (None, 503, "503"), (None, None, "no_response"),
    ("model_not_mapped", 400, "model_not_mapped"), ("upstream_timeout", None,
                                                    "upstream_timeout"),
])
def test_error_type(error: str | None, status: int | None, expected: str | None) -> None:
    assert error_type(error, status) == expected
