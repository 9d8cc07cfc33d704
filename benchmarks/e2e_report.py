"""The pure parts of the end-to-end benchmark: percentiles, the machine, the Markdown table and its section."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_compare
from prometheus_client.parser import text_string_to_metric_families

SECTION = "## End to end"
PEERS_SECTION = "## The router beside its peers"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending list: a value that was measured."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: list[float]) -> dict[str, float | int | None]:
    """Count, mean, p50/p95/p99 and max of ``values`` (None for each figure when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "count": len(ordered),
        "mean": sum(ordered) / len(ordered),
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
    }


def expected_from_truth(truth: dict[str, Any]) -> tuple[int, int]:
    """(receipts for the warehouse, visits for the profiles) a simulator run's ground truth promises.

    Visits are the carded sales: a refund (receipts v2) is a carded receipt but no visit.
    """
    return int(truth["receipts"]), sum(int(card["visits"]) for card in truth["per_card"].values())


def machine() -> dict[str, Any]:
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_bytes": ram}


def _ms(v: float | int | None) -> str:
    return "-" if v is None else f"{v * 1000:,.0f}"


def markdown(r: dict[str, Any]) -> str:
    """The 'End to end' section for docs/performance.md from one run's results."""
    sat, live, m = r["saturation"], r["live"], r["machine"]
    out = [
        SECTION,
        "",
        f"Measured {r['date'][:10]} ({r['mode']} run) by `python benchmarks/end_to_end.py"
        f"{' --quick' if r['mode'] == 'quick' else ''}`"
        f" on {m['cores']} cores and {m['ram_bytes'] / 2**30:.0f} GiB of RAM, other work running beside;"
        f" {r['partitions']} partitions, every stage its own process, PostgreSQL as the warehouse.",
        "",
        "*Backlog drained*: the simulator sells first, then router, profile agent and sink start and drain"
        " the checkouts (timed from the first `purchases.customer` record to the last receipt visible in both"
        " Redis and the warehouse). *Sold live*: the same number sold unpaced while the pipeline runs (first"
        " checkout acknowledged to last receipt visible); the simulator's outbox then shares the two cores."
        " Latencies run from a checkout's append time (its broker timestamp) to its `purchases.customer`"
        " record arriving at a read-committed consumer, to its card's dedup set in Redis (polled every 20 ms)"
        f" and to its warehouse row (polled every 50 ms), for every {r.get('sample', 5)}th receipt."
        " PostgreSQL, not DuckDB, because a DuckDB file cannot be read beside the sink that holds it open."
        " Rerunning with `--markdown-out docs/performance.md` replaces this section.",
        "",
        "| saturation | backlog drained | sold live |",
        "| --- | ---: | ---: |",
        f"| receipts (lines) | {sat['receipts']:,} ({sat['lines']:,}) | {live['receipts']:,} ({live['lines']:,}) |",
        f"| receipts/s through the whole pipeline | {sat['receipts_per_s']:,.0f} | {live['receipts_per_s']:,.0f} |",
        f"| lines/s | {sat['lines_per_s']:,.0f} | {live['lines_per_s']:,.0f} |",
        f"| / router alone ({r['router_alone_receipts_per_s']:,.0f}/s, same run) "
        f"| {r['end_to_end_vs_router']:.2f}x | {r['live_vs_router']:.2f}x |",
        f"| last receipt in profiles, in warehouse (s) "
        f"| {sat['profiles_seconds']:,.1f}, {sat['warehouse_seconds']:,.1f} "
        f"| {live['profiles_seconds']:,.1f}, {live['warehouse_seconds']:,.1f} |",
        "",
        f"The simulator alone sold {sat['producer_receipts_per_s']:,.0f} receipts/s into the outbox and Kafka.",
        "",
        latency_table(r["latency"]),
    ]
    for run in r["latency"]:
        if run.get("stages"):
            out += [
                "",
                f"Where a receipt's time went at {run['offered_receipts_per_s']:,.0f} receipts/s offered "
                "(each stage's own metrics over the run):",
                "",
                stage_table(run),
            ]
    out += ["", "| process | CPU s per million receipts (backlog drain) | peak RSS MiB |", "| --- | ---: | ---: |"]
    cpu, rss = sat["cpu_seconds_per_million_receipts"], r["peak_rss_bytes"]
    for name in cpu:
        peak = rss.get(name)
        out.append(f"| {name} | {cpu[name]:,.0f} | {'-' if peak is None else f'{peak / 2**20:,.0f}'} |")
    b = r["redis_bytes_per_card"]
    if b["count"]:
        out += [
            "",
            f"Redis bytes per card (MEMORY USAGE, {b['count']} cards): median {b['p50']:,.0f}, p99 {b['p99']:,.0f}.",
        ]
    return "\n".join(out) + "\n"


TARGETS_SECTION = "## Targets"


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 20's targets against one run's figures: (target, what was measured, met; None when the run
    did not measure it). Every ratio is of two figures of the same run."""
    paths = {p["path"]: p for p in (r.get("peers") or {}).get("paths", []) if not p.get("error")}

    def rate(prefix: str) -> float | None:
        found = [p["receipts_per_s"] / p["workers"] for name, p in paths.items() if name.startswith(prefix)]
        return found[0] if found else None

    router = rate("router (")
    out: list[tuple[str, str, bool | None]] = []
    raw = rate("raw ")
    if router and raw:
        out.append(("router, one worker, ≥ 1/10 of raw consume→produce", f"1/{raw / router:.1f}", router * 10 >= raw))
    else:
        out.append(("router, one worker, ≥ 1/10 of raw consume→produce", "not measured", None))
    for peer in ("quixstreams", "Kafka Streams"):
        theirs = rate(peer)
        what = f"router ahead of {peer} per worker"
        if router and theirs:
            out.append((what, f"{router / theirs:.2f}x", router > theirs))
        else:
            out.append((what, "not measured", None))
    at500 = [lat for lat in r.get("latency", []) if round(lat["offered_receipts_per_s"]) == 500]
    p99 = at500[0]["profile_s"]["p99"] if at500 else None
    if p99 is not None:
        sold = at500[0]["achieved_offered_per_s"]
        out.append(
            ("p99 checkout → profile ≤ 250 ms at 500/s", f"{p99 * 1000:,.0f} ms ({sold:,.0f}/s sold)", p99 <= 0.25)
        )
    else:
        out.append(("p99 checkout → profile ≤ 250 ms at 500/s", "not measured", None))
    mean = (r.get("redis_bytes_per_card") or {}).get("mean")
    if mean is not None:
        out.append(("Redis ≤ 2 KB per active card, on average", f"{mean:,.0f} bytes", mean <= 2048))
    else:
        out.append(("Redis ≤ 2 KB per active card, on average", "not measured", None))
    return out


def targets_section(r: dict[str, Any]) -> str:
    """The targets table (Markdown): each target, the figure of this run, met or not."""
    out = [
        TARGETS_SECTION,
        "",
        f"From the `make bench` run of {r['date'][:10]} ({r['mode']}); a target missed is a row marked *missed*,"
        " and the sections above and below say where the time goes.",
        "",
        "| target | this run | met |",
        "| --- | --- | --- |",
    ]
    for target, measured, met in targets(r):
        out.append(f"| {target} | {measured} | {'-' if met is None else 'yes' if met else '*missed*'} |")
    return "\n".join(out) + "\n"


def peers_section(p: dict[str, Any]) -> str:
    """The router beside its peers: the input, the table, what the comparison leaves out."""
    i = p["input"]
    ignored = "; ".join(f"`{t}`: {', '.join(f) or 'nothing'}" for t, f in p["ignored_fields"].items())
    return (
        f"{PEERS_SECTION}\n\n"
        f"Measured {p['date'][:10]} by `python benchmarks/peers.py` ({p['how']}) on {p['cores']} cores, other work"
        f" running beside: one input of {i['receipts']:,} receipts ({i['lines']:,} lines) with"
        f" {i['consent_changes']:,} consent changes, {i['duplicates']:,} repeated deliveries and"
        f" {i['dead_letters']:,} bad records after every card's sign-up consent; each path one worker, its own"
        f" output topics, timed from its first output record to its last (broker append times), one round."
        f" Outputs are compared with the router's as multisets per topic, leaving out {ignored}"
        " (and masking the times inside a dead letter's message, and the Avro decoder's own words on a"
        " broken body). The router and quixstreams take their two"
        " inputs in the order they were written (aligned by timestamp); the naive faust agent takes them in"
        " the order its fetches bring them, so on a backlog it can route a receipt before its card's consent"
        " is read. Where a peer's card-linked records differ, the results (`--json-out`) keep those cards'"
        " input as it was written (`input_of_differing_cards`).\n\n" + peer_compare.table(p["paths"])
    )


def latency_table(runs: list[dict[str, Any]]) -> str:
    """The Markdown table of the latency phase: one row per offered load."""
    out = [
        "| offered/s (sold/s) | to `purchases.customer` p50 / p95 / p99 ms | to the profile | to the warehouse "
        "| not seen (topic / profile / warehouse) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for lat in runs:
        cells = []
        for key in ("customer_topic_s", "profile_s", "warehouse_s"):
            s = lat[key]
            cells.append(f"{_ms(s['p50'])} / {_ms(s['p95'])} / {_ms(s['p99'])}")
        miss = lat["not_seen"]
        out.append(
            f"| {lat['offered_receipts_per_s']:,.0f} ({lat['achieved_offered_per_s']:,.0f}) | "
            + " | ".join(cells)
            + f" | {miss['customer_topic']} / {miss['profile']} / {miss['warehouse']} |"
        )
    return "\n".join(out)


# Samples of a process's exporter: (metric sample name, sorted label pairs) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# Bounds (seconds) the stage table gives the share of receipts within; 0.25 is the profile target.
WITHIN = (0.1, 0.25, 0.5, 1.0)
_AGE = "receiptflow_checkout_to_output_seconds"


def samples(text: str) -> Samples:
    """The samples of a Prometheus text exposition, keyed by sample name and sorted label pairs."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def stage_breakdown(before: Samples, after: Samples, stage: str) -> dict[str, Any]:
    """What one stage did between two scrapes of its exporter: batches, their mean size and time, and
    the share of receipts whose checkout reached the stage's committed output within each bound of
    ``WITHIN`` (from the histogram's buckets, so only at bucket bounds: no interpolation)."""
    batches = _delta(before, after, "receiptflow_batch_seconds_count", stage=stage)
    records = _delta(before, after, f"{_AGE}_count", stage=stage)
    within: dict[str, float | None] = {}
    for bound in WITHIN:
        le = _delta(before, after, f"{_AGE}_bucket", stage=stage, le=repr(float(bound)))
        within[f"{bound:g}"] = le / records if records else None
    return {
        "batches": int(batches),
        "records": int(records),
        # The profile agent observes no batch sizes; every record it applies has its age observed.
        "mean_batch_records": (_delta(before, after, "receiptflow_batch_size_records_sum", stage=stage) or records)
        / batches
        if batches
        else None,
        "mean_batch_s": _delta(before, after, "receiptflow_batch_seconds_sum", stage=stage) / batches
        if batches
        else None,
        "mean_age_s": _delta(before, after, f"{_AGE}_sum", stage=stage) / records if records else None,
        "within": within,
    }


def stage_table(run: dict[str, Any]) -> str:
    """Per stage of one latency run: batches, where the checkout's time went, and the cores it used."""
    out = [
        "| stage | batches | records per batch | ms per batch | mean ms checkout → committed output | "
        + " | ".join(f"within {b * 1000:g} ms" for b in WITHIN)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in WITHIN) + " |",
    ]
    for stage, st in run.get("stages", {}).items():
        size = st["mean_batch_records"]
        shares = [("-" if v is None else f"{v:.0%}") for v in st["within"].values()]
        out.append(
            f"| {stage} | {st['batches']:,} | {'-' if size is None else f'{size:,.0f}'} | {_ms(st['mean_batch_s'])} "
            f"| {_ms(st['mean_age_s'])} | " + " | ".join(shares) + " |"
        )
    cores = run.get("cpu_cores")
    if cores:
        busy = ", ".join(f"{name} {share:.2f}" for name, share in sorted(cores.items(), key=lambda kv: -kv[1]))
        out.append("")
        out.append(
            f"Cores busy while it ran (CPU seconds per second, of {os.cpu_count()}): {busy}; "
            f"all together {sum(cores.values()):.2f}."
        )
    return "\n".join(out)


def update_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Replace the section ``heading`` of ``path`` (up to the next ``## `` heading), or append it."""
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
