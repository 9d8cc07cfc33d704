"""The pure parts of the aggregation benchmark: its options, window sizes, the side-by-side table and its docs section.

``aggregate_throughput.py`` measures; this module reads its options, the aggregator's counters from its
exporter's samples and the memory limit of its manifest, and shapes the results (a dict, as written to
JSON) for people: the console table, the Markdown section of docs/performance.md, and what the
release of national-scale windows says about the size of window one aggregator holds.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path
from typing import Any

import yaml

SECTION = "## The router with the aggregator"
MIB = 2**20
# Kubernetes quantity suffixes of memory (binary and decimal).
_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must not be negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own options (``aggregate_throughput.py`` adds the broker and output ones)."""
    parser.add_argument("--receipts", type=_positive, default=20_000, help="simulated checkouts (default 20,000)")
    parser.add_argument("--days", type=_positive, default=3, help="past local days they are spread over (default 3)")
    parser.add_argument(
        "--grace-seconds",
        type=_not_negative,
        default=None,
        help="the aggregator's grace (default: the days' span, so that no window closes before all is read)",
    )
    parser.add_argument(
        "--idle-close-seconds", type=_positive, default=2, help="the aggregator's idle close (default 2 s)"
    )
    parser.add_argument(
        "--window-sizes",
        type=_positive,
        nargs="*",
        default=[50_000, 200_000],
        help="baskets of the chain-days release() runs on alone (default 50,000 and 200,000; none: skip)",
    )
    parser.add_argument(
        "--window-stores", type=_positive, default=400, help="stores of the chain of those days (default 400)"
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``aggregate_throughput.run`` from the parsed options."""
    return {
        "days": args.days,
        "grace": args.grace_seconds,
        "idle": args.idle_close_seconds,
        "window_sizes": tuple(args.window_sizes),
        "window_stores": args.window_stores,
    }


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (``1536Mi``, ``2G``, ``1048576``) in bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i|[kMGT])?\s*", text)
    if m is None:
        raise ValueError(f"not a memory quantity: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def memory_limit(path: Path) -> int | None:
    """The memory limit of the StatefulSet's container in a Kubernetes manifest (``deploy/k8s/aggregate.yaml``),
    in bytes; None when it sets none."""
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not doc or doc.get("kind") != "StatefulSet":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            limit = c.get("resources", {}).get("limits", {}).get("memory")
            if limit:
                return quantity_bytes(str(limit))
    return None


def aggregate_counts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, int]:
    """What an aggregator's exporter says it did: baskets read, windows closed, cells published, lates."""

    def total(name: str) -> int:
        return int(sum(v for (sample, _), v in samples.items() if sample == name))

    return {
        "read": total("receiptflow_consumed_total"),
        "windows_closed": total("receiptflow_analytics_windows_closed_total"),
        "cells_published": total("receiptflow_analytics_cells_published_total"),
        "late_baskets": total("receiptflow_analytics_late_baskets_total"),
    }


def window_sizes(sizes: list[int]) -> dict[str, float | int]:
    """Count, smallest, median and largest of the windows' basket counts."""
    if not sizes:
        return {"windows": 0, "min": 0, "median": 0, "max": 0}
    return {"windows": len(sizes), "min": min(sizes), "median": statistics.median(sizes), "max": max(sizes)}


def _mib(n: float | int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.0f}"


def _rate(n: float | None) -> str:
    return "-" if not n else f"{n:,.0f}"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(path, receipts/s, baskets/s, seconds, vs the router alone, the aggregator's peak RSS MiB) per path."""
    base = r["router_alone"]["receipts_per_s"]
    both = r["together"]
    paths = [
        ("router alone (same-run baseline)", r["router_alone"]["seconds"], False, None),
        ("aggregator alone, over the router's baskets", r["aggregator_alone"]["seconds"], True,
         r["aggregator_alone"].get("peak_rss_bytes")),
        ("router and aggregator at once, to the last cell committed", both["seconds"], True,
         both.get("peak_rss_bytes")),
    ]  # fmt: skip
    if both.get("router_seconds"):
        paths.append(
            (
                "at once, the router's part (to its last `purchases.customer` record)",
                both["router_seconds"],
                False,
                None,
            )
        )
    out = []
    for label, seconds, baskets, peak in paths:
        receipts_per_s = r["receipts"] / seconds
        out.append(
            (
                label,
                _rate(receipts_per_s),
                _rate(r["baskets"] / seconds if baskets else None),
                f"{seconds:,.1f}",
                f"{receipts_per_s / base:.2f}x",
                _mib(peak),
            )
        )
    return out


def scale(r: dict[str, Any]) -> str:
    """One sentence: the receipts, baskets, windows and baskets per window the run measured."""
    w = r["window_sizes"]
    return (
        f"{r['receipts']:,} receipts over {r['days']} past local days ({r['baskets']:,} baskets, the rest carry"
        f" no lines), {r['partitions']} partitions: {w['windows']} windows (chain and local date) of"
        f" {w['min']:,} to {w['max']:,} baskets (median {w['median']:,.0f}), {r['expected_cells']:,} cells"
        f" of at least k = {r['k']} baskets."
    )


def outcome(p: dict[str, Any], r: dict[str, Any]) -> str:
    """What the aggregator published in one phase, against what release() of the routed baskets gives."""
    same = "as" if p["cells_published"] == r["expected_cells"] else "*not* as"
    return (
        f"every basket read after {p['read_seconds']:,.1f} s, {p['windows_closed']} windows closed,"
        f" {p['cells_published']:,} cells published ({same} many as release() gives for the baskets read"
        f" back), {p['late_baskets']} late baskets"
    )


def console(r: dict[str, Any]) -> str:
    """The figures side by side with the baseline, as the benchmark prints them."""
    out = [scale(r), ""]
    out.append(f"{'path':<60}{'receipts/s':>12}{'baskets/s':>12}{'seconds':>10}{'vs router':>11}{'agg. MiB':>10}")
    for label, receipts, baskets, seconds, ratio, rss in rows(r):
        out.append(f"{label:<60}{receipts:>12}{baskets:>12}{seconds:>10}{ratio:>11}{rss:>10}")
    out += ["", f"aggregator alone: {outcome(r['aggregator_alone'], r)}"]
    out.append(f"at once: {outcome(r['together'], r)}")
    lw = r["largest_window"]
    out.append(
        f"largest window {lw['window']}: {lw['baskets']:,} baskets, {lw['cells']:,} cells,"
        f" release() {lw['release_seconds'] * 1000:,.0f} ms"
    )
    if r.get("release_alone"):
        out += ["", release_table(r["release_alone"])]
    return "\n".join(out)


def release_table(runs: list[dict[str, Any]]) -> str:
    """release() alone on one chain-day per row: its time, CPU and memory."""
    out = [
        "| baskets in the window (stores) | cells published | release() s (CPU s) | baskets held MiB "
        "| release() peak above them MiB | process peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in runs:
        out.append(
            f"| {x['baskets']:,} ({x['stores']}) | {x['cells']:,} | {x['seconds']:,.1f} ({x['cpu_seconds']:,.1f}) "
            f"| {_mib(x['held_bytes'])} | {_mib(x['release_peak_bytes'])} | {_mib(x['peak_rss_bytes'])} |"
        )
    return "\n".join(out)


def per_basket(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """Time and memory per basket of the largest window released alone (None when none was)."""
    if not runs:
        return None
    x = max(runs, key=lambda run: run["baskets"])
    return {
        "baskets": x["baskets"],
        "ms_per_1000": x["seconds"] / x["baskets"] * 1e6,
        "held_bytes": x["held_bytes"] / x["baskets"],
        "peak_bytes": (x["held_bytes"] + x["release_peak_bytes"]) / x["baskets"],
    }


def capacity(r: dict[str, Any]) -> int | None:
    """The largest chain-day (baskets) one aggregator can release within its memory limit, nothing else open:
    the limit less its resident memory before the first basket, over the memory per basket at release."""
    each = per_basket(r.get("release_alone") or [])
    limit, base = r.get("memory_limit_bytes"), r["together"].get("base_rss_bytes")
    if each is None or not limit or not base or limit <= base:
        return None
    return int((limit - base) / each["peak_bytes"])


def markdown(r: dict[str, Any]) -> str:
    """The section for docs/performance.md from one run's results."""
    out = [
        SECTION,
        "",
        f"Measured {r['date'][:10]} by `python benchmarks/aggregate_throughput.py` ({r['how']}) on {r['cores']}"
        f" cores, other work running beside. {scale(r)} Each path runs in its own process on fresh topics"
        " (`receiptflow process --role router`, `receiptflow aggregate run`): the router alone is timed"
        " from its first `purchases.customer` record to the last, scaled to the whole run as"
        " `processor_throughput.py` does (the same-run baseline); the aggregator alone, over the baskets the"
        " router wrote, from the moment it holds its partitions to its last window closed (cells, close marker"
        " and offsets committed in one transaction); the two at once from the router's start (timed as alone)"
        " to the aggregator's last window closed. The days are over and the grace"
        f" ({r['grace_seconds']:,} s) is longer than they span, so every window closes once all is read, by"
        f" the idle rule, {r['idle_close_seconds']} s after the last basket of its partition (in the timings"
        " of both aggregator rows): a backlog reaches the aggregator in the order the router drains its input"
        " partitions, a fetch at a time, hours of event time apart at a few thousand receipts a day. Rerunning"
        " with `--markdown-out docs/performance.md` replaces this section.",
        "",
        "| path | receipts/s | baskets/s | seconds | vs router alone | aggregator peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    out += [f"| {' | '.join(row)} |" for row in rows(r)]
    lw, both = r["largest_window"], r["together"]
    out += [
        "",
        f"Aggregator alone: {outcome(r['aggregator_alone'], r)}. At once: {outcome(both, r)}; the aggregator"
        f" used {both['cpu_seconds']:,.1f} CPU s and the router {both['router_cpu_seconds']:,.1f}, and the"
        f" aggregator held {_mib(both.get('base_rss_bytes'))} MiB resident before its first basket."
        f" The largest window ({lw['baskets']:,} baskets, {lw['cells']:,} cells) took"
        f" {lw['release_seconds'] * 1000:,.0f} ms in release() (timed on the baskets read back, in the"
        " benchmark's process).",
    ]
    runs = r.get("release_alone") or []
    each = per_basket(runs)
    if each is not None:
        out += [
            "",
            "*release() alone* on one chain-day of simulated baskets (one chain's stores, the simulator's hourly"
            " profile, routed with the shipped policy; no Kafka), each size in a process of its own: the baskets"
            " decoded as the aggregator holds them, then release() timed, with its peak resident memory above"
            f" them. The simulator's catalogue has {r.get('catalogue_skus', '-')} SKUs: a real chain's SKU and"
            " pair cells are many more.",
            "",
            release_table(runs),
            "",
            f"At {each['baskets']:,} baskets a window takes {each['held_bytes'] / 1024:,.1f} KiB per basket held"
            f" and {each['peak_bytes'] / 1024:,.1f} KiB per basket while it is released, and"
            f" {each['ms_per_1000']:,.0f} ms of release() per 1,000 baskets.",
        ]
        most = capacity(r)
        if most is not None:
            out[-1] += (
                f" Within the {_mib(r['memory_limit_bytes'])} MiB limit of `deploy/k8s/aggregate.yaml`, less the"
                f" {_mib(both['base_rss_bytes'])} MiB the aggregator held before its first basket, one aggregator"
                f" releases a chain-day of about {round(most, -3):,} baskets with nothing else open; every basket of"
                f" the other windows its partitions hold open then counts {each['held_bytes'] / 1024:,.1f} KiB."
            )
    return "\n".join(out) + "\n"
