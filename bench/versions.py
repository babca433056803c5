"""Service versions side by side: `python -m consumer run` started from different checkouts
(the working directory comes first on `sys.path`), stages interleaved A B C ..., per delivery
mode, `--rounds` rounds, medians and the ratio of each version to the first.

    python bench/versions.py --events 20000 --rounds 3 base=/path/to/old/checkout main=.

Each checkout must be a copy of this repository (a git worktree will do); the broker is the
one `kafka_bench.py` starts (or KAFKA_BOOTSTRAP_SERVERS).
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
    args = parser.parse_args(argv)
    versions: dict[str, Path] = {}
    for item in args.versions:
        name, sep, path = item.partition("=")
        checkout = Path(path).resolve()
        if not sep or not (checkout / "consumer" / "__main__.py").is_file():
            parser.error(f"{item!r}: expected NAME=CHECKOUT of this repository")
        versions[name] = checkout
    rates: dict[str, dict[str, list[float]]] = {m: {v: [] for v in versions} for m in MODES}
    here = Path.cwd()
    try:
        with kb.broker() as bootstrap:
            for round_no in range(1, args.rounds + 1):
                for mode in MODES:
                    for name, checkout in versions.items():
                        os.chdir(checkout)
                        rate = kb.service_throughput(bootstrap, args.events, args.seed, mode)
                        rates[mode][name].append(rate["events_per_s"])
                        kb.log(
                            f"round {round_no} {mode} {name}: {rate['events_per_s']:,.0f}/s "
                            f"load {os.getloadavg()[0]:.2f}"
                        )
    finally:
        os.chdir(here)
    baseline = next(iter(versions))
    for mode in MODES:
        base = statistics.median(rates[mode][baseline])
        for name, values in rates[mode].items():
            median = statistics.median(values)
            runs = " / ".join(f"{v:,.0f}" for v in values)
            print(f"{mode:<14} {name:<12} {runs:>28}  median {median:>7,.0f}  x{median / base:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rates, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
