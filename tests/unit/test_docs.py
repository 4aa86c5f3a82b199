"""The docs site: it builds strictly (no broken link or anchor), its generated reference
pages match the code, and every error code the proxy emits has an entry with its fix."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ADDON = ROOT / "addon" / "bastion_edge"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = _generator()


def test_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) \
        or shutil.which("mkdocs")
    if mkdocs is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "rules" / "index.html").is_file()


def test_rules_reference_is_up_to_date() -> None:
    assert gen.RULES_PAGE.read_text(encoding="utf-8") == gen.render_rules(), \
        "docs/reference/rules.md is stale: run python docs/gen_reference.py"


def test_cli_reference_is_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    page = gen.CLI_PAGE.read_text(encoding="utf-8")
    made_with = re.search(r"argparse of Python (\d+\.\d+)", page)
    assert made_with, "docs/reference/cli.md does not say which Python made it"
    if made_with.group(1) != f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip(f"cli.md was made with Python {made_with.group(1)}; argparse's layout "
                    "differs between versions")
    assert page == gen.render_cli(), \
        "docs/reference/cli.md is stale: run python docs/gen_reference.py"


def test_every_yaml_key_is_described_and_no_description_is_stale() -> None:
    keys = gen.yaml_keys()
    missing = [k for k in keys if not gen.DOCS.get(k)]
    assert not missing, f"rules keys without a description in docs/gen_reference.py: {missing}"
    stale = sorted(set(gen.DOCS) - set(keys))
    assert not stale, f"descriptions of keys the rules reader no longer accepts: {stale}"


def test_every_schema_field_is_reached_by_a_documented_key() -> None:
    rules_cls = gen._schema()[0]
    reached = {gen.field_for(k) for k in gen.yaml_keys()}
    fields = [f.dotted for f in gen.walk_schema(rules_cls)]
    orphans = [f for f in fields if f not in reached and f not in gen.NOT_FROM_YAML
               and not any(r.startswith(f + ".") for r in reached)]
    assert not orphans, ("schema fields no documented rules key sets; map them in "
                         f"FIELD_OF or NOT_FROM_YAML in docs/gen_reference.py: {orphans}")
    dangling = sorted(k for k, target in gen.FIELD_OF.items() if target not in fields)
    assert not dangling, f"FIELD_OF names schema fields that do not exist: {dangling}"


@dataclasses.dataclass(frozen=True)
class _Inner:
    depth: int = 3


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner = _Inner()
    items: tuple[_Inner, ...] = ()
    name: str | None = None


def test_walk_schema_sees_nested_sections_and_defaults() -> None:
    found = {f.dotted: f.default for f in gen.walk_schema(_Outer)}
    assert found == {"inner": _Inner(), "inner.depth": 3, "items": (), "items.[].depth": 3,
                     "name": None}


# ------------------------------------------------------------------ error codes

# Calls that build the proxy's error envelopes, and which argument is the code.
CODE_ARGUMENT = {"ApiError": 2, "bad_request": 1, "bad_gateway": 1, "gateway_timeout": 1,
                 "LimitError": 3, "_invalid": 2}


def emitted_codes() -> dict[str, str]:
    """Every error code the proxy's source passes to an envelope builder -> where.

    The sandbox (a stand-in for Bastion) is not the proxy and is left out."""
    codes: dict[str, str] = {"upstream_timeout": "errors.gateway_timeout's default"}
    for path in sorted(ADDON.rglob("*.py")):
        if "sandbox" in path.relative_to(ADDON).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                     for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else None
            if name not in CODE_ARGUMENT:
                continue
            arg = next((k.value for k in node.keywords if k.arg == "code"), None)
            if arg is None and len(node.args) > CODE_ARGUMENT[name]:
                arg = node.args[CODE_ARGUMENT[name]]
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for value in _string_values(arg, constants):
                codes.setdefault(value, where)
        for node in ast.walk(tree):  # `code = ...` and dataclass `code: str = CONSTANT`
            assigned: ast.expr | None
            if isinstance(node, ast.Assign):
                targets, assigned = node.targets, node.value
            elif isinstance(node, ast.AnnAssign):
                targets, assigned = [node.target], node.value
            else:
                continue
            if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                for found in _string_values(assigned, constants):
                    codes.setdefault(found, f"{path.relative_to(ROOT)}:{node.lineno}")
    return codes


def _string_values(node: ast.expr | None, constants: dict[str, str]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in constants:
        return [constants[node.id]]
    if isinstance(node, ast.IfExp):
        return _string_values(node.body, constants) + _string_values(node.orelse, constants)
    return []


def test_the_code_scan_finds_the_known_codes() -> None:
    codes = emitted_codes()
    for code in ("model_not_mapped", "bastion_key_missing", "invalid_path",
                 "model_capability_unsupported", "response_not_found", "upstream_timeout",
                 "request_header_fields_too_large", "unknown_voice"):
        assert code in codes


def test_every_error_code_has_an_entry_with_a_fix() -> None:
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    documented = {code for row in rows
                  for code in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    missing = {code: where for code, where in emitted_codes().items()
               if code not in documented}
    assert not missing, ("error codes the proxy emits with no row in docs/troubleshooting.md "
                         f"(code: where): {missing}")


# ------------------------------------------------------------------ metrics

METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Info", "Summary", "GaugeInfo"}


def registered_metrics() -> dict[str, str]:
    """Every metric name the proxy registers (the first argument of a prometheus-client
    constructor) -> where."""
    names: dict[str, str] = {}
    for path in sorted(ADDON.rglob("*.py")):
        if "sandbox" in path.relative_to(ADDON).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in METRIC_TYPES and node.args \
                    and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                names.setdefault(node.args[0].value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return names


def test_every_metric_is_on_the_metrics_page() -> None:
    page = (DOCS / "operate" / "metrics.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"`(bastion_edge_[a-z_]+)`", page))
    found = registered_metrics()
    assert "bastion_edge_requests" in found
    missing = {name: where for name, where in found.items()
               if not {name, f"{name}_total", f"{name}_info"} & shown}
    assert not missing, f"metrics missing from docs/operate/metrics.md (name: where): {missing}"


def test_every_access_log_field_is_on_its_page() -> None:
    from bastion_edge.telemetry.access_log import AccessRecord

    page = (DOCS / "operate" / "access-log.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1] for line in page.splitlines() if line.startswith("| `")]
    shown = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row)}
    missing = [f.name for f in dataclasses.fields(AccessRecord) if f.name not in shown]
    assert not missing, f"access-log fields missing from docs/operate/access-log.md: {missing}"


# Names that look like settings but are not the user's: set by the pool's parent for its
# workers, or an iptables chain.
INTERNAL_NAMES = {"BASTION_WORKER_ID", "BASTION_WORKER_ADMIN_SOCKET", "BASTION_EDGE_OUTPUT"}


def test_every_environment_variable_is_on_its_page() -> None:
    page = (DOCS / "reference" / "environment.md").read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for base in (ADDON, ROOT / "sidecar"):
        for path in sorted(base.rglob("*.py")):
            if "sandbox" in path.relative_to(base).parts or "node_modules" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.fullmatch(r"(BASTION|QUBITTRON)_[A-Z_]+", node.value):
                    found.setdefault(node.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    assert "BASTION_RULES" in found
    missing = {name: where for name, where in found.items()
               if name not in INTERNAL_NAMES and f"`{name}`" not in page}
    assert not missing, ("environment variables missing from docs/reference/environment.md "
                         f"(name: where): {missing}")
