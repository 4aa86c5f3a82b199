"""Number and time formatting shared by the terminal table, the verdicts and the page."""

from __future__ import annotations

from datetime import datetime


def ms(value: float | None) -> str:
    """Compact milliseconds for people: 0.4 ms, 812 ms, 1.40 s, 14.2 s."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 10_000:
        return f"{value / 1000:.2f} s"
    return f"{value / 1000:.1f} s"


def ms_exact(value: float | None) -> str:
    """Milliseconds with one decimal, for the terminal table."""
    return "-" if value is None else f"{value:.1f}"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float) -> str:
    """A duration as 45s, 12m 5s, 3h 20m or 2d 4h."""
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 line`, `2 lines`, `1,024 lines`."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
