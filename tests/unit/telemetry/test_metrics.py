"""Metrics: bastion_edge_* series with model labels bounded to the rules' ids."""

from __future__ import annotations

from prometheus_client import generate_latest

from bastion_edge.config.rules import parse_rules
from bastion_edge.telemetry.metrics import OTHER, Metrics

RULES = parse_rules('models:\n  gpt-4o: gpt-oss-120b\n  "gpt-4o-*": gpt-oss-20b\n'
                    "  x:\n    - {when: {has_image: true}, use: vl}\n", source="r.yaml")


def test_model_label_bounded_to_rule_ids() -> None:
    metrics = Metrics()
    metrics.rules_loaded(RULES, 1_700_000_000.0)
    assert metrics.model_label("gpt-4o") == "gpt-4o"
    assert metrics.model_label("gpt-oss-120b") == "gpt-oss-120b"
    assert metrics.model_label("vl") == "vl"
    assert metrics.model_label("gpt-4o-2024-08-06") == OTHER == "other"  # glob match, not an id
    assert metrics.model_label("gpt-4o-*") == OTHER  # globs are not label values
    assert metrics.model_label("random-" + "x" * 50) == OTHER
    assert metrics.model_label(None) == "none"
    assert metrics.model_label("") == "none"


def test_model_label_before_rules_loaded_is_other() -> None:
    assert Metrics().model_label("gpt-4o") == OTHER


def test_random_models_produce_bounded_series() -> None:
    metrics = Metrics()
    metrics.rules_loaded(RULES, 0.0)
    for i in range(200):
        label = metrics.model_label(f"attacker-{i}")
        metrics.requests.labels("chat.completions", "none", label, label, "bastion", "2xx",
                                "false").inc()
    text = generate_latest(metrics.registry).decode()
    series = [line for line in text.splitlines() if line.startswith("bastion_edge_requests_total")]
    assert len(series) == 1
    assert 'original_model="other"' in series[0]
    assert series[0].endswith(" 200.0")


def test_rules_loaded_records_reload_and_info() -> None:
    metrics = Metrics()
    metrics.rules_loaded(RULES, 1234.5)
    text = generate_latest(metrics.registry).decode()
    assert 'bastion_edge_rules_reloads_total{result="success"} 1.0' in text
    assert "bastion_edge_rules_last_reload_timestamp_seconds 1234.5" in text
    assert f'sha256="{RULES.sha256}"' in text
    assert 'source="r.yaml"' in text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert all(name.startswith("bastion_edge_") for name in names)


def test_separate_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.rewrites.labels("model").inc()
    sample = 'bastion_edge_rewrites_total{kind="model"} 1.0'
    assert sample in generate_latest(first.registry).decode()
    assert sample not in generate_latest(second.registry).decode()
