"""Service versions side by side: `python -m consumer run` started from different checkouts
(the working directory comes first on `sys.path`), stages interleaved A B C ..., per delivery
mode, `--rounds` rounds, medians and the ratio of each version to the first.

    python bench/versions.py --events 20000 --rounds 3 base=/path/to/old/checkout main=.
                             [--client confluent] [--modes at_least_once]

Each checkout must be a copy of this repository (a git worktree will do); the broker is the
one `kafka_bench.py` starts (or KAFKA_BOOTSTRAP_SERVERS). Besides events/s it prints the CPU
per event of each service process (steadier than a rate on a shared machine). A mode the
service refuses with `--client` (its own configuration check) is not run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_bench as kb  # the bench's own helpers, found beside this file

MODES = ("at_least_once", "exactly_once")


def main(argv: list[str] | None = None) -> int:
    """Parse NAME=CHECKOUT pairs, run, print the table (and JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", help="NAME=CHECKOUT, the first is the baseline")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--client", default="", help="HER2_KAFKA_CLIENT of every version")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated delivery modes to run"
    )
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m and not kb.refused(args.client, m)]
    versions: dict[str, Path] = {}
    for item in args.versions:
        name, sep, path = item.partition("=")
        checkout = Path(path).resolve()
        if not sep or not (checkout / "consumer" / "__main__.py").is_file():
            parser.error(f"{item!r}: expected NAME=CHECKOUT of this repository")
        versions[name] = checkout
    rates: dict[str, dict[str, list[float]]] = {m: {v: [] for v in versions} for m in modes}
    cpu: dict[str, dict[str, list[float]]] = {m: {v: [] for v in versions} for m in modes}
    here = Path.cwd()
    try:
        with kb.broker() as bootstrap:
            for round_no in range(1, args.rounds + 1):
                for mode in modes:
                    for name, checkout in versions.items():
                        os.chdir(checkout)
                        rate = kb.service_throughput(
                            bootstrap, args.events, args.seed, mode, client=args.client or None
                        )
                        rates[mode][name].append(rate["events_per_s"])
                        cpu[mode][name].append(rate["cpu_us_per_event"])
                        kb.log(
                            f"round {round_no} {mode} {name}: {rate['events_per_s']:,.0f}/s, "
                            f"{rate['cpu_us_per_event']:,.0f} CPU µs/event, "
                            f"load {os.getloadavg()[0]:.2f}"
                        )
    finally:
        os.chdir(here)
    baseline = next(iter(versions))
    for mode in modes:
        base = statistics.median(rates[mode][baseline])
        base_cpu = statistics.median(cpu[mode][baseline])
        for name, values in rates[mode].items():
            median = statistics.median(values)
            runs = " / ".join(f"{v:,.0f}" for v in values)
            us = statistics.median(cpu[mode][name])
            print(
                f"{mode:<14} {name:<12} {runs:>28}  median {median:>7,.0f}  x{median / base:.2f}"
                f"   CPU {us:,.0f} µs/event  x{us / base_cpu:.2f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"events_per_s": rates, "cpu": cpu}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
