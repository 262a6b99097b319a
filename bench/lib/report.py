"""Turning results into BENCHMARKS.md and the ratio chart (an SVG written by hand).

The ratio is always berth/peer, median over median. For times and memory (lower is better) a
ratio below 1 means berth wins (0.05 = berth takes 1/20 of the peer's time); for throughput
(higher is better) a ratio above 1 means berth wins.
"""

import html
import math


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        if abs(v) < 0.001:
            return f"{v * 1e6:.0f} µs"
        if abs(v) < 1:
            return f"{v * 1000:.3g} ms"
        return f"{v:.3g} s"
    if unit == "%":
        return f"{v:.3g}%"
    if isinstance(v, float):
        return f"{v:.3g} {unit}".strip()
    return f"{v} {unit}".strip()


def headline(summary, metric):
    return summary[metric.get("stat", "median")] if summary else None


def ratio_of(metric):
    b, p = metric.get("berth"), metric.get("peer")
    if not b or not p:
        return None
    hb, hp = headline(b, metric), headline(p, metric)
    if not hp:
        return None
    return hb / hp


def better(metric):
    """Whether berth beats its peer on this metric (None without a peer)."""
    r = metric.get("ratio")
    if r is None:
        return None
    return r < 1 if metric.get("lower_is_better", True) else r > 1


def verdict(metric):
    """"met", "MISSED: why", or None when the metric has no target."""
    t = metric.get("target")
    if not t or len(t) == 1:  # no target, or only its text (quick mode)
        return None
    b, unit = metric.get("berth"), metric["unit"]
    if not b:
        return "MISSED: berth has no samples"
    v, r = headline(b, metric), metric.get("ratio")
    stat = metric.get("stat", "median")
    if "max" in t and v > t["max"]:
        return f"MISSED: {stat} {fmt(v, unit)} > {fmt(t['max'], unit)}"
    if "min" in t and v < t["min"]:
        return f"MISSED: {stat} {fmt(v, unit)} < {fmt(t['min'], unit)}"
    if "equals" in t:
        bad = [s for s in metric["samples"]["berth"] if s != t["equals"]]
        if bad:
            return f"MISSED: {len(bad)} of {b['n']} samples were not {t['equals']} ({bad[:5]})"
    if "ratio_max" in t or "ratio_min" in t:
        if r is None:
            return "MISSED: no peer figure to compare with"
        if "ratio_max" in t and r > t["ratio_max"]:
            why = f"MISSED: berth/peer {r:.3g}, needs <= {t['ratio_max']:.3g}"
            if metric.get("lower_is_better", True) and r < 1 and t["ratio_max"] < 1:
                why += f" (berth is {1 / r:.3g}x better, the target asks {1 / t['ratio_max']:.3g}x)"
            return why
        if "ratio_min" in t and r < t["ratio_min"]:
            return f"MISSED: berth/peer {r:.3g}, needs >= {t['ratio_min']:.3g}"
    return "met"


def verdict_text(metric):
    """The verdict, with the scenario's explanation of a miss (from profiling) after it."""
    v = metric.get("verdict") or ""
    if v.startswith("MISSED") and metric.get("if_missed"):
        v += f". {metric['if_missed']}"
    return v


def _cell(summary, metric):
    if not summary:
        return "-"
    u = metric["unit"]
    return f"{fmt(headline(summary, metric), u)} ({fmt(summary['min'], u)} – {fmt(summary['max'], u)})"


def _ratio_cell(metric):
    r = metric.get("ratio")
    if r is None:
        return "-"
    b = better(metric)
    if metric.get("lower_is_better", True):
        hint = f"{1 / r:.3g}x faster" if metric["unit"] == "s" else f"{1 / r:.3g}x less"
        if not b:
            hint = f"{r:.3g}x slower" if metric["unit"] == "s" else f"{r:.3g}x more"
    else:
        hint = f"berth {r:.3g}x the peer"
    return f"{r:.3g} ({hint})"


PREAMBLE = """\
Each figure is the median of the samples (or the statistic the metric names, e.g. p99),
followed by (min – max). **berth/peer** is berth's median divided by the peer's, pair by pair:
for times and memory, below 1 means berth is better (0.05 = berth needs 1/20 of the peer's
time); for throughput, above 1 means berth is better. berth and its peer are sampled in the
same run, interleaved (A B A B ...), so machine drift hits both alike. This machine is shared
with other jobs: absolute figures vary 10-70% between runs; ratios within a run hold better.
A target is "met" or "MISSED" with the reason, from this run's figures.
"""


def runs(results):
    """The runs the report's figures come from, newest first: (when, run tag, berth commit,
    mode, scenarios). `bench/run --only` keeps the other scenarios' figures from earlier runs."""
    by_run = {}
    for key in results["order"]:
        sc = results["scenarios"].get(key)
        if sc is None:
            continue
        mode = f"{'quick' if sc.get('quick') else 'full'}, {sc.get('profile', '?')} build"
        k = (sc.get("when") or "?", sc.get("run"), sc.get("commit"), mode)
        by_run.setdefault(k, []).append(key)
    return [(*k, v) for k, v in sorted(by_run.items(), key=lambda kv: kv[0][0], reverse=True)]


def _run_name(run, commit):
    """`run <tag>, berth <commit>`; runs before bench/run recorded them have neither."""
    name = f"run `{run}`" if run else "a run whose tag was not recorded"
    return f"{name}, berth `{commit}`" if commit else name


def _run_of(sc):
    return _run_name(sc.get("run"), sc.get("commit"))


def headlines(results):
    """The figures a user meets, one line each: the metrics a scenario marks `headline`."""
    out = []
    for key in results["order"]:
        sc = results["scenarios"].get(key) or {}
        out += [(key, sc, m) for m in sc.get("metrics", []) if m.get("headline")]
    return out


def render(results, chart=None):
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run` from what it measured; do not edit by hand. One command reproduces",
        "it (as root, on Debian 12): `bench/run` (every scenario, release build, about",
        "10 minutes); `bench/run --only NAME` refreshes one scenario. Raw samples: `bench/out/results.json` (written by each run, not committed).",
        "",
        "## Machine and versions",
        "",
        f"- date: {results['date']}",
        f"- mode: {'quick (tiny sizes)' if results['quick'] else 'full'}, berth {results['profile']} build",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('arch')}",
        f"- os: {m.get('os')}, kernel {m.get('kernel')}",
    ]
    for name, version in sorted(results.get("versions", {}).items()):
        lines.append(f"- {name}: {version}")
    lines += ["", "Which run each figure comes from (`bench/run --only` refreshes some scenarios and",
              "keeps the others' figures from their last run; each section names its run too):", ""]
    for when, tag, commit, mode, keys in runs(results):
        lines.append(f"- {when}, {_run_name(tag, commit)}, {mode}: "
                     + ", ".join(f"`{k}`" for k in keys))
    heads = headlines(results)
    if heads:
        lines += ["", "## Headline figures", "",
                  "What a user meets, in the condition they meet it in (each scenario's section has",
                  "the other conditions, e.g. starts back to back).", "",
                  "| scenario | metric | berth | peer | berth/peer | target | result | from |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, sc, metric in heads:
            t = metric.get("target") or {}
            peer = metric.get("peer_name") or "-"
            if metric.get("peer"):
                peer += f": {_cell(metric['peer'], metric)}"
            lines.append(f"| `{key}` | {metric['name']} | {_cell(metric['berth'], metric)} | {peer} "
                         f"| {_ratio_cell(metric)} | {t.get('text', '')} | {metric.get('verdict') or ''} "
                         f"| {sc.get('when') or '?'} ({_run_of(sc)}) |")
    lines += ["", "## Reading the tables", "", PREAMBLE]
    if chart:
        lines += [f"![berth/peer per metric]({chart})", ""]
    verdicts = []
    for key in results["order"]:
        sc = results["scenarios"].get(key)
        if sc is None:
            continue
        for metric in sc.get("metrics", []):
            if metric.get("verdict"):
                verdicts.append((key, metric))
    if verdicts:
        lines += ["## Targets", "", "| scenario | metric | target | result |", "|---|---|---|---|"]
        for key, metric in verdicts:
            lines.append(f"| `{key}` | {metric['name']} | {metric['target'].get('text', '')} | {verdict_text(metric)} |")
        failed = [k for k in results["order"] if results["scenarios"].get(k, {}).get("error")]
        for k in failed:
            lines.append(f"| `{k}` | (all) | | DID NOT RUN: {results['scenarios'][k]['error'].splitlines()[0]} |")
        lines.append("")
    for key in results["order"]:
        sc = results["scenarios"].get(key)
        if sc is None:
            continue
        lines += [f"## {sc['title']} (`{key}`)", "", sc["description"], ""]
        when = sc.get("when")
        if when:
            lines += [f"Measured {when}{' (quick mode)' if sc.get('quick') else ''} in {_run_of(sc)}, "
                      f"{sc.get('profile', '?')} build.", ""]
        if sc.get("error"):
            lines += ["**Did not run:**", "", "```", sc["error"].strip(), "```", ""]
        if sc.get("metrics"):
            lines += [
                "| metric | berth | n | peer | peer figure | berth/peer | target | result |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for metric in sc["metrics"]:
                t = metric.get("target") or {}
                lines.append(
                    f"| {metric['name']} | {_cell(metric['berth'], metric)} | {metric['berth']['n'] if metric['berth'] else 0} "
                    f"| {metric.get('peer_name') or '-'} | {_cell(metric.get('peer'), metric)} "
                    f"| {_ratio_cell(metric)} | {t.get('text', '')} | {metric.get('verdict') or ''} |")
            lines.append("")
            notes = [m for m in sc["metrics"] if m.get("note")]
            for metric in notes:
                lines.append(f"- *{metric['name']}*: {metric['note']}")
            if notes:
                lines.append("")
        for problem in sc.get("cleanup", []):
            lines.append(f"- cleanup problem: `{problem}`")
    return "\n".join(lines).rstrip() + "\n"


def chart(results):
    """A horizontal bar chart of berth/peer on a log scale, one bar per metric with a peer."""
    rows = []
    for key in results["order"]:
        sc = results["scenarios"].get(key) or {}
        for metric in sc.get("metrics", []):
            if metric.get("ratio"):
                rows.append((key, metric))
    label_w, plot_w, row_h, top, bottom = 560, 380, 22, 58, 40
    height = top + row_h * max(1, len(rows)) + bottom
    width = label_w + plot_w + 90
    ratios = [m["ratio"] for _, m in rows] or [1]
    targets = []
    for _, m in rows:
        t = m.get("target") or {}
        targets += [t[k] for k in ("ratio_max", "ratio_min") if k in t]
    lo = 10 ** math.floor(math.log10(min(ratios + targets + [0.5])))
    hi = 10 ** math.ceil(math.log10(max(ratios + targets + [2])))

    def x(v):
        return label_w + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">berth / peer (median over median, log scale)</text>',
           f'<text x="10" y="38" fill="#555">green: berth better (times and memory below 1, throughput above 1); '
           f'red: worse; orange: its target missed; black tick: target. {html.escape(results["date"])}'
           f'{" (quick mode)" if results["quick"] else ""}</text>']
    decade = lo
    while decade <= hi * 1.0001:
        for mult in (1, 2, 5):
            v = decade * mult
            if v > hi * 1.0001:
                break
            xv = x(v)
            major = mult == 1
            out.append(f'<line x1="{xv:.1f}" y1="{top - 6}" x2="{xv:.1f}" y2="{height - bottom + 4}" '
                       f'stroke="{"#bbb" if major else "#eee"}"/>')
            if major or plot_w / max(1, math.log10(hi / lo)) > 120:
                out.append(f'<text x="{xv:.1f}" y="{height - bottom + 18}" text-anchor="middle" fill="#333">{v:g}</text>')
        decade *= 10
    x1 = x(1)
    out.append(f'<line x1="{x1:.1f}" y1="{top - 10}" x2="{x1:.1f}" y2="{height - bottom + 4}" stroke="#000" stroke-width="1.5"/>')
    for i, (key, m) in enumerate(rows):
        y = top + i * row_h
        r = m["ratio"]
        good = better(m)
        missed = (m.get("verdict") or "").startswith("MISSED")
        color = "#e8a33d" if missed else ("#2e9d4a" if good else "#d0433a")
        label = f"{key}: {m['name']} vs {m.get('peer_name')}"
        if len(label) > 92:
            label = label[:89] + "..."
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{html.escape(label)}</text>')
        xa, xb = sorted((x1, x(r)))
        out.append(f'<rect x="{xa:.1f}" y="{y + 4}" width="{max(1.0, xb - xa):.1f}" height="{row_h - 8}" fill="{color}"/>')
        t = m.get("target") or {}
        for k in ("ratio_max", "ratio_min"):
            if k in t:
                xt = x(t[k])
                out.append(f'<line x1="{xt:.1f}" y1="{y + 1}" x2="{xt:.1f}" y2="{y + row_h - 1}" stroke="#000" stroke-width="2"/>')
        # The figure goes right of the bar's outer end, or right of the 1-line for bars to its
        # left, where nothing else is drawn.
        out.append(f'<text x="{xb + 4:.1f}" y="{y + 15}" fill="#222">{r:.3g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
