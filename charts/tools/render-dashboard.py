#!/usr/bin/env python3
"""Draws a Confab Grafana dashboard as a PNG from a Prometheus's data.

Grafana is not needed: every panel's queries (variables substituted) are run
as range queries and drawn where the dashboard's grid puts them — time series
as lines, stats as their last value. It shows the data and the layout, not
Grafana's styling. Needs matplotlib (`pip install matplotlib`).

    render-dashboard.py --prometheus http://127.0.0.1:19090 \\
        --dashboard charts/confab/dashboards/overview.json \\
        --var namespace=chat-demo --var chatcluster=chat \\
        --start 1700000000 --end 1700000200 --out docs/images/dashboard-overview.png
"""

import argparse
import json
import math
import re
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.dates import DateFormatter  # noqa: E402

UNITS = {"s": "seconds", "ops": "per second", "reqps": "requests/s", "short": ""}


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "") or str(labels)


def fmt_value(v, unit):
    if unit == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    if unit in ("ops", "reqps"):
        return f"{v:.1f}/s"
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--var", action="append", default=[], help="name=value, e.g. namespace=chat")
    ap.add_argument("--start", type=float, required=True, help="unix seconds")
    ap.add_argument("--end", type=float, required=True, help="unix seconds")
    ap.add_argument("--step", default="5s")
    ap.add_argument("--rate-interval", default="30s", help="what $__rate_interval stands for")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    board = json.load(open(args.dashboard))
    variables = dict(v.split("=", 1) for v in args.var)
    variables["__rate_interval"] = args.rate_interval

    def substitute(expr):
        for name in sorted(variables, key=len, reverse=True):
            expr = expr.replace("$" + name, variables[name])
        return expr

    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_px = 0.32  # inches per grid unit of height
    fig = plt.figure(figsize=(18, rows * unit_px + 0.6), facecolor="#111217")
    fig.suptitle(f"{board['title']}   ({', '.join(args.var)})",
                 color="white", fontsize=14, x=0.01, ha="left")
    top = 1 - 0.6 / (rows * unit_px + 0.6)

    def axes_for(pos, pad=0.006):
        x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
        # A margin on the left for the tick labels of the first column.
        left, width = 0.035 + x / 24 * 0.96 + pad, w / 24 * 0.96 - 2 * pad - 0.02
        height = h / rows * top - 2 * pad * 2
        bottom = top - (y + h) / rows * top + pad * 2
        return fig.add_axes([left, bottom, width, height])

    for p in panels:
        if p["type"] == "row":
            x, y = 0, p["gridPos"]["y"]
            fig.text(0.006, top - (y + 0.6) / rows * top, p["title"], color="#ccccdc", fontsize=12, weight="bold")
            continue
        ax = axes_for(p["gridPos"])
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        unit = p["fieldConfig"]["defaults"].get("unit", "short")
        ax.set_title(p["title"], color="#ccccdc", fontsize=10, loc="left")
        series = []
        for t in p["targets"]:
            for s in query_range(args.prometheus, substitute(t["expr"]), args.start, args.end, args.step):
                points = [(float(ts), float(v)) for ts, v in s["values"] if math.isfinite(float(v))]
                if points:
                    series.append((legend(t.get("legendFormat"), s["metric"]), points))
        if p["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            last = series[0][1][-1][1] if series else float("nan")
            ax.text(0.5, 0.45, fmt_value(last, unit) if series else "no data", color="#73bf69",
                    fontsize=26, ha="center", va="center", transform=ax.transAxes, weight="bold")
            continue
        for name, points in series:
            xs = [datetime.fromtimestamp(ts, tz=timezone.utc) for ts, _ in points]
            ys = [v * 1000 if unit == "s" else v for _, v in points]
            ax.plot(xs, ys, linewidth=1.3, label=name)
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
        ax.set_ylabel("ms" if unit == "s" else UNITS.get(unit, unit), color="#9fa7b3", fontsize=7)
        ax.grid(color="#2c3235", linewidth=0.5)
        if series:
            ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#ccccdc",
                      ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", color="#9fa7b3", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(args.out, dpi=80, facecolor=fig.get_facecolor())


if __name__ == "__main__":
    main()
