"""A run's artifact as a report people read: amounts as they are spoken ($343.3M), failures listed.

Exact values stay in the database; this is only what the Prefect UI shows for a flow run.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence

_UNITS = ((Decimal("1e12"), "T"), (Decimal("1e9"), "B"), (Decimal("1e6"), "M"), (Decimal("1e3"), "K"))
SHOWN_PROBLEMS = 10


def usd(amount: Decimal | None) -> str:
    """$343.3M, $5.5K, $12.50, -$1.2M; an em dash for no value."""
    if amount is None:
        return "—"
    sign, value = ("-" if amount < 0 else ""), abs(amount)
    for size, unit in _UNITS:
        if value >= size:
            return f"{sign}${value / size:,.1f}{unit}"
    return f"{sign}${value:,.2f}"


def percent(fraction: Decimal | None) -> str:
    return "—" if fraction is None else f"{fraction * 100:.1f}%"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(title: str, counts: dict[str, int], problems: Sequence[str], top: Sequence[dict],
           total_tvl: Decimal | None = None, failure: str | None = None) -> str:
    """Markdown: the outcome, the counts, the first problems, the largest vaults."""
    lines = [f"# {title}", ""]
    if failure:
        lines += [f"**Failed:** {_cell(failure)}", ""]
    lines.append(" · ".join(f"**{name}** {value}" for name, value in counts.items()))
    if total_tvl is not None:
        lines += ["", f"Total TVL, each dollar once (child vaults are inside their parent): **{usd(total_tvl)}**"]
    if problems:
        lines += ["", f"## Problems ({len(problems)})", ""]
        lines += [f"- {_cell(p)}" for p in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"- … and {len(problems) - SHOWN_PROBLEMS} more in the run's log")
    if top:
        lines += ["", f"## Top {len(top)} vaults by TVL", "", "| vault | TVL | APR | address |", "|---|---:|---:|---|"]
        for v in top:
            name = _cell(v["name"]) + (f" (incl. {v['children']} child vaults)" if v.get("children") else "")
            lines.append(f"| {name} | {usd(v['tvl'])} | {percent(v['apr'])} | `{v['address']}` |")
    return "\n".join(lines) + "\n"
