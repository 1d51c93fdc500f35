"""Turning a serve benchmark result (``bench.run_benchmark``'s dict) into a table, a Markdown table
and a PNG plot."""

from __future__ import annotations

import io

COLUMNS = [
    ("max_batch_size", "batch", "{:d}"),
    ("batch_wait", "wait", "{}"),
    ("concurrency", "conc", "{:d}"),
    ("requests", "reqs", "{:d}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p95_ms", "p95 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("replica_p50_ms", "in replica p50", "{:.1f}"),
    ("throughput_rps", "req/s", "{:.2f}"),
    ("error_rate", "errors", "{:.1%}"),
    ("mean_batch_size", "mean batch", "{:.2f}"),
    ("bare_p50_ms", "bare p50 ms", "{:.1f}"),
    ("overhead_ratio", "p50 / bare", "{:.2f}"),
]


def _cells(row: dict) -> list[str]:
    return [fmt.format(row[key]) for key, _, fmt in COLUMNS]


def table(result: dict) -> str:
    """Fixed-width text table, one line per grid point, plus the headline ratio."""
    rows = [[title for _, title, _ in COLUMNS]] + [_cells(r) for r in result["grid"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ["", headline(result)])


def headline(result: dict) -> str:
    ratio = result.get("overhead_ratio_c1")
    singles = [r["p50_ms"] for r in result["bare"] if r["batch_size"] == 1]
    text = f"bare model, one request in-process: p50 {min(singles):.1f} ms" if singles else "bare model: not timed"
    if ratio is not None:
        text += f"; Serve at concurrency 1: p50 / bare p50 = {ratio:.2f}"
    by_wait = result.get("overhead_ratio_c1_by_wait") or {}
    if len(by_wait) > 1:
        text += " (" + ", ".join(f"{w} wait {r:.2f}" for w, r in by_wait.items()) + ")"
    return text


def markdown(result: dict) -> str:
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cells(r)) + " |" for r in result["grid"]]
    return "\n".join([head, rule, *body])


def plot_png(result: dict) -> bytes:
    """Latency percentiles and throughput against concurrency, one colour per max batch size; the
    bare model's p50 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = sorted({(r["max_batch_size"], r.get("batch_wait", "fixed")) for r in result["grid"]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (size, wait) in zip(colours, series):
        rows = sorted((r for r in result["grid"] if (r["max_batch_size"], r.get("batch_wait", "fixed")) == (size, wait)),
                      key=lambda r: r["concurrency"])
        b = f"{size} {wait}"
        c = [r["concurrency"] for r in rows]
        ax_lat.plot(c, [r["p50_ms"] for r in rows], "o-", color=colour, label=f"p50, batch {b}")
        ax_lat.fill_between(c, [r["p50_ms"] for r in rows], [r["p99_ms"] for r in rows], color=colour, alpha=0.15)
        ax_lat.plot(c, [r["p95_ms"] for r in rows], "^:", color=colour, label=f"p95, batch {b}")
        ax_lat.plot(c, [r["bare_p50_ms"] for r in rows], "--", color=colour, alpha=0.6, label=f"bare p50, batch {b}")
        ax_tp.plot(c, [r["throughput_rps"] for r in rows], "o-", color=colour, label=f"batch {b}")
    ax_lat.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)",
               title="latency (band: p50..p99)")
    ax_tp.set(xscale="log", xlabel="concurrent clients", ylabel="requests / s", title="throughput")
    for ax in (ax_lat, ax_tp):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    model = result.get("model", {})
    fig.suptitle(f"{model.get('name', '?')} on Ray Serve ({result.get('device', '')}), "
                 f"sampling={result.get('sampling', '?')}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
