"""Mirror answer agreement per model: the distribution of similarity (quartiles and a
histogram, not only a mean) and the share of tool calls and json_schema answers that
held, over the mirror records that carry an `agreement` object."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bastion_edge.report.load import Record
from bastion_edge.report.stats import percentile

# Similarity bins: most pairs of paraphrases land above 0.8; below 0.5 is another answer.
EDGES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)


@dataclass(frozen=True, slots=True)
class AgreementSummary:
    endpoint: str
    model: str
    n: int  # pairs with a similarity
    minimum: float | None
    q1: float | None
    median: float | None
    q3: float | None
    histogram: tuple[int, ...]  # counts per EDGES bin
    tools: tuple[int, int]  # (matched, judged)
    schema: tuple[int, int]  # (valid, judged)


def bin_of(value: float) -> int:
    for i in range(len(EDGES) - 2, -1, -1):
        if value >= EDGES[i]:
            return i
    return 0


def agreement_summaries(records: Iterable[Record]) -> list[AgreementSummary]:
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        m = r.mirror
        if m is not None and (m.similarity is not None or m.tools_match is not None
                              or m.schema_valid is not None):
            groups[(r.endpoint, r.model)].append(r)
    out = []
    for (endpoint, model), members in sorted(groups.items()):
        values = sorted(r.mirror.similarity for r in members
                        if r.mirror is not None and r.mirror.similarity is not None)
        counts = [0] * (len(EDGES) - 1)
        for v in values:
            counts[bin_of(v)] += 1
        tools = [r.mirror.tools_match for r in members
                 if r.mirror is not None and r.mirror.tools_match is not None]
        schema = [r.mirror.schema_valid for r in members
                  if r.mirror is not None and r.mirror.schema_valid is not None]
        out.append(AgreementSummary(
            endpoint, model, len(values), values[0] if values else None,
            percentile(values, 25), percentile(values, 50), percentile(values, 75),
            tuple(counts), (sum(tools), len(tools)), (sum(schema), len(schema))))
    return out


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _share(pair: tuple[int, int]) -> str:
    return "-" if not pair[1] else f"{pair[0]}/{pair[1]}"


def bin_labels() -> list[str]:
    return [f"{EDGES[i]:g}-{EDGES[i + 1]:g}" for i in range(len(EDGES) - 1)]


def terminal_lines(summaries: list[AgreementSummary]) -> list[str]:
    from bastion_edge.report.terminal import table

    if not summaries:
        return []
    header = ("endpoint", "model", "pairs", "min", "q1", "median", "q3",
              "histogram " + " ".join(bin_labels()), "tools ok", "schema ok")
    rows = [[s.endpoint, s.model, str(s.n), _f(s.minimum), _f(s.q1), _f(s.median), _f(s.q3),
             " ".join(str(c) for c in s.histogram), _share(s.tools), _share(s.schema)]
            for s in summaries]
    return ["", "mirror answer agreement (similarity of the answers' bge-m3 embeddings):",
            *table(rows, header, frozenset(range(2, 7)) | {8, 9})]


def html_panel(summaries: list[AgreementSummary]) -> str:
    from html import escape as e

    if not summaries:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("Endpoint", "Model", "Pairs", "Min", "Q1",
                                             "Median", "Q3", "Similarity histogram",
                                             "Tools ok", "Schema ok"))
    rows = []
    for s in summaries:
        top = max(s.histogram) or 1
        bars = "".join(
            f'<span title="{label}: {c}" style="display:inline-block;width:14px;margin-right:2px;'
            f'height:{2 + 26 * c / top:.0f}px;background:#0969DA;vertical-align:bottom"></span>'
            for label, c in zip(bin_labels(), s.histogram, strict=True))
        rows.append(f"<tr><td>{e(s.endpoint)}</td><td>{e(s.model)}</td>"
                    f'<td class="num">{s.n}</td><td class="num">{_f(s.minimum)}</td>'
                    f'<td class="num">{_f(s.q1)}</td><td class="num">{_f(s.median)}</td>'
                    f'<td class="num">{_f(s.q3)}</td><td>{bars}</td>'
                    f'<td class="num">{_share(s.tools)}</td>'
                    f'<td class="num">{_share(s.schema)}</td></tr>')
    return ('<section class="panel" id="agreement"><h2>Mirror answer agreement</h2>'
            '<div class="sub">Similarity of OpenAI\'s and Bastion\'s answers (cosine of '
            "bge-m3 embeddings), per model: quartiles and a histogram over bins "
            f"{e(', '.join(bin_labels()))}; tool calls with the same tools and valid "
            "arguments; json_schema answers that validate.</div>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")
