"""rules.yaml parsing and validation: every error names its YAML location and line."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from bastion_edge.config.rules import (
    DEFAULT_BASE_URL,
    Condition,
    Rules,
    RulesError,
    apply_environment,
    format_location,
    load_rules,
    parse_rules,
)
from bastion_edge.core.facts import CHAT, EMBEDDINGS, RequestFacts
from bastion_edge.core.model_map import ModelMap

SHIPPED_RULES = Path(__file__).resolve().parents[3] / "rules.yaml"


def _error(text: str) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    return info.value


# ------------------------------------------------------------------ accepted forms


def test_simple_model_form_always_accepted() -> None:
    rules = parse_rules(
        "models:\n"
        "  gpt-4o: gpt-oss-120b\n"
        "  gpt-4o-mini: gpt-oss-20b\n"
        '  "gpt-4o-*": gpt-oss-120b\n'
    )
    assert [(m.pattern, [c.use for c in m.choices]) for m in rules.models] == [
        ("gpt-4o", ["gpt-oss-120b"]),
        ("gpt-4o-mini", ["gpt-oss-20b"]),
        ("gpt-4o-*", ["gpt-oss-120b"]),
    ]
    assert all(c.when == Condition() for m in rules.models for c in m.choices)
    assert [m.is_glob for m in rules.models] == [False, False, True]


def test_conditional_model_list_keeps_choice_order_and_conditions() -> None:
    rules = parse_rules(
        "models:\n"
        "  gpt-4o:\n"
        "    - when: {has_image: true, endpoint: [chat.completions, responses]}\n"
        "      use: vision\n"
        "    - when: {header: {X-Route: cod*}, prompt_tokens_over: 10}\n"
        "      use: coder\n"
        "    - when: {client: [10.0.0.0/8, '::1'], app_key_sha256: 0123456789abcdef}\n"
        "      use: internal\n"
        "    - use: general\n"
    )
    (rule,) = rules.models
    assert [c.use for c in rule.choices] == ["vision", "coder", "internal", "general"]
    vision, coder, internal, general = (c.when for c in rule.choices)
    assert vision.has_image is True
    assert vision.endpoints == ("chat.completions", "responses")
    assert coder.headers == (("x-route", "cod*"),)  # header names lower-cased
    assert coder.prompt_tokens_over == 10
    assert internal.clients == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert internal.app_key_sha256 == ("0123456789abcdef",)
    assert general == Condition()


def test_empty_file_gives_defaults() -> None:
    rules = parse_rules("", source="empty.yaml")
    assert rules.models == ()
    assert rules.upstream.base_url == DEFAULT_BASE_URL
    assert rules.unmapped_models == "reject"
    assert rules.source == "empty.yaml"
    assert len(rules.sha256) == 64


def test_load_rules_records_source_and_content_hash(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("models: {gpt-4o: gpt-oss-120b}\n")
    first = load_rules(path)
    path.write_text("models: {gpt-4o: gpt-oss-20b}\n")
    second = load_rules(path)
    assert first.source == str(path)
    assert first.sha256 != second.sha256


def test_upstream_properties_from_base_url() -> None:
    rules = parse_rules("upstream: {base_url: 'https://bastion.internal:9443/api/v1/'}\n")
    assert rules.upstream.scheme == "https"
    assert rules.upstream.host == "bastion.internal"
    assert rules.upstream.port == 9443
    assert rules.upstream.path_prefix == "/api/v1"
    assert parse_rules("upstream: {base_url: 'https://h/v1'}\n").upstream.port == 443


# ------------------------------------------------------------------ validation errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  gpt-4o: 42\n",
         'models."gpt-4o": expected a string (a Bastion model id) or a list'),
        ("models:\n  gpt-4o:\n", 'models."gpt-4o": expected a string'),
        ("models:\n  gpt-4o: []\n", 'models."gpt-4o": expected a string'),
        ("models: [a, b]\n", "models: expected a mapping"),
        ("bogus: 1\n", "bogus: unknown key; expected one of upstream"),
        ("models:\n  gpt-4o:\n    - when: {}\n", 'models."gpt-4o"[0]: expected `use:'),
        ("models:\n  gpt-4o:\n    - use: x\n      wen: {}\n",
         'models."gpt-4o"[0].wen: unknown key; expected one of when, use'),
        ("models:\n  gpt-4o:\n    - use: x\n      when: {has_image: maybe}\n",
         'models."gpt-4o"[0].when.has_image: expected true or false'),
        ("models:\n  gpt-4o:\n    - use: x\n      when: {prompt_tokens_over: -1}\n",
         'models."gpt-4o"[0].when.prompt_tokens_over: expected a non-negative integer'),
        ("models:\n  gpt-4o:\n    - use: x\n      when: {endpoint: chat}\n",
         "models.\"gpt-4o\"[0].when.endpoint: unknown endpoint 'chat'"),
        ("models:\n  gpt-4o:\n    - use: x\n      when: {colour: red}\n",
         'models."gpt-4o"[0].when.colour: unknown key'),
        ("unmapped_models: drop\n", "unmapped_models: expected one of reject, pass_through"),
        ("reply_model: mine\n", "reply_model: expected one of upstream, original"),
        ("upstream: {timeout: 3}\n", "upstream.timeout: unknown key"),
        ("upstream: {response_timeout_seconds: 0}\n",
         "upstream.response_timeout_seconds: expected a positive number"),
        ("intercept: {openai_hosts: ['api.openai.com/v1']}\n",
         "intercept.openai_hosts[0]: expected a host name"),
        ("keys: {default_env: 'not a var'}\n",
         "keys.default_env: expected an environment variable name"),
        ("keys: {select: [{env: K}]}\n", "keys.select[0]: expected both `when` and `env`"),
        ("keys: {select: {env: K}}\n", "keys.select: expected a list"),
    ],
)
def test_validation_error_names_yaml_location(text: str, message: str) -> None:
    error = _error(text)
    assert str(error).startswith(message), str(error)


def test_validation_error_reports_line_of_offending_value() -> None:
    error = _error(
        "# header comment\n"
        "models:\n"
        "  gpt-4o-mini: gpt-oss-20b\n"
        "  gpt-4o: 42\n"
    )
    assert error.location == 'models."gpt-4o"'
    assert error.line == 4
    assert str(error).endswith("(line 4)")


def test_nested_choice_error_reports_its_own_line() -> None:
    error = _error(
        "models:\n"
        "  gpt-4o:\n"
        "    - use: a\n"
        "    - when: {has_image: 1}\n"
        "      use: b\n"
    )
    assert error.location == 'models."gpt-4o"[1].when.has_image'
    assert error.line == 4


def test_invalid_yaml_reports_line() -> None:
    error = _error("models:\n  gpt-4o: [unclosed\n")
    assert "invalid YAML" in str(error)
    assert error.line == 3


def test_non_utf8_rejected() -> None:
    with pytest.raises(RulesError, match="not UTF-8"):
        parse_rules(b"models: {a: \xff}\n")


@pytest.mark.parametrize("cidr", ["10.0.0.300/8", "10.0.0.0/33", "nonsense"])
def test_bad_cidr_rejected_with_location(cidr: str) -> None:
    error = _error(f"keys:\n  select:\n    - when: {{client: '{cidr}'}}\n      env: K\n")
    assert error.location == "keys.select[0].when.client"
    assert "expected an IP or CIDR" in str(error)
    assert error.line == 3


def test_raw_key_rejected_as_hash_prefix_without_echoing_it() -> None:
    raw_key = "sk-proj-abcdef0123456789"
    error = _error(f"keys:\n  select:\n    - when: {{app_key_sha256: {raw_key}}}\n      env: K\n")
    assert error.location == "keys.select[0].when.app_key_sha256"
    assert "never a raw key" in str(error)
    assert raw_key not in str(error)


@pytest.mark.parametrize("prefix", ["0123abc", "0123456789ABCDEF", "g123456789", "0" * 65])
def test_bad_hash_prefix_rejected(prefix: str) -> None:
    error = _error(f"keys:\n  select:\n    - when: {{app_key_sha256: '{prefix}'}}\n      env: K\n")
    assert error.location == "keys.select[0].when.app_key_sha256"


def test_hash_prefix_of_minimum_length_accepted() -> None:
    rules = parse_rules(
        "keys:\n  select:\n    - when: {app_key_sha256: '01234567'}\n      env: K\n")
    assert rules.key_rules[0].when.app_key_sha256 == ("01234567",)
    assert rules.key_rules[0].env == "K"


@pytest.mark.parametrize(
    "url", ["http://api.qubittron.ai/v1", "ftp://x/v1", "https:///v1", "api.qubittron.ai/v1"]
)
def test_base_url_must_be_https(url: str) -> None:
    error = _error(f"upstream:\n  base_url: '{url}'\n")
    assert error.location == "upstream.base_url"
    assert "expected an https:// URL" in str(error)
    assert error.line == 2


def test_format_location_quotes_non_identifiers() -> None:
    assert format_location(("models", "gpt-4o", 0, "when")) == 'models."gpt-4o"[0].when'
    assert format_location(("keys", "select", 2, "env")) == "keys.select[2].env"
    assert format_location(()) == ""


# ------------------------------------------------------------------ environment


def test_environment_overrides_base_url_and_ca() -> None:
    rules = parse_rules("upstream: {base_url: 'https://api.qubittron.ai/v1'}\n")
    env = {"BASTION_BASE_URL": "https://127.0.0.1:9443/v1", "BASTION_UPSTREAM_CA": "/ca.pem"}
    applied = apply_environment(rules, env)
    assert applied.upstream.base_url == "https://127.0.0.1:9443/v1"
    assert applied.upstream.host == "127.0.0.1"
    assert applied.upstream.port == 9443
    assert applied.upstream.ca_file == "/ca.pem"
    assert rules.upstream.base_url == "https://api.qubittron.ai/v1"  # snapshot not mutated


def test_environment_without_overrides_keeps_file_values() -> None:
    rules = parse_rules("upstream: {base_url: 'https://b.example/v1', ca_file: /x.pem}\n")
    applied = apply_environment(rules, {"BASTION_BASE_URL": ""})
    assert applied.upstream.base_url == "https://b.example/v1"
    assert applied.upstream.ca_file == "/x.pem"


def test_environment_http_base_url_rejected() -> None:
    with pytest.raises(RulesError) as info:
        apply_environment(Rules(), {"BASTION_BASE_URL": "http://127.0.0.1:9443/v1"})
    assert info.value.location == "BASTION_BASE_URL"
    assert "expected an https:// URL" in str(info.value)


# ------------------------------------------------------------------ allow_hosts


def test_allow_hosts_regex_anchored() -> None:
    regex = re.compile(Rules().allow_hosts_regex(), re.IGNORECASE)
    assert regex.search("api.openai.com:443")
    assert regex.search("api.openai.com")
    assert regex.search("api.qubittron.ai:80")
    assert not regex.search("api.openai.com.evil.net")
    assert not regex.search("api.openai.com.evil.net:443")
    assert not regex.search("xapi.openai.com:443")
    assert not regex.search("apixopenai.com:443")  # dots are escaped
    assert not regex.search("api.openai.com:443x")


def test_allow_hosts_regex_follows_intercept_section() -> None:
    rules = parse_rules("intercept: {openai_hosts: [API.Example.com], bastion_hosts: []}\n")
    assert rules.openai_hosts == ("api.example.com",)
    regex = re.compile(rules.allow_hosts_regex())
    assert regex.search("api.example.com:443")
    assert not regex.search("api.openai.com:443")


# ------------------------------------------------------------------ shipped rules.yaml


@pytest.fixture(scope="module")
def shipped() -> tuple[Rules, ModelMap]:
    rules = load_rules(SHIPPED_RULES)
    return rules, ModelMap(rules)


@pytest.mark.parametrize(
    ("model", "facts", "expected"),
    [
        ("gpt-4o", RequestFacts(CHAT), "gpt-oss-120b"),
        ("gpt-4o", RequestFacts(CHAT, has_image=True), "Qwen2.5-VL-72B-Instruct"),
        ("gpt-4o", RequestFacts(CHAT, headers={"x-bastion-route": "coding"}),
         "Qwen3-Coder-30B-A3B-Instruct"),
        ("gpt-4-turbo", RequestFacts(CHAT, prompt_tokens=24001), "Meta-Llama-3_3-70B-Instruct"),
        ("gpt-4-turbo", RequestFacts(CHAT, prompt_tokens=24000), "gpt-oss-120b"),
        ("gpt-4o-mini", RequestFacts(CHAT), "gpt-oss-20b"),
        ("text-embedding-3-small", RequestFacts(EMBEDDINGS), "bge-m3"),
        ("gpt-4o-2024-08-06", RequestFacts(CHAT), "gpt-oss-120b"),
        ("gpt-4o-mini-2024-07-18", RequestFacts(CHAT), "gpt-oss-20b"),
    ],
)
def test_shipped_rules_map_guide_table(
    shipped: tuple[Rules, ModelMap], model: str, facts: RequestFacts, expected: str
) -> None:
    _, models = shipped
    found = models.resolve(model, facts)
    assert found is not None
    assert found.upstream == expected


def test_shipped_rules_defaults(shipped: tuple[Rules, ModelMap]) -> None:
    rules, _ = shipped
    assert rules.upstream.base_url == "https://api.qubittron.ai/v1"
    assert rules.openai_hosts == ("api.openai.com",)
    assert rules.bastion_hosts == ("api.qubittron.ai",)
    assert rules.key_env == "QUBITTRON_API_KEY"
    assert rules.unmapped_models == "reject"
    assert rules.source == str(SHIPPED_RULES)


@pytest.mark.parametrize(
    ("text", "location", "line"),
    [
        ("cutover:\n  mode: mirror\n  mirror_max_in_flight: 0.5\n",
         "cutover.mirror_max_in_flight", 3),
        ("cutover:\n  mirror_max_in_flight: 2.0\n", "cutover.mirror_max_in_flight", 2),
        ("tts:\n  sample_rate_hz: 22050.5\n", "tts.sample_rate_hz", 2),
        ("tts:\n  sample_rate_hz: '22050'\n", "tts.sample_rate_hz", 2),
    ],
)
def test_integer_fields_refuse_non_integers_with_location(
    text: str, location: str, line: int
) -> None:
    error = _error(text)
    assert error.location == location
    assert error.line == line
    assert "expected a positive integer" in str(error)


def test_integer_fields_accept_whole_numbers() -> None:
    rules = parse_rules("cutover: {mirror_max_in_flight: 3}\ntts: {sample_rate_hz: 16000}\n")
    assert rules.cutover.mirror_max_in_flight == 3
    assert rules.tts.sample_rate_hz == 16000
