"""Turns the raw lines of benches/compare/run into the results file (markdown) and its chart (PNG).

Input: the raw JSON lines (one per load run, with `target`, `scenario` and `round`, plus `kind`
lines for start-up, notes and the soak) and the run's meta JSON. The markdown needs only the
standard library; the chart needs matplotlib and is left out, with the reason, without it.
"""

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict

NAMES = {
    "direct": "direct to mock",
    "nginx": "nginx proxy_pass",
    "tollgate": "Tollgate",
    "litellm": "LiteLLM proxy",
    "portkey": "Portkey gateway",
}
ORDER = ["direct", "nginx", "tollgate", "litellm", "portkey"]
PEERS = ["litellm", "portkey"]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def signed(x):
    return "–" if x is None else ("+" if x >= 0 else "") + fmt(x)


def ratio(a, b):
    if a is None or b is None or b <= 0 or a < 0:
        return None
    return a / b


def fmt_ratio(r):
    if r is None:
        return "–"
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def sustained_of(lines, p99_max_ms):
    """The highest constant rate sustained in one round: achieved ≥ 97 % of offered, ≤ 0.1 %
    errors, p99 within the bound. Steps are tried from the highest down."""
    steps = sorted(lines, key=lambda l: -(l.get("offered_rps") or 0))
    for l in steps:
        ok = (
            l["rps"] >= 0.97 * l["offered_rps"]
            and l["errors"] <= 0.001 * max(l["requests"], 1)
            and l.get("p99_us") is not None
            and l["p99_us"] <= p99_max_ms * 1000
        )
        if ok:
            return l
    return None


def summarize(raw, meta):
    runs = defaultdict(list)  # (target, scenario) -> lines
    ladder = defaultdict(lambda: defaultdict(list))  # target -> round -> lines
    starts, notes, soak = {}, [], None
    for l in raw:
        kind = l.get("kind")
        if kind == "start":
            starts[l["target"]] = l
        elif kind == "note":
            notes.append(l)
        elif kind == "soak_rss":
            soak = l["samples"]
        elif kind is None:
            if l["scenario"].startswith("c64-rate-"):
                ladder[l["target"]][l["round"]].append(l)
            runs[(l["target"], l["scenario"])].append(l)

    def m(t, s, field):
        return median([l.get(field) for l in runs.get((t, s), [])])

    fig = {}
    for t in ORDER:
        if t not in starts:
            continue
        f = {
            "startup_ms": starts[t]["startup_ms"],
            "rss_idle_mb": starts[t]["rss_idle_kib"] * 1024 / 1e6,
            "idle_cores": starts[t].get("idle_cores"),
            "c1_rate": m(t, "c1", "offered_rps"),
            "p50": m(t, "c1", "p50_us"),
            "p90": m(t, "c1", "p90_us"),
            "p99": m(t, "c1", "p99_us"),
            "ttft50": m(t, "c1-stream", "ttfb_p50_us"),
            "ttft99": m(t, "c1-stream", "ttfb_p99_us"),
            "c64_rps": m(t, "c64", "rps"),
            "c64_p99": m(t, "c64", "p99_us"),
            "c64_errors": sum(l["errors"] for l in runs.get((t, "c64"), [])),
            "cpu": m(t, "c64", "cpu_us_per_req"),
            "stream_rps": m(t, "c64-stream", "rps"),
            "stream_cpu": m(t, "c64-stream", "cpu_us_per_req"),
            "stream_ttft99_c64": m(t, "c64-stream", "ttfb_p99_us"),
            "cpu_requests": m(t, "c64", "requests"),
            "c1_cpu": m(t, "c1", "cpu_us_per_req"),
            "errors": sum(l["errors"] for (tt, _), ls in runs.items() if tt == t for l in ls),
            "first_error": next(
                (l["first_error"] for (tt, _), ls in runs.items() if tt == t for l in ls if l.get("first_error")),
                None,
            ),
        }
        peaks = []
        for s in ["c64"] + [s for (tt, s) in runs if tt == t and s.startswith("c64-rate-")]:
            peaks += [l.get("rss_peak_kib") for l in runs.get((t, s), [])]
        peaks = [p for p in peaks if p is not None]
        f["rss_load_mb"] = max(peaks) * 1024 / 1e6 if peaks else None
        per_round = [sustained_of(ls, meta["p99max"]) for ls in ladder[t].values()]
        found = [l for l in per_round if l is not None]
        f["sustained_rps"] = median([l["rps"] for l in found]) if found else None
        f["sustained_p99"] = median([l["p99_us"] for l in found]) if found else None
        f["sustained_err"] = (
            median([l["errors"] / max(l["requests"], 1) * 100 for l in found]) if found else None
        )
        f["sustained_rounds"] = f"{len(found)}/{len(per_round)}"
        fig[t] = f
    d = fig.get("direct", {})
    for t, f in fig.items():
        for k in ("p50", "p90", "p99", "ttft50", "ttft99"):
            f["added_" + k] = None if f[k] is None or d.get(k) is None else f[k] - d[k]
    return fig, notes, soak, runs


# (key, label, unit, higher is better)
FIGURES = [
    ("added_p50", "added latency p50, c=1", "µs", False),
    ("added_p90", "added latency p90, c=1", "µs", False),
    ("added_p99", "added latency p99, c=1", "µs", False),
    ("added_ttft50", "added time to first token p50, c=1 stream", "µs", False),
    ("added_ttft99", "added time to first token p99, c=1 stream", "µs", False),
    ("sustained_rps", "max sustained RPS, c=64", "req/s", True),
    ("sustained_p99", "p99 at that rate", "µs", False),
    ("sustained_err", "error rate at that rate", "%", False),
    ("c64_rps", "closed-loop RPS, c=64", "req/s", True),
    ("cpu", "CPU per request (own process, all threads), c=64", "CPU-µs", False),
    ("stream_rps", "closed-loop RPS, c=64 stream", "req/s", True),
    ("stream_cpu", "CPU per streamed request (own process, all threads), c=64", "CPU-µs", False),
    ("stream_ttft99_c64", "time to first token p99, c=64 stream", "µs", False),
    ("rss_idle_mb", "RSS idle", "MB", False),
    ("idle_cores", "CPU used while idle (2 s after start-up)", "cores", False),
    ("rss_load_mb", "RSS under load (peak, c=64)", "MB", False),
    ("startup_ms", "start-up to first successful answer", "ms", False),
]


def soak_growth(samples):
    """RSS growth over the soak: mean of the last third minus mean of the first third, the first
    10 % of samples (warming up) left out. In MB."""
    if not samples or len(samples) < 6:
        return None, None, None
    xs = [s["kib"] * 1024 / 1e6 for s in samples][max(1, len(samples) // 10):]
    n = len(xs) // 3
    if n == 0:
        return None, None, None
    first, last = statistics.mean(xs[:n]), statistics.mean(xs[-n:])
    return first, last, last - first


def criterion_figures(path):
    """(name, estimate, unit) from `cargo bench` output; the name may be on the line before."""
    out, last_name = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^(\S.*?)\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
            if m:
                out.append((m.group(1).strip(), float(m.group(4)), m.group(5)))
                continue
            m = re.match(r"^\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
            if m and last_name:
                out.append((last_name, float(m.group(3)), m.group(4)))
                continue
            if line.strip() and not line.startswith(" ") and "time:" not in line:
                last_name = line.strip()
    return out


def report(raw, meta, args):
    fig, notes, soak, runs = summarize(raw, meta)
    present = [t for t in ORDER if t in fig]
    peers = [t for t in PEERS if t in fig]
    g, n = fig.get("tollgate", {}), fig.get("nginx", {})
    o = []
    w = o.append
    w(f"# Tollgate side by side, {meta['date']}")
    w("")
    w(
        "Tollgate against a plain nginx reverse proxy, LiteLLM's proxy and Portkey's gateway, all in front of"
        " the same mock provider and driven by the same load generator, on one machine in one run"
        " (`benches/compare/run`; `benches/README.md` says what each figure means)."
        f" {meta['rounds']} round(s), targets interleaved; medians over rounds."
        f" Load runs took {meta['elapsed']} s. Raw lines: `compare-{meta['date']}.jsonl`."
        + (" **Quick mode** (`QUICK=1`): fewer requests, one round, a short soak." if meta["quick"] else "")
    )
    w("")
    w("## Machine and versions")
    w("")
    w(meta["facts"])
    w(f"- load {meta['load']}")
    w(f"- LiteLLM {meta['litellm']} ({meta['python']}); Portkey gateway {meta['portkey']} (Node {meta['node']})")
    w("- load generator: `tollgate-load` (hyper, HTTP/1.1, one keep-alive connection per worker, 1 thread);"
      " latencies at a constant rate are timed from when each request was due (coordinated omission corrected)")
    w("")
    w("Busiest processes when the run began (others share these cores):")
    w("")
    w("```")
    w(meta["top"])
    w("```")
    w("")
    w("## Setup")
    w("")
    w("- **direct**: the mock provider, 1 worker, no added latency; its own CPU and memory are the upstream's cost.")
    w("- **nginx**: 1 worker process, keep-alive both sides, `proxy_buffering off`, no access log.")
    w(
        "- **Tollgate**: `gateway.workers: 1`; virtual-key auth (Bearer), gpt-4o-mini priced, every answer's"
        f" usage event spooled and produced to Kafka (topic `{meta['topic']}`, made for this run)."
        f" Events on the topic after the gateway drained: {meta['events']}, for {meta['sent']} requests sent."
    )
    if meta.get("budget"):
        w(f"  The bench key has a budget (`max_budget: {meta['budget']}`), so budget checks are in the path.")
    else:
        w(
            "  **Budget checks are not in the measured path**: virtual keys take no budget yet. `KEY_BUDGET` in"
            " `benches/lib.sh` is where the bench key gets one (`max_budget`) once they do."
        )
    w(
        "- **LiteLLM**: `litellm --num_workers 1`, no database, the same master key as the Bearer token"
        " (auth on), access log off, the price list it ships (`LITELLM_LOCAL_MODEL_COST_MAP`). Without a"
        " database it computes cost but keeps no spend log: less work than Tollgate's metering."
    )
    w(
        "- **Portkey**: `start-server.js --headless`, `NODE_ENV=production`, one Node process; routed by"
        " `x-portkey-provider: openai` and `x-portkey-custom-host`; it has no keys of its own (the Bearer token"
        " is passed to the mock) and meters nothing."
    )
    w(
        "- While one target is measured the other targets are paused (SIGSTOP), so an idle peer's background"
        " work does not share the cores; the mock and Kafka keep running."
    )
    w(
        f"- Runs: c=1 paced at half the rate one closed-loop connection reached (at most {meta['c1_rate']}/s),"
        f" {meta['c1']} timed requests (or fewer at the {meta['run_cap']} s cap); c=64 closed loop, {meta['c64']}"
        f" requests, for throughput and CPU per request; then constant rates from that throughput down"
        f" (100, 90, 75, 50, 25, 10 %), {meta['step']} s each, until one is sustained (≥ 97 % of the rate"
        f" achieved, ≤ 0.1 % errors, p99 ≤ {meta['p99max']} ms)."
    )
    w("")
    skipped = [x for x in notes if x["note"] == "skipped"]
    other = [x for x in notes if x["note"] != "skipped"]
    if skipped or other:
        w("## Skipped")
        w("")
        for x in skipped:
            w(f"- **{NAMES.get(x['target'], x['target'])}: skipped.** {x['text']}")
        for x in other:
            w(f"- {NAMES.get(x['target'], x['target'])}, {x['note']}: {x['text']}")
        w("")

    w("## Figures")
    w("")
    w("| figure | unit | " + " | ".join(NAMES[t] for t in present) + " |")
    w("|---|---|" + "--:|" * len(present))
    absolute = [
        ("p50", "latency p50, c=1", "µs"),
        ("p99", "latency p99, c=1", "µs"),
        ("ttft50", "time to first token p50, c=1 stream", "µs"),
        ("c1_rate", "c=1 rate (paced)", "req/s"),
    ]
    for key, label, unit in absolute:
        w(f"| {label} | {unit} | " + " | ".join(fmt(fig[t].get(key)) for t in present) + " |")
    for key, label, unit, _ in FIGURES:
        cells = []
        for t in present:
            v = fig[t].get(key)
            cells.append(signed(v) if key.startswith("added_") else fmt(v, 2 if key in ("sustained_err", "idle_cores") else 1))
        w(f"| {label} | {unit} | " + " | ".join(cells) + " |")
    w("")
    w(
        "Added latency is the target's percentile minus direct's in the same rounds. CPU per request is"
        " utime + stime of the process named in Setup (for nginx its worker), all threads, from `/proc`, over"
        " the timed requests of the c=64 closed-loop run, including the work each leaves behind."
    )
    w("")
    w("## Ratios")
    w("")
    w("Each figure as a multiple of nginx's (left) and Tollgate's as a multiple of each peer's (right);"
      " for latency, CPU, memory and start-up lower is better, for RPS higher.")
    w("")
    cols = [t for t in present if t not in ("direct", "nginx")]
    head = [f"{NAMES[t]} ÷ nginx" for t in cols] + [f"Tollgate ÷ {NAMES[p]}" for p in peers]
    w("| figure | " + " | ".join(head) + " |")
    w("|---|" + "--:|" * len(head))
    for key, label, _, _ in FIGURES:
        cells = [fmt_ratio(ratio(fig[t].get(key), n.get(key))) for t in cols]
        cells += [fmt_ratio(ratio(g.get(key), fig[p].get(key))) for p in peers]
        w(f"| {label} | " + " | ".join(cells) + " |")
    w("")

    # Aims.
    w("## Aims")
    w("")
    w("| aim | measured | verdict |")
    w("|---|---|---|")

    def verdict(ok):
        return "not measured" if ok is None else ("**met**" if ok else "**missed**")

    cpu = g.get("cpu")
    w(f"| ≤ 20 CPU-µs per request, metering on (c=64) | {fmt(cpu)} µs (nginx {fmt(n.get('cpu'))} µs) |"
      f" {verdict(None if cpu is None else cpu <= 20)} |")
    a, b = g.get("added_p99"), n.get("added_p99")
    ok = None if a is None or b is None else a <= 2 * max(b, 0)
    w(f"| added p99 ≤ 2 × nginx's (c=1) | {signed(a)} µs vs nginx {signed(b)} µs"
      f" ({fmt_ratio(ratio(a, b))}) | {verdict(ok)} |")
    lt = fig.get("litellm", {})
    r = ratio(g.get("sustained_rps"), lt.get("sustained_rps"))
    w(f"| ≥ 10 × LiteLLM's sustained RPS (c=64) | {fmt(g.get('sustained_rps'))} vs {fmt(lt.get('sustained_rps'))}"
      f" ({fmt_ratio(r)}) | {verdict(None if r is None else r >= 10)} |")
    idle = g.get("rss_idle_mb")
    w(f"| idle RSS ≤ 30 MB | {fmt(idle)} MB | {verdict(None if idle is None else idle <= 30)} |")
    first, last, growth = soak_growth(soak)
    soak_label = f"{meta['soak_secs']} s at {meta['soak_rate']} req/s"
    if meta["soak_secs"] < 600:
        soak_label += " (shorter than the 10 minutes the aim names: `SOAK_SECS=600`)"
    w(f"| no RSS growth at steady load ({soak_label}) | {fmt(first)} → {fmt(last)} MB ({signed(growth)} MB,"
      f" first vs last third) | {verdict(None if growth is None else growth <= 1.0)} |")
    w("")
    w("Growth counts as none up to 1 MB (allocator noise). Soak errors: "
      + str(sum(l["errors"] for l in runs.get(("tollgate", "soak"), []))) + ".")
    w("")
    failed = [t for t in present if fig[t]["errors"]]
    if failed:
        w("Failed requests: " + "; ".join(
            f"{NAMES[t]}: {fig[t]['errors']} (first: {fig[t]['first_error']})" for t in failed) + ".")
    else:
        w("No request failed in any run.")
    w("")
    repeated = sum(1 for l in raw if l.get("kind") is None and (l.get("attempts") or 1) > 1)
    kept = [l for l in raw if l.get("kind") is None and l.get("disturbed")]
    runs_n = sum(1 for l in raw if l.get("kind") is None)
    w(f"Runs repeated because another process disturbed them: {repeated}. "
      + ("No run kept in the figures was disturbed." if not kept else
         f"{len(kept)} of {runs_n} runs were kept although still disturbed (out of retries or of the"
         f" waiting budget): processes not under test used up to"
         f" {max(l['others_cores'] for l in kept):.2f} cores during them (median"
         f" {statistics.median(l['others_cores'] for l in kept):.2f}); the raw lines name each."))
    w("")
    if args.perf:
        w(f"Where Tollgate's CPU goes: a perf profile at c=64 is in `{args.perf}`.")
        w("")
    if args.criterion:
        figs = criterion_figures(args.criterion)
        if figs:
            w("## Micro-benchmarks (criterion)")
            w("")
            w("`cargo bench -p tollgate-gateway --bench hot_path -p tollgate-ledger-consumer --bench fold`,"
              " same machine, just before the load runs (estimate of the mean per iteration):")
            w("")
            w("| benchmark | time |")
            w("|---|--:|")
            for name, est, unit in figs:
                w(f"| {name} | {est:g} {unit} |")
            w("")
    chart_note = make_chart(fig, present, meta, args.chart) if args.chart else "no chart asked for"
    w(f"![Tollgate side by side]({args.chart.rsplit('/', 1)[-1]})" if chart_note is None else f"Chart: {chart_note}.")
    w("")
    return "\n".join(o)


def make_chart(fig, present, meta, path):
    """One panel a figure, bars per target, each labelled with its value and its multiple of
    nginx's. Returns None when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"not drawn ({e})"
    panels = [
        ("added_p50", "added latency p50, c=1 (µs)"),
        ("added_p99", "added latency p99, c=1 (µs)"),
        ("added_ttft50", "added TTFT p50, stream (µs)"),
        ("sustained_rps", "max sustained RPS, c=64"),
        ("cpu", "CPU-µs per request, c=64"),
        ("stream_cpu", "CPU-µs per streamed request, c=64"),
        ("rss_load_mb", "RSS under load (MB)"),
        ("startup_ms", "start-up (ms)"),
    ]
    colors = {"direct": "#999999", "nginx": "#4c72b0", "tollgate": "#dd8452", "litellm": "#55a868", "portkey": "#8172b2"}
    fig_, axes = plt.subplots(2, 4, figsize=(18, 8.5))
    for ax, (key, title) in zip(axes.flat, panels):
        ts = [t for t in present if fig[t].get(key) is not None and not (key.startswith("added_") and t == "direct")]
        vals = [max(fig[t][key], 0.1) for t in ts]
        bars = ax.bar([NAMES[t].replace(" ", "\n", 1) for t in ts], vals, color=[colors[t] for t in ts])
        ax.set_yscale("log")
        ax.set_title(title, fontsize=11)
        ax.tick_params(axis="x", labelsize=8)
        base = fig.get("nginx", {}).get(key)
        for b, t in zip(bars, ts):
            v = fig[t][key]
            r = ratio(v, base)
            label = fmt(v) + ("" if t == "nginx" or r is None else f"\n{fmt_ratio(r)} nginx")
            ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
        ax.margins(y=0.3)
    fig_.suptitle(
        f"Tollgate side by side, {meta['date']} — same mock, same load generator, one machine"
        f" ({meta['facts'].splitlines()[2].lstrip('- ')}); log scales, lower is better except RPS",
        fontsize=11,
    )
    fig_.tight_layout(rect=(0, 0, 1, 0.95))
    fig_.savefig(path, dpi=100)
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--raw", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--chart")
    p.add_argument("--perf")
    p.add_argument("--criterion")
    args = p.parse_args()
    with open(args.raw, encoding="utf-8") as f:
        raw = [json.loads(line) for line in f if line.strip()]
    with open(args.meta, encoding="utf-8") as f:
        meta = json.load(f)
    text = report(raw, meta, args)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
