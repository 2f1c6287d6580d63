"""Turn one run's data into bench/results/<name>.md, PNG plots and the bench/README.md section.

Every number written here comes from the run's data (run.json); nothing is typed in by hand.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LEVEL = {
    "direct": "none (1 server)",
    "haproxy-rr": "connection",
    "haproxy-lc": "connection",
    "tcp-rr": "connection",
    "in-process": "request",
    "in-process-1": "none (1 server, in-process client)",
    "sidecar": "request",
    "sidecar-1": "none (1 server, via the sidecar)",
}
ORDER = list(LEVEL)
MIX_ORDER = ["read", "write", "js-read"]
MIX_LABEL = {"read": "read", "write": "write", "js-read": "read, JS driver"}
BEGIN = "<!-- compare-bench:begin -->"
END = "<!-- compare-bench:end -->"
HEADING = "## Connection-level vs request-level balancing"

# -- formatting ----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(values: Sequence[float | None], digits: int = 2) -> str:
    """`median (min-max)`, or one value when there is one."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return _f(present[0], digits)
    med = statistics.median(present)
    return f"{med:.{digits}f} ({min(present):.{digits}f}-{max(present):.{digits}f})"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _seconds(value: float | None, never: str = "never") -> str:
    return never if value is None else f"{value:.2f} s"


def deviation(counts: Sequence[int]) -> float | None:
    """Largest distance of a server's count from the mean, as a fraction of the mean."""
    if not counts or sum(counts) == 0:
        return None
    mean = sum(counts) / len(counts)
    return max(abs(c - mean) for c in counts) / mean


# -- grouping ------------------------------------------------------------------------------------


def steady_groups(cells: list[dict[str, Any]]) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        if cell["scenario"] == "steady":
            groups[(cell["mix"], cell["workers"], cell["contender"])].append(cell)
    return groups


def scenario_cells(cells: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    found = [c for c in cells if c["scenario"] == name]
    return sorted(found, key=lambda c: ORDER.index(c["contender"]))


def _group_medians(group: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    return (
        _median([c["metrics"]["p50"] for c in group]),
        _median([c["metrics"]["throughput"] for c in group]),
    )


def sidecar_aims(cells: list[dict[str, Any]], workers: int = 16) -> dict[str, Any] | None:
    """The sidecar's latency and throughput aims against direct (read mix, medians over reps).

    As the issue states them: sidecar (3 servers) against direct (1 server). And the hop alone:
    sidecar-1 (the sidecar in front of server 1 only) against direct.
    """
    groups = steady_groups(cells)
    direct = groups.get(("read", workers, "direct"))
    sidecar = groups.get(("read", workers, "sidecar"))
    if not direct or not sidecar:
        return None
    p50_direct, tp_direct = _group_medians(direct)
    p50_sidecar, tp_sidecar = _group_medians(sidecar)
    if p50_direct is None or p50_sidecar is None or not tp_direct or tp_sidecar is None:
        return None
    result: dict[str, Any] = {
        "workers": workers,
        "p50_added_ms": p50_sidecar - p50_direct,
        "throughput_ratio": tp_sidecar / tp_direct,
    }
    result["met"] = result["p50_added_ms"] <= 0.3 and result["throughput_ratio"] >= 0.8
    one = groups.get(("read", workers, "sidecar-1"))
    if one:
        p50_one, tp_one = _group_medians(one)
        if p50_one is not None and tp_one is not None:
            result["hop_p50_added_ms"] = p50_one - p50_direct
            result["hop_throughput_ratio"] = tp_one / tp_direct
            result["hop_met"] = (
                result["hop_p50_added_ms"] <= 0.3 and result["hop_throughput_ratio"] >= 0.8
            )
    return result


def sidecar_missed(cells: list[dict[str, Any]]) -> list[str]:
    """The sidecar's latency/throughput aims it missed (p50 at 1 and 16 workers, throughput at
    16), against direct, as the sidecar over 3 servers and as the hop alone (sidecar-1)."""
    missed: list[str] = []
    for workers in (1, 16):
        found = sidecar_aims(cells, workers)
        if found is None:
            continue
        for prefix, label in (("", "sidecar"), ("hop_", "sidecar-1 (the hop alone)")):
            added = found.get(f"{prefix}p50_added_ms")
            ratio = found.get(f"{prefix}throughput_ratio")
            if added is not None and added > 0.3:
                missed.append(f"{label}: p50 {added:+.2f} ms against direct at {_workers(workers)}")
            if workers == 16 and ratio is not None and ratio < 0.8:
                missed.append(f"{label}: {100 * ratio:.0f}% of direct's throughput at 16 workers")
    return missed


# -- profile -------------------------------------------------------------------------------------


def summarize_profile(raw: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    # frames on (nearly) every stack are the process's entry and the event loop: not news
    roots = {name for name, n in inclusive.items() if n >= 0.85 * total}
    categories: Counter[str] = Counter()
    for name, n in own.items():
        categories[_category(name)] += n
    return {
        "samples": total,
        "roots": sorted(roots),
        "categories": [(name, 100.0 * n / total) for name, n in categories.most_common()],
        "self": [(name, 100.0 * n / total) for name, n in own.most_common(top)],
        "inclusive": [
            (name, 100.0 * n / total) for name, n in inclusive.most_common() if name not in roots
        ][:top],
    }


def _category(frame: str) -> str:
    """Where a sample's own (self) time went, in a few buckets."""
    if frame.startswith("WebSocketWriter._write_websocket_frame"):
        return "socket writes (aiohttp's frame writer: transport.write, i.e. send(2))"
    if frame.startswith("Runner.run "):
        return "the event loop's C code (uvloop: polling, socket reads, callbacks)"
    if "gremlinlb/" in frame or "core/" in frame:
        return "gremlinlb's own Python code (routing, parsing headers, balancing)"
    if "aiohttp/" in frame or "_websocket/" in frame:
        return "aiohttp's other Python code (reading frames, HTTP, queues)"
    if "asyncio/" in frame:
        return "asyncio's Python code"
    return "other"


def _frame(text: str) -> str:
    """`func (path/to/file.py:12)` -> `func (pkg/file.py)`: short, stable names."""
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", text.strip())
    if not match:
        return text.strip()
    function, path = match.groups()
    parts = Path(path).parts
    for anchor in ("site-packages", "python3.11", "sidecar", "src"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            tail = (
                parts[index + 1 :]
                if anchor in ("site-packages", "python3.11", "src")
                else parts[index:]
            )
            if anchor == "sidecar":
                tail = ("gremlinlb", *tail)
            return f"{function} ({'/'.join(tail)})"
    return f"{function} ({'/'.join(parts[-2:])})"


# -- plots ---------------------------------------------------------------------------------------


def plots(data: dict[str, Any], out_dir: Path, name: str) -> list[tuple[str, str]]:
    """Write the PNGs; returns (file name, caption) pairs. Needs matplotlib (the bench extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        return []
    cells: list[dict[str, Any]] = data["cells"]
    written: list[tuple[str, str]] = []
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    contenders = [c for c in ORDER if any(x["contender"] == c for x in cells)]

    # 1. per-server share over time, steady read cells at 16 workers, repetitions side by side
    steady = [c for c in cells if c["scenario"] == "steady" and c["mix"] == "read"]
    workers = (
        16
        if any(c["workers"] == 16 for c in steady)
        else max((c["workers"] for c in steady), default=0)
    )
    if steady:
        fig, axes = plt.subplots(
            len(contenders), 1, figsize=(9, 1.6 * len(contenders) + 0.6), sharex=True, squeeze=False
        )
        for ax, contender in zip(axes[:, 0], contenders, strict=True):
            reps = sorted(
                (c for c in steady if c["contender"] == contender and c["workers"] == workers),
                key=lambda c: c["rep"],
            )
            offset = 0.0
            for cell in reps:
                _share_lines(ax, cell, offset, 3, colors, label=offset == 0.0)
                offset += cell["duration"]
                ax.axvline(offset, color="grey", lw=0.5)
            ax.axhline(1 / 3, color="black", lw=0.6, ls=":")
            ax.set_ylim(0, 1.02)
            ax.set_ylabel(contender, rotation=0, ha="right", va="center", fontsize=9)
        axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
        axes[-1, 0].set_xlabel(
            "seconds (repetitions one after another; each starts new client connections)"
        )
        fig.suptitle(
            f"Share of requests per server over time, steady read mix, {workers} workers "
            "(dotted: even share)",
            fontsize=10,
        )
        fig.tight_layout()
        file = f"{name}-share-steady.png"
        fig.savefig(out_dir / file, dpi=90)
        plt.close(fig)
        written.append((file, "per-server share of requests over time, steady state"))

    # 2. per-server share over time while a 4th server is added
    added = scenario_cells(cells, "add")
    if added:
        fig, axes = plt.subplots(
            len(added), 1, figsize=(9, 1.6 * len(added) + 0.6), sharex=True, squeeze=False
        )
        for ax, cell in zip(axes[:, 0], added, strict=True):
            _share_lines(ax, cell, 0.0, 4, colors, label=True)
            for offset, _label in cell["events"]:
                ax.axvline(offset, color="black", lw=0.8, ls="--")
            ax.axhline(1 / 4, color="black", lw=0.6, ls=":")
            ax.set_ylim(0, 1.02)
            ax.set_ylabel(cell["contender"], rotation=0, ha="right", va="center", fontsize=9)
        axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
        axes[-1, 0].set_xlabel("seconds (dashed: server 4 put into rotation; dotted: 1/4)")
        fig.suptitle("Share of requests per server while a 4th server is added", fontsize=10)
        fig.tight_layout()
        file = f"{name}-share-add.png"
        fig.savefig(out_dir / file, dpi=90)
        plt.close(fig)
        written.append((file, "per-server share over time when a 4th server is added"))

    # 3. latency distributions (CDF), steady cells, all repetitions pooled
    panels = sorted(
        {(c["mix"], c["workers"]) for c in cells if c["scenario"] == "steady"},
        key=lambda p: (MIX_ORDER.index(p[0]), p[1]),
    )
    if panels:
        palette = plt.get_cmap("tab10")
        color = {name: palette(i) for i, name in enumerate(ORDER)}
        columns_n = min(3, len(panels))
        rows_n = (len(panels) + columns_n - 1) // columns_n
        fig, axes = plt.subplots(
            rows_n,
            columns_n,
            figsize=(4.4 * columns_n, 3.2 * rows_n + 0.8),
            squeeze=False,
            sharey=True,
        )
        for index, (mix, count) in enumerate(panels):
            ax = axes[index // columns_n, index % columns_n]
            for contender in contenders:
                lat = sorted(
                    x
                    for c in cells
                    if c["scenario"] == "steady"
                    and c["contender"] == contender
                    and c["mix"] == mix
                    and c["workers"] == count
                    for x in c["latencies"]
                )
                if lat:
                    ys = [(i + 1) / len(lat) for i in range(len(lat))]
                    ax.plot(lat, ys, label=contender, lw=1.2, color=color[contender])
            ax.set_xscale("log")
            ax.set_title(f"{MIX_LABEL[mix]}, {_workers(count)}", fontsize=9)
            ax.set_xlabel("latency (ms, log)")
            ax.grid(alpha=0.3)
        for index in range(len(panels), rows_n * columns_n):
            axes[index // columns_n, index % columns_n].set_visible(False)
        for row in range(rows_n):
            axes[row, 0].set_ylabel("fraction of requests")
        handles = [Line2D([], [], color=color[c], lw=1.6, label=c) for c in contenders]
        fig.legend(handles=handles, loc="lower center", ncol=len(contenders), fontsize=8)
        fig.suptitle("Latency distribution (CDF), steady state, repetitions pooled", fontsize=10)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        file = f"{name}-latency.png"
        fig.savefig(out_dir / file, dpi=90)
        plt.close(fig)
        written.append((file, "latency distributions (CDF) per contender"))

    # 4. faults: successful and failed requests per second over time
    faults = [s for s in ("kill", "hang", "slow", "outage") if scenario_cells(cells, s)]
    columns = [
        c
        for c in contenders
        if any(x["contender"] == c for s in faults for x in scenario_cells(cells, s))
    ]
    if faults and columns:
        fig, axes = plt.subplots(
            len(faults),
            len(columns),
            figsize=(2.9 * len(columns), 2.2 * len(faults) + 0.6),
            squeeze=False,
            sharex="row",
        )
        for row, scenario in enumerate(faults):
            by_name = {c["contender"]: c for c in scenario_cells(cells, scenario)}
            peak = max((max(_totals(c)) for c in by_name.values() if _totals(c)), default=1.0)
            for col, contender in enumerate(columns):
                ax = axes[row, col]
                found = by_name.get(contender)
                if found is None:
                    ax.set_visible(False)
                    continue
                bucket = found["series"]["bucket"]
                ok = _totals(found)
                failed = [f / bucket for f in found["series"]["failed"]]
                ok.append(ok[-1] if ok else 0.0)
                failed.append(failed[-1] if failed else 0.0)
                xs = [i * bucket for i in range(len(ok))]
                ax.step(xs, ok, where="post", color="#2ca02c", label="ok req/s")
                ax.step(xs, failed, where="post", color="#d62728", label="failed req/s")
                for offset, _label in found["events"]:
                    ax.axvline(offset, color="black", lw=0.8, ls="--")
                for back in found.get("back", []):
                    ax.axvline(back, color="#1f77b4", lw=0.6, ls=":")
                ax.set_ylim(0, peak * 1.1)
                if row == 0:
                    ax.set_title(contender, fontsize=9)
                if col == 0:
                    ax.set_ylabel(scenario, fontsize=9)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(
            "Requests per second (by start time) around faults; dashed: fault/repair, "
            "dotted: a server answers again",
            fontsize=10,
        )
        fig.tight_layout()
        file = f"{name}-faults.png"
        fig.savefig(out_dir / file, dpi=90)
        plt.close(fig)
        written.append((file, "successful and failed requests per second around each fault"))

    # 5. gray failures: p50 and p99 latency over time while a server is hung or slow
    gray = [s for s in ("hang", "slow") if scenario_cells(cells, s)]
    if gray:
        palette = plt.get_cmap("tab10")
        fig, axes = plt.subplots(
            1, len(gray), figsize=(6.5 * len(gray), 3.8), squeeze=False, sharey=True
        )
        for ax, scenario in zip(axes[0], gray, strict=True):
            for cell in scenario_cells(cells, scenario):
                tint = palette(ORDER.index(cell["contender"]))
                bucket = cell["series"]["bucket"]
                for key, style in (("p99", "-"), ("p50", ":")):
                    values = cell["series"].get(key, [])
                    xs = [i * bucket for i, v in enumerate(values) if v is not None]
                    ys = [v for v in values if v is not None]
                    label = cell["contender"] if key == "p99" else None
                    ax.step(xs, ys, where="post", ls=style, color=tint, lw=1.1, label=label)
            first = scenario_cells(cells, scenario)[0]
            for offset, _label in first["events"]:
                ax.axvline(offset, color="black", lw=0.8, ls="--")
            ax.axhline(1000 if scenario == "hang" else 150, color="grey", lw=0.6, ls="-.")
            ax.set_yscale("log")
            ax.set_title(f"server 2 {'hung' if scenario == 'hang' else 'slow'}", fontsize=9)
            ax.set_xlabel("seconds (dashed: fault starts / ends; dash-dot: the aim's limit)")
            ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel("latency ms (solid p99, dotted p50)")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(
            "Latency of successful requests per 0.5 s (by start time), hung and slow server",
            fontsize=10,
        )
        fig.tight_layout()
        file = f"{name}-gray.png"
        fig.savefig(out_dir / file, dpi=90)
        plt.close(fig)
        written.append((file, "p50 and p99 latency over time with a hung and a slow server"))
    return written


def _totals(cell: dict[str, Any]) -> list[float]:
    per = cell["series"]["per_server"]
    bucket = cell["series"]["bucket"]
    return [sum(col) / bucket for col in zip(*per, strict=True)] if per else []


def _share_lines(
    ax: Any, cell: dict[str, Any], offset: float, servers: int, colors: list[str], label: bool
) -> None:
    per = cell["series"]["per_server"][:servers]
    bucket = cell["series"]["bucket"]
    totals = [sum(col) for col in zip(*per, strict=True)]
    xs = [offset + i * bucket for i in range(len(totals) + 1)]
    for index, counts in enumerate(per):
        ys = [c / t if t else 0.0 for c, t in zip(counts, totals, strict=True)]
        ys.append(ys[-1] if ys else 0.0)
        ax.step(
            xs,
            ys,
            where="post",
            color=colors[index % len(colors)],
            lw=1.1,
            label=f"server {index + 1}" if label else None,
        )


# -- markdown ------------------------------------------------------------------------------------


def steady_table(cells: list[dict[str, Any]]) -> list[str]:
    groups = steady_groups(cells)
    lines = [
        "| mix | workers | contender | balances | req/s | p50 ms | p95 ms | p99 ms "
        "| max/mean share | failed | balancer CPU % | balancer RSS MiB | client CPU % |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mix, workers, contender in sorted(
        groups, key=lambda k: (MIX_ORDER.index(k[0]), k[1], ORDER.index(k[2]))
    ):
        group = groups[(mix, workers, contender)]
        m = [c["metrics"] for c in group]
        r = [c["resources"] for c in group]
        share = _spread([x["max_over_mean"] for x in m])
        if contender == "direct":
            share += " ¹"
        lines.append(
            f"| {MIX_LABEL[mix]} | {workers} | {contender} | {LEVEL[contender]} "
            f"| {_spread([x['throughput'] for x in m], 0)} "
            f"| {_spread([x['p50'] for x in m])} | {_spread([x['p95'] for x in m])} "
            f"| {_spread([x['p99'] for x in m])} | {share} | {sum(x['failed'] for x in m)} "
            f"| {_spread([x['balancer_cpu_pct'] for x in r], 0)} "
            f"| {_spread([x['balancer_rss_mib'] for x in r], 0)} "
            f"| {_spread([x['client_cpu_pct'] for x in r], 0)} |"
        )
    return lines


def add_table(cells: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| contender | balances | first request on server 4 | server 4 reaches 80% of an even "
        "share (0.5 s window) | server 4 share, last 2 s | max/mean of 4, last 2 s | failed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for cell in scenario_cells(cells, "add"):
        a = cell["analysis"]
        share = a["new_server_share_last_2s"]
        lines.append(
            f"| {cell['contender']} | {LEVEL[cell['contender']]} "
            f"| {_seconds(a['first_request_after'], 'never (in the window)')} "
            f"| {_seconds(a['share_after'], 'never (in the window)')} "
            f"| {'-' if share is None else f'{100 * share:.1f}%'} "
            f"| {_f(a['max_over_mean_last_2s'])} | {cell['metrics']['failed']} |"
        )
    return lines


def fault_table(cells: list[dict[str, Any]], name: str) -> list[str]:
    if name == "outage":
        head = (
            "| contender | balances | failed (lost) requests | served after waiting "
            "| first server answers again | failed ≥ 2 s after that | recovered after "
            "| max latency ms | req/s before / last 2 s |"
        )
    elif name in ("hang", "slow"):
        state = "hung" if name == "hang" else "slow"
        head = (
            f"| contender | balances | failed | stalled (> 1 s) | req/s before / while {state} / "
            f"last 2 s | while {state} ÷ before | p99 ms before | p50 / p99 / max ms of requests "
            f"started while {state} | longest read-only request ms (failed too) "
            "| recovered after |"
        )
    else:
        head = (
            "| contender | balances | failed | failed % | req/s before / after the kill / "
            "last 2 s | new requests unaffected after | recovered after |"
        )
    lines = [head, "|---|---|" + "---:|" * (head.count("|") - 3)]
    for cell in scenario_cells(cells, name):
        a = cell["analysis"]
        first = f"| {cell['contender']} | {LEVEL[cell['contender']]} "
        recovered = _seconds(a["recovered_after"], "not by the end")
        unaffected = _seconds(a["last_disrupted_start"], "not by the end")
        before, last = _f(a["throughput_before"], 0), _f(a["throughput_last_2s"], 0)
        if name == "outage":
            lines.append(
                f"{first}| {a['failed']} | {a['served_after_waiting']} "
                f"| {_seconds(a['servers_back_after'], 'not in the window')} "
                f"| {a.get('failed_after_back', '-')} | {recovered} "
                f"| {_f(a['max_latency'], 0)} | {before} / {last} |"
            )
        elif name in ("hang", "slow"):
            during = _f(a["throughput_during"], 0)
            lines.append(
                f"{first}| {a['failed']} | {a['stalled']} | {before} / {during} / {last} "
                f"| {_percent(a.get('throughput_ratio'))} | {_f(a.get('p99_before'), 1)} "
                f"| {_f(a.get('p50_during'), 1)} / "
                f"{_f(a.get('p99_during'), 1)} / {_f(a.get('max_during'), 0)} "
                f"| {_longest_read(a)} | {recovered} |"
            )
        else:
            during = _f(a["throughput_during"], 0)
            lines.append(
                f"{first}| {a['failed']} | {a['failed_pct']:.1f}% | {before} / {during} / {last} "
                f"| {unaffected} | {recovered} |"
            )
    return lines


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.0f}%"


def _longest_read(analysis: dict[str, Any]) -> str:
    """The longest read-only request, failed ones included; unanswered ones are longer still."""
    text = _f(analysis.get("max_read_latency"), 0)
    unfinished = analysis.get("reads_unfinished", 0)
    return f"{text} (+{unfinished} never answered)" if unfinished else text


#: Issue 8's aims for a hung and a slow server: (throughput share of before, latency limit ms,
#: which latency, wording).
GRAY_AIMS: dict[str, tuple[float, float, str, str]] = {
    "hang": (
        0.70,
        1000.0,
        "max_read_latency",
        "server hung {hang:g} s: throughput ≥ 70% of before, no read-only request over 1 s",
    ),
    "slow": (
        0.80,
        150.0,
        "p99_during",
        "server slow (+{slow_ms:g} ms for {slow:g} s): throughput ≥ 80% of before, p99 < 150 ms",
    ),
}


def gray_verdict(name: str, analysis: dict[str, Any]) -> tuple[str, bool]:
    """(what was measured, whether the aim was met) for a hang or slow cell."""
    share, limit, key, _ = GRAY_AIMS[name]
    ratio = analysis.get("throughput_ratio")
    latency = analysis.get(key)  # absent in runs from before issue 8
    unanswered = name == "hang" and analysis.get("reads_unfinished", 0) > 0
    met = (
        ratio is not None
        and ratio >= share
        and latency is not None
        and (latency <= limit if name == "hang" else latency < limit)
        and not unanswered
    )
    if name == "hang":
        measured = f"{_percent(ratio)} of before; longest read {_longest_read(analysis)} ms"
    else:
        measured = (
            f"{_percent(ratio)} of before; p99 {_f(latency, 1)} ms (before the fault "
            f"{_f(analysis.get('p99_before'), 1)}; p50 {_f(analysis.get('p50_during'), 1)}, max "
            f"{_f(analysis.get('max_during'), 0)})"
        )
    return measured, met


def aims(data: dict[str, Any]) -> list[str]:
    cells: list[dict[str, Any]] = data["cells"]
    interval = data["settings"]["health"]["interval"]
    lines = ["| aim | contender | measured | verdict |", "|---|---|---|---|"]
    groups = steady_groups(cells)
    # 1. share within 5% of even, per client kind
    for mixes, client in ((("read", "write"), "gremlinpython"), (("js-read",), "JS driver")):
        for contender in ORDER[1:-1]:
            devs = [
                deviation(c["metrics"]["counts"][:3])
                for key, group in groups.items()
                if key[2] == contender and key[0] in mixes
                for c in group
            ]
            present = [d for d in devs if d is not None]
            if not present:
                continue
            worst = max(present)
            request_level = LEVEL[contender] == "request"
            verdict = ("met" if worst <= 0.05 else "not met") if request_level else "(comparison)"
            lines.append(
                f"| share per server within 5% of even ({client}, worst of {len(present)} "
                f"steady cells) | {contender} | {100 * worst:.1f}% off even (median "
                f"{100 * statistics.median(present):.1f}%) | {verdict} |"
            )
    # 2. added server
    for cell in scenario_cells(cells, "add"):
        a = cell["analysis"]
        first = a["first_request_after"]
        request_level = LEVEL[cell["contender"]] == "request"
        if request_level:
            verdict = "met" if first is not None and first <= interval else "not met"
        else:
            verdict = "(comparison)"
        lines.append(
            f"| server added mid-run gets traffic within one health interval ({interval:g} s) "
            f"| {cell['contender']} | first request after {_seconds(first)}; "
            f"80% of an even share after {_seconds(a['share_after'])} | {verdict} |"
        )
    # 3. kill and outage
    for cell in scenario_cells(cells, "kill"):
        failed = cell["analysis"]["failed"]
        request_level = LEVEL[cell["contender"]] == "request"
        verdict = ("met" if failed == 0 else "not met") if request_level else "(comparison)"
        lines.append(
            f"| zero failed read-only requests when a server is killed | {cell['contender']} "
            f"| {failed} failed | {verdict} |"
        )
    for cell in scenario_cells(cells, "outage"):
        failed = cell["analysis"]["failed"]
        request_level = LEVEL[cell["contender"]] == "request"
        verdict = ("met" if failed == 0 else "not met") if request_level else "(comparison)"
        lines.append(
            f"| zero lost requests in a total outage (buffer: 1000 requests, 1 MiB, 30 s) "
            f"| {cell['contender']} | {failed} lost, {cell['analysis']['served_after_waiting']} "
            f"served after waiting | {verdict} |"
        )
    # 4. gray failures: a hung and a slow server (issue 8)
    words = {
        "hang": data["settings"]["hang"],
        "slow": data["settings"].get("slow", 0.0),
        "slow_ms": 1000 * data["settings"].get("slow_delay", 0.0),
    }
    for name in ("hang", "slow"):
        for cell in scenario_cells(cells, name):
            measured, met = gray_verdict(name, cell["analysis"])
            request_level = LEVEL[cell["contender"]] == "request"
            verdict = ("met" if met else "not met") if request_level else "(comparison)"
            aim = GRAY_AIMS[name][3].format(**words)
            lines.append(f"| {aim} | {cell['contender']} | {measured} | {verdict} |")
    # 5. sidecar latency and throughput
    for workers in sorted({k[1] for k in groups}):
        found = sidecar_aims(cells, workers)
        if found is None:
            continue
        judged = workers in (1, 16)

        def mark(ok: bool, judged: bool = judged) -> str:
            return ("met" if ok else "not met") if judged else "(reference)"

        hop_ok = found.get("hop_p50_added_ms", 0.0) <= 0.3 and (
            workers != 16 or found.get("hop_throughput_ratio", 1.0) >= 0.8
        )
        lines.append(
            f"| sidecar adds at most 0.3 ms at p50 ({_workers(workers)}, read; sidecar over 3 "
            f"servers vs direct to 1) | sidecar | {found['p50_added_ms']:+.2f} ms "
            f"| {mark(found['p50_added_ms'] <= 0.3)} |"
        )
        lines.append(
            f"| sidecar keeps at least 80% of direct throughput ({_workers(workers)}, read) "
            f"| sidecar | {100 * found['throughput_ratio']:.0f}% "
            f"| {mark(found['throughput_ratio'] >= 0.8, workers == 16)} |"
        )
        if "hop_p50_added_ms" in found:
            lines.append(
                f"| the hop alone: sidecar-1 (server 1 only) vs direct ({_workers(workers)}, read) "
                f"| sidecar-1 | p50 {found['hop_p50_added_ms']:+.2f} ms, throughput "
                f"{100 * found['hop_throughput_ratio']:.0f}% "
                f"| {mark(hop_ok)} |"
            )
    # 6. the in-process client's throughput (issue 10)
    for workers in (16, 64):
        ratios = in_process_ratios(cells, workers)
        if not ratios:
            continue
        for name, ratio in ratios.items():
            judged = name == "in-process"
            verdict = ("met" if ratio >= 0.85 else "not met") if judged else "(reference)"
            what = "over 3 servers" if judged else "over server 1 only: the client's own cost"
            lines.append(
                f"| in-process client keeps at least 85% of direct throughput "
                f"({_workers(workers)}, read; {what}) | {name} | {100 * ratio:.0f}% | {verdict} |"
            )
    return lines


def in_process_ratios(cells: list[dict[str, Any]], workers: int) -> dict[str, float]:
    """Throughput of the in-process client (over 3 servers, and over server 1 only) against
    direct, read mix, medians over the repetitions."""
    groups = steady_groups(cells)
    direct = groups.get(("read", workers, "direct"))
    _, tp_direct = _group_medians(direct) if direct else (None, None)
    if not tp_direct:
        return {}
    ratios: dict[str, float] = {}
    for name in ("in-process", "in-process-1"):
        group = groups.get(("read", workers, name))
        tp = _group_medians(group)[1] if group else None
        if tp is not None:
            ratios[name] = tp / tp_direct
    return ratios


def profile_section(profile: dict[str, Any] | None) -> list[str]:
    if profile is None:
        return ["Not run (`--no-profile`, or the sidecar did not take part)."]
    if "skipped" in profile:
        return [f"Not run: {profile['skipped']}."]
    lines = [
        "Run because the sidecar missed: " + "; ".join(profile.get("missed", [])) + ".",
        "",
        f"py-spy 0.4.3 sampled the sidecar at 250 Hz during one extra read cell with 16 workers "
        f"({profile['samples']} samples, sidecar CPU {profile['sidecar_cpu_pct']:.0f}% of one "
        "core; this cell is not part of the tables above).",
        "",
        "| where the samples' own time went | % of samples |",
        "|---|---:|",
        *[f"| {name} | {share:.1f} |" for name, share in profile.get("categories", [])],
        "",
        "| function (self time) | % of samples |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {share:.1f} |" for name, share in profile["self"]]
    lines += [
        "",
        "Self time of `Runner.run` is time inside the event loop's own C code (uvloop: polling, "
        "socket reads and writes, transport buffers); py-spy attributes it to the Python frame "
        "that entered the loop.",
        "",
        "| function (inclusive: itself and what it calls; the entry frames on every stack left "
        "out) | % of samples |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {share:.1f} |" for name, share in profile["inclusive"]]
    return lines


def build(data: dict[str, Any], out_dir: Path, name: str) -> tuple[str, str]:
    """Write the plots; return (results markdown, README summary)."""
    info = data["info"]
    cells: list[dict[str, Any]] = data["cells"]
    opts = data["options"]
    figures = plots(data, out_dir, name)
    m = info["machine"]
    others = [c["resources"]["others_cpu_pct"] for c in cells if c["scenario"] == "steady"]
    busy = [c["resources"]["machine_busy_pct"] for c in cells if c["scenario"] == "steady"]
    h = data["settings"]["health"]
    r = data["settings"]["readiness"]
    md: list[str] = [
        f"# Connection-level vs request-level balancing: {name}",
        "",
        "Produced by one run of `bench/compare/run.py`; every number below comes from that run.",
        "",
        "```",
        data["command"],
        "```",
        "",
        "## Machine and run",
        "",
        f"- {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}, kernel {m['kernel']}",
        f"- Python {m['python']}; {m['java']}; {m['haproxy']}; Apache TinkerPop Gremlin Server "
        f"{m['tinkerpop']} (TinkerTransactionGraph, 256 MiB heap, 1 worker thread, gremlinPool 2)",
        f"- started {info['started']}, {info['seconds'] / 60:.1f} minutes of measuring",
        f"- load average before: {' / '.join(f'{x:.2f}' for x in info['load_before'])}, "
        f"after: {' / '.join(f'{x:.2f}' for x in info['load_after'])}; 1-minute samples every "
        f"15 s: {', '.join(f'{x:.1f}' for x in info['load_samples']) or '-'}",
        f"- whole machine busy during steady windows: median {_f(_median(busy), 0)}% of "
        f"{m['cores']} cores; processes not started by the benchmark used a median "
        f"{_f(_median(others), 0)}% of one core (max {_f(max(others, default=None), 0)}%)",
    ]
    for label, key in (("before", "busy_before"), ("after", "busy_after")):
        procs = info.get(key) or []
        if procs:
            text = "; ".join(f"{p['cpu_pct']}% `{p['command'][:60]}`" for p in procs[:5])
            md.append(f"- other processes using CPU {label} the run: {text}")
    for failed in info.get("failed_cells", []):
        md.append(f"- **a cell broke and is missing from the tables**: {failed}")
    if info["skipped"]:
        for contender, reason in info["skipped"].items():
            md.append(f"- **{contender} did not take part**: {reason}")
    md += [
        "",
        "## What was measured",
        "",
        "- 3 Gremlin Servers on loopback (plus a 4th for the scale-out scenario), each with the "
        f"same {data['settings']['people']} people and 3 `knows` edges each; every answer carries "
        "the address of the server that produced it, so the share per server is counted from "
        "the answers.",
        f"- Clients: gremlinpython with its default pool of {data['settings']['pool_size']} "
        "connections; one client process per 8 workers (1 worker: 1 client, 16: 2, 64: 8), "
        "closed loop (each worker sends its next request when the last one is answered; after "
        "an error it waits 0.1 s).",
        "- read mix: 70% point lookups, 25% two-hop traversals (limit 10), 5% a 300-result "
        "range streamed in 5 frames (four 206 + 200). write mix: 50% property updates, 50% "
        "`mergeV` upserts. read, JS driver: the read mix from the JavaScript driver (gremlin "
        "on npm, 3.8.2), whose workers all send on the driver's single WebSocket connection "
        "(multiplexed, as the Java, .NET and Go drivers do).",
        f"- steady cells: {opts['warmup']:g} s warm-up then {opts['steady_duration']:g} s "
        f"measured, {opts['reps']} repetition(s), contenders interleaved in each repetition; "
        "new client connections for every cell. Tables give the median and (min-max) over the "
        "repetitions.",
        f"- fault scenarios: {opts['scenario_workers']} workers, read mix, one run each; the "
        f"fault at +{data['settings']['fault_at']:g} s of the window.",
        f"- health checks, wherever a contender has them: every {h['interval']:g} s, timeout "
        f"{h['timeout']:g} s, fall {h['fall']}, rise {h['rise']}; tcp-rr (kube-proxy-like) "
        f"has a TCP readiness probe with the kubelet defaults (every {r['interval']:g} s, fall "
        f"{r['fall']}).",
        "- balancer CPU: percent of one core used by the balancer process during the window "
        "(HAProxy, sidecar); the in-process balancer runs inside the clients, so compare its "
        "client CPU with direct's. RSS: peak resident memory of the balancer process.",
        "",
        "Contenders:",
        "",
    ]
    for contender, description in info["contenders"].items():
        md.append(f"- **{contender}** ({LEVEL[contender]}): {description}")
    md += ["", "## Steady state", ""]
    md += steady_table(cells)
    md += [
        "",
        "¹ direct sends everything to one server by design: its share column is not a "
        "balancing result.",
        "",
    ]
    if scenario_cells(cells, "add"):
        md += ["## A 4th server added mid-run", "", *add_table(cells), ""]
    titles = {
        "kill": "One server killed (SIGKILL) mid-run",
        "hang": "One server hung (SIGSTOP for {hang:g} s, then SIGCONT)",
        "slow": "One server slow (answers {slow_ms:g} ms late for {slow:g} s; probes still pass)",
        "outage": "All servers down (killed, started again {outage:g} s later)",
    }
    slow_ms = 1000 * data["settings"].get("slow_delay", 0.0)
    for scenario in ("kill", "hang", "slow", "outage"):
        if scenario_cells(cells, scenario):
            title = titles[scenario].format(slow_ms=slow_ms, **data["settings"])
            md += [f"## {title}", "", *fault_table(cells, scenario), ""]
            if scenario == "slow":
                md += [
                    "Server 2 sits behind a TCP proxy (`gremlinlb.devservers.faults.FaultProxy`, "
                    "in the benchmark's own process) for the whole cell, so the cell's before and "
                    "after pass through it too; while slow, the proxy passes every byte the "
                    "server sends on late, probes included, and the server stays healthy.",
                    "",
                ]
    md += [
        "A request is disrupted when it failed or took more than 1 s and was still running at "
        'the fault or started after it. "new requests unaffected after": seconds from the fault '
        'to the start of the last disrupted request; "recovered after": to the end of the last '
        'one; "not by the end": requests still failed or stalled in the last 2 s of the window. '
        '"req/s": successful requests per second by start time. "while hung ÷ before" and '
        '"while slow ÷ before": throughput of the requests started during the fault against '
        "those started in the same cell before it (the same client connections); every request "
        "of these cells is read-only.",
        "",
        "## Against the aims",
        "",
    ]
    md += aims(data)
    profile = info.get("profile")
    if profile and profile.get("missed") and "--force-profile" not in profile["missed"][0]:
        profile = {**profile, "missed": sidecar_missed(cells)}  # same data, current wording
    md += ["", "## Sidecar profile", "", *profile_section(profile)]
    md += ["", "## Plots", ""]
    for file, caption in figures:
        md += [f"![{caption}]({file})", ""]
    errors: Counter[str] = Counter()
    for cell in cells:
        for message, count in cell["metrics"]["errors"].items():
            errors[f"{cell['contender']}: {message}"] += count
    if errors:
        md += ["## Errors seen by the clients", "", "| contender: error | count |", "|---|---:|"]
        md += [f"| {k.replace('|', '/')} | {v} |" for k, v in errors.most_common(25)]
        md.append("")
    md += ["## Log", "", "```", *data["log"], "```", ""]
    summary = readme_summary(data, name, figures)
    return "\n".join(md), summary


def _workers(count: int) -> str:
    return f"{count} worker" + ("" if count == 1 else "s")


def readme_summary(data: dict[str, Any], name: str, figures: list[tuple[str, str]]) -> str:
    cells: list[dict[str, Any]] = data["cells"]
    info = data["info"]
    groups = steady_groups(cells)
    others = [c["resources"]["others_cpu_pct"] for c in cells if c["scenario"] == "steady"]
    lines = [
        f"From [`bench/results/{name}.md`](results/{name}.md): {info['machine']['cores']} cores "
        f"({info['machine']['cpu']}), {info['seconds'] / 60:.1f} minutes of measuring; processes "
        f"outside the benchmark used a median {_f(_median(others), 0)}% of one core during the "
        f"measured windows (max {_f(max(others, default=None), 0)}%). Read mix, 16 workers; "
        "steady figures are medians over the repetitions (min-max in the results file).",
        "",
        "| contender | balances | req/s | p50 ms | max/mean share, gremlinpython "
        "| max/mean share, JS driver (1 connection) | server added: first request after "
        "| server killed: failed requests | server hung 5 s: req/s before / while hung "
        "| all servers down: lost requests |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    scen = {
        s: {c["contender"]: c["analysis"] for c in scenario_cells(cells, s)}
        for s in ("add", "kill", "hang", "outage")
    }
    for contender in ORDER:
        group = groups.get(("read", 16, contender))
        if not group:
            continue
        m = [c["metrics"] for c in group]
        js = [c["metrics"] for c in groups.get(("js-read", 16, contender), [])]
        note = " ¹" if contender in ("direct", "sidecar-1", "in-process-1") else ""
        add = scen["add"].get(contender)
        kill = scen["kill"].get(contender)
        hang = scen["hang"].get(contender)
        outage = scen["outage"].get(contender)
        hung = (
            "-"
            if hang is None
            else f"{_f(hang['throughput_before'], 0)} / {_f(hang['throughput_during'], 0)}"
        )
        lines.append(
            f"| {contender} | {LEVEL[contender]} | {_f(_median([x['throughput'] for x in m]), 0)} "
            f"| {_f(_median([x['p50'] for x in m]))} "
            f"| {_f(_median([x['max_over_mean'] for x in m]))}{note} "
            f"| {_f(_median([x['max_over_mean'] for x in js]))}{note if js else ''} "
            f"| {'-' if add is None else _seconds(add['first_request_after'])} "
            f"| {'-' if kill is None else kill['failed']} "
            f"| {hung} "
            f"| {'-' if outage is None else outage['failed']} |"
        )
    lines += ["", "¹ one server by design.", ""]
    lines += gray_summary(data)
    lines += ["Against the aims (request-level contenders):", ""]
    aim_rows = [
        row for row in aims(data)[2:] if "(comparison)" not in row and "(reference)" not in row
    ]
    for row in aim_rows:
        cells_text = [x.strip() for x in row.strip("|").split("|")]
        if len(cells_text) == 4:
            aim, contender, measured, verdict = cells_text
            lines.append(f"- {aim}, {contender}: {measured} ({verdict})")
    lines.append("")
    for file, caption in figures:
        lines.append(f"- [{caption}](results/{file})")
    return "\n".join(lines)


def gray_summary(data: dict[str, Any]) -> list[str]:
    """Issue 8's table: a hung and a slow server, every contender that ran them."""
    cells: list[dict[str, Any]] = data["cells"]
    by = {
        name: {c["contender"]: c["analysis"] for c in scenario_cells(cells, name)}
        for name in ("hang", "slow")
    }
    if not by["hang"] and not by["slow"]:
        return []
    settings = data["settings"]
    slow_ms = 1000 * settings.get("slow_delay", 0.0)
    lines = [
        f"Gray failures ({data['options']['scenario_workers']} workers, read mix; throughput "
        "against the same cell before the fault): "
        f"server 2 hung (SIGSTOP) for {settings['hang']:g} s; server 2's answers "
        f"{slow_ms:g} ms late for {settings.get('slow', 0.0):g} s (probes still pass).",
        "",
        "| contender | hung: req/s while ÷ before | hung: longest read-only request ms "
        "| slow: req/s while ÷ before | slow: p99 ms before | slow: p50 / p99 / max ms while "
        "| slow: longest read-only request ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for contender in ORDER:
        hang, slow = by["hang"].get(contender), by["slow"].get(contender)
        if hang is None and slow is None:
            continue
        lines.append(
            f"| {contender} "
            f"| {'-' if hang is None else _percent(hang.get('throughput_ratio'))} "
            f"| {'-' if hang is None else _longest_read(hang)} "
            f"| {'-' if slow is None else _percent(slow.get('throughput_ratio'))} "
            + (
                "| - | - | - |"
                if slow is None
                else f"| {_f(slow.get('p99_before'), 1)} "
                f"| {_f(slow.get('p50_during'), 1)} / {_f(slow.get('p99_during'), 1)} / "
                f"{_f(slow.get('max_during'), 0)} | {_longest_read(slow)} |"
            )
        )
    return [*lines, ""]


def update_readme(path: Path, summary: str) -> None:
    """Replace this benchmark's section of bench/README.md, leaving every other section alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{summary}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    elif HEADING in text:
        text = text.replace(HEADING, f"{HEADING}\n\n{block}\n", 1)
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")
