"""The `her2-consumer` command line: run, evaluate, rules check, demo, open-alerts, publish,
rebuild-history."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Final

from consumer import __version__
from consumer.errors import ConfigError, RuleSetError

# `demo` generates every event in memory before it connects, then prints a line per event: it
# shows the system work, it is not a load test (bench/ is). 10,000 events take about 2 s and
# 30 MB to generate and about 5 s of one instance at ~2,000 events/s, within the default
# --timeout; 100,000 took 18 s and 280 MB before the first send.
DEMO_MAX_COUNT: Final = 10_000


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (a deadline of 0, less or nan has
    passed before the first read; one of inf never passes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0: {text!r}")
    return value


def _demo_count(text: str) -> int:
    """An argparse type: an event count from 1 to DEMO_MAX_COUNT."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= DEMO_MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {DEMO_MAX_COUNT:,}: {value}")
    return value


def _evaluate(args: argparse.Namespace) -> int:
    import os

    from consumer.clinical.pipeline import Pipeline
    from consumer.clinical.rules import load_ruleset
    from consumer.config import EvaluationSettings
    from consumer.state.store import HistoryStore
    from consumer.tools.evaluate import evaluate_lines, ndjson_source, render

    # the service's retention and event-time tolerance, read by its own config code (a bad
    # value is a ConfigError, as at `run`'s start-up), so the alerts are the service's
    settings = EvaluationSettings.from_env(os.environ)
    pipeline = Pipeline(load_ruleset())
    history = HistoryStore(settings.history_retention) if args.history else None
    skew = settings.event_time_skew
    with ndjson_source(args.file) as source:
        for line in render(evaluate_lines(source, pipeline, history, max_event_time_skew=skew)):
            sys.stdout.write(line)
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from consumer.clinical.rules import load_ruleset

    ruleset = load_ruleset(Path(args.rules_dir) if args.rules_dir else None, check=False)
    examples = ruleset.check_examples()
    print(
        f"rule set {ruleset.version}: {len(ruleset.rules)} rules valid, "
        f"{examples} embedded examples pass"
    )
    return 0


def _open_alerts(args: argparse.Namespace) -> int:
    from consumer.tools.downstream import main as open_alerts_main

    return open_alerts_main(args)


def _rebuild_history(args: argparse.Namespace) -> int:
    from consumer.tools.rebuild import main as rebuild_main

    return rebuild_main(args)


def _run(args: argparse.Namespace) -> int:
    from consumer.app import main as run_main

    return run_main(args)


def _demo(args: argparse.Namespace) -> int:
    from consumer.tools.demo import main as demo_main

    return demo_main(args)


def _publish(args: argparse.Namespace) -> int:
    from consumer.tools.publish import main as publish_main

    return publish_main(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `her2-consumer`."""
    parser = argparse.ArgumentParser(
        prog="her2-consumer",
        description="Classify HER2 pathology results (ASCO/CAP) and publish treatment alerts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the Kafka consumer (configured by HER2_* variables)")
    run.set_defaults(func=_run)

    evaluate = sub.add_parser("evaluate", help="evaluate NDJSON PathologyResults offline")
    evaluate.add_argument("file", nargs="?", default="-", help="NDJSON file, or - for stdin")
    evaluate.add_argument(
        "--history", action="store_true", help="carry patient history between events, in order"
    )
    evaluate.set_defaults(func=_evaluate)

    rules = sub.add_parser("rules", help="rule-set tools")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate rules/ and run every embedded example")
    check.add_argument(
        "--rules-dir", help="folder holding ruleset.yaml and alerts/ (default: shipped)"
    )
    check.set_defaults(func=_rules_check)

    open_alerts = sub.add_parser(
        "open-alerts",
        help="read the alert topics (read_committed) and print the open alerts as JSON lines",
    )
    open_alerts.add_argument("--patient", help="only this patient's open alerts")
    open_alerts.add_argument(
        "--timeout", type=_seconds, default=30.0, help="seconds to read the topics (default 30)"
    )
    starts = open_alerts.add_mutually_exclusive_group()
    starts.add_argument(
        "--end-offsets",
        action="store_true",
        help="print the alert topics' end offsets as JSON and exit: note them before a "
        "changelog replay (README 'If the changelog topic is lost')",
    )
    starts.add_argument(
        "--from-offsets",
        metavar="FILE",
        help="read the alert topics from the offsets --end-offsets printed into FILE, not from "
        "the beginning: after a replay across a rule-set change, the replay's state",
    )
    open_alerts.set_defaults(func=_open_alerts)
    rebuild = sub.add_parser(
        "rebuild-history",
        help="rebuild a lost changelog from the input topic (every instance stopped), "
        "publishing only what differs from what the alert topics hold",
    )
    rebuild.add_argument(
        "--dry-run",
        action="store_true",
        help="evaluate and reconcile, print the summary, write nothing",
    )
    rebuild.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds without progress reading the input before giving up; the alert "
        "topics' read must end within it or the request timeout (default 60)",
    )
    rebuild.set_defaults(func=_rebuild_history)

    demo = sub.add_parser("demo", help="publish synthetic lab events and print the alerts")
    demo.add_argument(
        "--count",
        type=_demo_count,
        default=40,
        help=f"events to publish, 1 to {DEMO_MAX_COUNT:,} (default 40)",
    )
    demo.add_argument(
        "--timeout", type=_seconds, default=60.0, help="seconds to wait for alerts (default 60)"
    )
    demo.set_defaults(func=_demo)

    publish = sub.add_parser(
        "publish",
        help="send NDJSON PathologyResults (the evaluate form) to the input topic, keyed by "
        "patient_id with the murmur2 partitioner",
    )
    publish.add_argument("file", nargs="?", default="-", help="NDJSON file, or - for stdin")
    publish.set_defaults(func=_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:  # as `run` reports it (runtime/exits.py): names the variable
        print(f"her2-consumer: configuration error: {exc}", file=sys.stderr)
        return 2
    except RuleSetError as exc:
        print(f"her2-consumer: rule set invalid: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # a file that cannot be opened (the NDJSON of evaluate/publish: missing, a directory,
        # not readable), named as a missing one always was; an OS error without a file (a
        # socket, ...) is not one of ours to word and keeps its traceback
        if exc.filename is None:
            raise
        print(
            f"her2-consumer: {exc.strerror or type(exc).__name__}: {exc.filename}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
