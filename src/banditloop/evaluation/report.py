"""An evaluation as an operator reads it: a table, and a plot of reward over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .jobs import series


def table(result: dict[str, Any]) -> str:
    """One row per policy: SNIPS with its interval, IPS, DR, events and what they rest
    on (effective sample size, events without support, largest weight); a policy the
    logs cannot evaluate shows why instead of numbers."""
    rows = [
        "| policy | source | expected reward (SNIPS) | 95% interval | IPS | DR | events "
        "| ESS | no support | max weight |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["policies"]:
        s = p["summary"]
        low, high = s["confidenceInterval"]
        est = s["estimators"]
        dg = s.get("diagnostics") or {}
        star = " (optimal)" if p["name"] == result.get("optimalPolicy") else ""
        if dg.get("estimable", True):
            values = (
                f"{_f(s['expectedReward'])} | [{_f(low)}, {_f(high)}] | "
                f"{_f(est['ips']['expectedReward'])} | {_f(est['dr']['expectedReward'])}"
            )
        else:
            values = f"{dg['reason']} | | |"
        rows.append(
            f"| {p['name']}{star} | {p['policySource']} | {values} | {s['events']} | "
            f"{_f(dg.get('effectiveSampleSize'), 1)} | {dg.get('missingSupportEvents', '')} | "
            f"{_f(dg.get('maxImportanceWeight'), 1)} |"
        )
    return "\n".join(rows)


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def plot(result: dict[str, Any], path: Path, interval_minutes: int = 60) -> Path:
    """Expected reward per policy over time (expanding window) with its interval, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import dates
    except ImportError as ex:
        raise RuntimeError("plots need matplotlib: pip install 'banditloop[report]'") from ex
    import datetime as dt

    fig, ax = plt.subplots(figsize=(9, 5))
    curves = [(p["name"], series(p, interval_minutes, "Expanding")) for p in result["policies"]]
    if max((len(points) for _, points in curves), default=0) <= 1:
        # one interval: compare the policies side by side
        names = [name for name, points in curves if points]
        values = [points[-1] for _, points in curves if points]
        ys = [q["expectedReward"] or 0.0 for q in values]
        err = [
            [y - (q["confidenceInterval"][0] or y) for y, q in zip(ys, values, strict=True)],
            [(q["confidenceInterval"][1] or y) - y for y, q in zip(ys, values, strict=True)],
        ]
        ax.bar(names, ys, yerr=err, capsize=4, color="tab:blue", alpha=0.7)
        ax.tick_params(axis="x", rotation=30)
    else:
        for name, points in curves:
            stamps = [
                dt.datetime.fromisoformat(q["timeStamp"].replace("Z", "+00:00")) for q in points
            ]
            xs = list(dates.date2num(stamps))  # type: ignore[no-untyped-call]
            ys = [q["expectedReward"] for q in points]
            low = [q["confidenceInterval"][0] or y for q, y in zip(points, ys, strict=True)]
            high = [q["confidenceInterval"][1] or y for q, y in zip(points, ys, strict=True)]
            line = ax.plot(xs, ys, marker="o", label=name)[0]
            ax.fill_between(xs, low, high, alpha=0.15, color=line.get_color())
        ax.xaxis_date()
        ax.legend(fontsize="small")
        fig.autofmt_xdate()
    ax.set_ylabel("expected reward (SNIPS) with 95% interval")
    ax.set_title(f"Counterfactual evaluation ({result['events']} events)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
