"""Processor throughput of two git revisions, measured in alternated rounds in one run.

A refactor must not cost speed, and a 2-core machine shared with the broker drifts by a third from one
minute to the next, so a "before" figure from yesterday says little. This script checks the base
revision out into a temporary worktree, installs each tree's package (without dependencies) into a
folder of its own, since the top-level folders are mapped into the package by the build rather than
linked, and runs ``benchmarks/processor_throughput.py`` (each tree's own copy, on its own code through
``PYTHONPATH``) for the base and the working tree in turn:
base, work, base, work, … Each run starts its own embedded broker. The medians of every path are
printed side by side, with the work tree's rate relative to the base's.

Usage: ``python benchmarks/compare_revisions.py --base REV [--rounds N] [--receipts N]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A result row of processor_throughput.py: the path name, then the median rate with thousands commas.
ROW = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<rate>[\d,]+)\s+[\d.]+x\s")


def install(tree: Path, target: Path) -> Path:
    """The tree's package as its build lays it out, in ``target`` (a folder for ``PYTHONPATH``)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(tree)],
        check=True,
        capture_output=True,
    )
    return target


def run_once(tree: Path, site: Path, receipts: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(site))
    cmd = [sys.executable, "benchmarks/processor_throughput.py", "--skip-faust", "--repeat", "1"]
    out = subprocess.run(
        [*cmd, "--receipts", str(receipts)], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"benchmark failed in {tree.name}: {tail[0]}")
    rates: dict[str, float] = {}
    for line in out.stdout.splitlines():
        m = ROW.match(line)
        if m and m["name"] != "path":
            rates[m["name"]] = float(m["rate"].replace(",", ""))
    if not rates:
        raise SystemExit(f"no result rows in the output of {tree.name}")
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each revision, alternated (default 3)")
    parser.add_argument("--receipts", type=int, default=20_000, help="receipts per path and run (default 20000)")
    args = parser.parse_args()
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    work_rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="receiptflow-base-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base_tree), base_rev], cwd=ROOT, check=True)
        try:
            sites = {
                "base": install(base_tree, Path(tmp) / "base-site"),
                "work": install(ROOT, Path(tmp) / "work-site"),
            }
            results: dict[str, dict[str, list[float]]] = {"base": {}, "work": {}}
            for i in range(args.rounds):
                for label, tree in (("base", base_tree), ("work", ROOT)):
                    for name, rate in run_once(tree, sites[label], args.receipts).items():
                        results[label].setdefault(name, []).append(rate)
                    print(f"round {i + 1}/{args.rounds} {label} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    print(f"{args.receipts} receipts per path, {args.rounds} alternated rounds, {os.cpu_count()} cores")
    print(f"base {base_rev} vs work {work_rev} (HEAD plus uncommitted changes)\n")
    print(f"{'path':<26}{'base median/s':>15}{'work median/s':>15}{'work/base':>11}")
    for name, base_rates in results["base"].items():
        work_rates = results["work"].get(name)
        if not work_rates:
            continue
        b, w = statistics.median(base_rates), statistics.median(work_rates)
        print(f"{name:<26}{b:>15,.0f}{w:>15,.0f}{w / b:>10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
