#!/usr/bin/env python3
"""Write deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yaml (one source of rules).

python3 deploy/prometheus/sync_prometheusrule.py          # rewrite the PrometheusRule
python3 deploy/prometheus/sync_prometheusrule.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yaml"
TARGET = HERE.parent / "k8s" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by deploy/prometheus/sync_prometheusrule.py:
# edit alerts.yaml, then run that script. The same alert rules, for the Prometheus Operator.
"""


def render() -> str:
    """The PrometheusRule manifest wrapping the groups of alerts.yaml."""
    groups: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "her2-consumer",
            "labels": {
                "app.kubernetes.io/name": "her2-consumer",
                "app.kubernetes.io/component": "consumer",
            },
        },
        "spec": groups,
    }
    return HEADER + str(yaml.safe_dump(manifest, sort_keys=False, width=100))


def main(argv: list[str]) -> int:
    """Rewrite (default) or check (--check) the generated file."""
    text = render()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
