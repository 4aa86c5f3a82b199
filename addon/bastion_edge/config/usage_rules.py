"""rules.yaml `usage:`: token accounting options and the user's own price table.

```yaml
usage:
  stream_usage: true        # ask streamed chat/completions for their usage chunk (default)
  currency: USD             # a label for the report, nothing is converted
  prices:                   # per million tokens, the user's own figures (optional)
    gpt-4o:       {input: 2.50, output: 10.00}
    gpt-oss-120b: {input: 0.15, output: 0.60}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bastion_edge.config.reader import Path_, Reader


class Price(NamedTuple):
    """What one million tokens cost, as the user wrote it."""

    input: float
    output: float


@dataclass(frozen=True, slots=True)
class UsageRules:
    stream_usage: bool = True
    currency: str = "USD"
    prices: Mapping[str, Price] = field(default_factory=dict)  # model id -> price


def _amount(reader: Reader, value: object, path: Path_) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise reader.fail(path, "expected a price per million tokens (a number >= 0)")
    return float(value)


def read_usage(reader: Reader, value: object, path: Path_) -> UsageRules:
    section: Mapping[str, Any] = reader.mapping(value, path)
    reader.only_keys(section, path, ("stream_usage", "currency", "prices"))
    rules = UsageRules()
    stream_usage = reader.boolean(section.get("stream_usage", True), (*path, "stream_usage"))
    currency = reader.string(section["currency"], (*path, "currency")) \
        if "currency" in section else rules.currency
    prices: dict[str, Price] = {}
    if section.get("prices") is not None:
        table = reader.mapping(section["prices"], (*path, "prices"))
        for model, entry in table.items():
            where = (*path, "prices", str(model))
            fields = reader.mapping(entry, where)
            reader.only_keys(fields, where, ("input", "output"))
            for name in ("input", "output"):
                if name not in fields:
                    raise reader.fail((*where, name), "missing: give input and output prices")
            prices[str(model)] = Price(_amount(reader, fields["input"], (*where, "input")),
                                       _amount(reader, fields["output"], (*where, "output")))
    return UsageRules(stream_usage, currency, prices)
