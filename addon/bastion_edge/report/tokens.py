"""The report's tokens section: pure aggregation of the access log's token figures.

- tokens per request by endpoint, model and destination, and output/input ratio;
- Bastion against OpenAI for the same app and endpoint (a split cutover serves both);
- with the user's price table (rules.yaml `usage.prices`, per million tokens): the
  estimated cost per destination and per 1,000 requests, and the projected monthly
  saving at the observed rate (only from a window of an hour or more: a few seconds of
  traffic scaled to 30 days says nothing).

Only figures the upstream reported count; a successful exchange whose reply had none
is counted as "not reported", never estimated. Prices are looked up by the model that
served: Bastion's id for Bastion, the app's model for OpenAI (exact id, then globs).
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bastion_edge.config.usage_rules import Price
from bastion_edge.report.load import Record, Tokens

BASTION, OPENAI = "bastion", "openai"
SERVED = (BASTION, OPENAI)
MONTH_S = 30 * 86400
MIN_PROJECTION_S = 3600  # no monthly projection from a shorter window


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Sums over the exchanges of one group that reported usage."""

    requests: int  # successful exchanges
    reported: int  # ... whose reply carried usage
    input: int
    output: int
    cached_input: int
    reasoning: int

    @property
    def unreported(self) -> int:
        return self.requests - self.reported

    @property
    def mean_input(self) -> float | None:
        return self.input / self.reported if self.reported else None

    @property
    def mean_output(self) -> float | None:
        return self.output / self.reported if self.reported else None

    @property
    def output_ratio(self) -> float | None:
        """Output tokens per input token."""
        return self.output / self.input if self.input else None


def stats_of(records: Iterable[Record]) -> TokenStats:
    members = list(records)
    figures = [r.tokens for r in members if r.tokens is not None]
    return TokenStats(len(members), len(figures), sum(t.input for t in figures),
                      sum(t.output for t in figures), sum(t.cached_input for t in figures),
                      sum(t.reasoning for t in figures))


@dataclass(frozen=True, slots=True)
class TokenGroup:
    endpoint: str
    model: str  # the app's model
    destination: str
    upstream_model: str | None  # the model that served most of them
    stats: TokenStats
    cost: float | None  # estimated from the price table; None: no price for the model


@dataclass(frozen=True, slots=True)
class Comparison:
    """Bastion against OpenAI for one app and endpoint."""

    app: str
    endpoint: str
    bastion: TokenStats
    openai: TokenStats

    def ratio(self, side: str) -> float | None:
        """Bastion's mean tokens per request over OpenAI's (`side`: input or output)."""
        b = self.bastion.mean_input if side == "input" else self.bastion.mean_output
        o = self.openai.mean_input if side == "input" else self.openai.mean_output
        return b / o if b is not None and o else None


@dataclass(frozen=True, slots=True)
class CostLine:
    destination: str
    priced: int  # exchanges with usage and a price
    unpriced: int  # exchanges with usage but no price for their model
    cost: float

    @property
    def per_thousand(self) -> float | None:
        """Estimated cost of 1,000 requests like these."""
        return self.cost / self.priced * 1000 if self.priced else None


@dataclass(frozen=True, slots=True)
class SavingRow:
    app: str
    endpoint: str
    model: str  # the app's model
    monthly_requests: float
    openai_per_request: float
    bastion_per_request: float
    basis: str  # "observed": both sides served; "bastion tokens": OpenAI's cost from them

    @property
    def monthly_saving(self) -> float:
        return (self.openai_per_request - self.bastion_per_request) * self.monthly_requests


@dataclass(frozen=True, slots=True)
class TokenReport:
    groups: list[TokenGroup]
    comparisons: list[Comparison]
    reported: int
    unreported: int
    currency: str
    priced: bool  # a price table was given
    costs: list[CostLine]
    savings: list[SavingRow]
    window_s: float

    @property
    def monthly_saving(self) -> float | None:
        return sum(s.monthly_saving for s in self.savings) if self.savings else None


def price_for(model: str | None, prices: Mapping[str, Price]) -> Price | None:
    if not model:
        return None
    if model in prices:
        return prices[model]
    return next((p for pattern, p in prices.items() if fnmatch.fnmatchcase(model, pattern)),
                None)


def served_model(record: Record) -> str | None:
    """The model that served. On OpenAI that is the app's model (or the dated snapshot
    OpenAI named, which newer logs record as upstream_model); older logs put there the
    model Bastion *would* have used, which never served it."""
    app_model = record.model if record.model != "-" else None
    if record.destination == OPENAI:
        upstream = record.upstream_model
        if app_model and upstream and upstream != app_model and upstream.startswith(app_model):
            return upstream
        return app_model
    return record.upstream_model or app_model


def priced_model(record: Record) -> str | None:
    """The model whose price applies: the one that served (the app's model on OpenAI:
    price tables name the alias, not the snapshot)."""
    if record.destination == OPENAI:
        return record.model if record.model != "-" else None
    return served_model(record)


def cost_of(tokens: Tokens, price: Price) -> float:
    return (tokens.input * price.input + tokens.output * price.output) / 1_000_000


def _served(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if r.destination in SERVED and r.status is not None
            and 200 <= r.status < 300]


def _cost(records: Iterable[Record], prices: Mapping[str, Price]) -> float | None:
    total, any_priced = 0.0, False
    for r in records:
        price = price_for(priced_model(r), prices)
        if r.tokens is not None and price is not None:
            total += cost_of(r.tokens, price)
            any_priced = True
    return total if any_priced else None


def _mean_cost(records: list[Record], prices: Mapping[str, Price],
               model_of: str | None = None) -> float | None:
    """Mean cost per request over records with usage and a price (`model_of`: price
    them all as that model instead of the one that served)."""
    costs = []
    for r in records:
        price = price_for(model_of or priced_model(r), prices)
        if r.tokens is not None and price is not None:
            costs.append(cost_of(r.tokens, price))
    return sum(costs) / len(costs) if costs else None


def build_tokens(records: list[Record], prices: Mapping[str, Price] | None = None,
                 currency: str = "USD") -> TokenReport:
    prices = prices or {}
    served = _served(records)
    window_s = ((records[-1].time - records[0].time).total_seconds()
                if len(records) > 1 else 0.0)
    by_group: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in served:
        by_group[(r.endpoint, r.model, r.destination)].append(r)
    groups = []
    for (endpoint, model, destination), members in sorted(by_group.items()):
        upstream = Counter(m for m in map(served_model, members) if m)
        groups.append(TokenGroup(endpoint, model, destination,
                                 upstream.most_common(1)[0][0] if upstream else None,
                                 stats_of(members), _cost(members, prices)))
    by_app: dict[tuple[str, str], dict[str, list[Record]]] = defaultdict(
        lambda: defaultdict(list))
    for r in served:
        by_app[(r.app or "(no app)", r.endpoint)][r.destination].append(r)
    comparisons = [Comparison(app, endpoint, stats_of(sides[BASTION]), stats_of(sides[OPENAI]))
                   for (app, endpoint), sides in sorted(by_app.items())
                   if any(r.tokens for r in sides[BASTION]) and any(r.tokens for r in
                                                                    sides[OPENAI])]
    costs: list[CostLine] = []
    savings: list[SavingRow] = []
    if prices:
        for destination in SERVED:
            members = [r for r in served if r.destination == destination and r.tokens]
            priced = [r for r in members if price_for(priced_model(r), prices) is not None]
            if members:
                costs.append(CostLine(destination, len(priced), len(members) - len(priced),
                                      _cost(priced, prices) or 0.0))
        if window_s >= MIN_PROJECTION_S:
            savings = _savings(served, prices, window_s)
    reported = sum(1 for r in served if r.tokens is not None)
    return TokenReport(groups, comparisons, reported, len(served) - reported, currency,
                       bool(prices), costs, savings, window_s)


def _savings(served: list[Record], prices: Mapping[str, Price],
             window_s: float) -> list[SavingRow]:
    """Per app, endpoint and model: all of it on OpenAI against all of it on Bastion, at
    the observed request rate. OpenAI's cost per request is the observed one when OpenAI
    served some of it, else Bastion's token counts at the app's model's price."""
    by_key: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in served:
        by_key[(r.app or "(no app)", r.endpoint, r.model)].append(r)
    rows = []
    for (app, endpoint, model), members in sorted(by_key.items()):
        bastion = [r for r in members if r.destination == BASTION]
        openai = [r for r in members if r.destination == OPENAI]
        on_bastion = _mean_cost(bastion, prices)
        if on_bastion is None:
            continue
        on_openai, basis = _mean_cost(openai, prices), "observed"
        if on_openai is None:
            on_openai, basis = _mean_cost(bastion, prices, model), "bastion tokens"
        if on_openai is None:
            continue
        rows.append(SavingRow(app, endpoint, model, len(members) * MONTH_S / window_s,
                              on_openai, on_bastion, basis))
    return rows
