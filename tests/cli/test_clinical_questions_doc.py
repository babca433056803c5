"""docs/clinical-questions.md shows, for each open clinical question, what `evaluate --history`
prints for its reproduction file. The clinical lead decides on those outputs, so they must be
what the product does today: each entry's output block is compared with a fresh run of its file
(formatted as the page's own re-run loop formats it). A rule or lifecycle change that alters an
entry fails here, and the page is updated with it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "clinical-questions.md"
# "**Reproduction** ([name](clinical-questions/name.ndjson)): ... ```<output>```"
ENTRY = re.compile(
    r"\*\*Reproduction\*\* \(\[[^\]]+\]\((clinical-questions/[\w.-]+\.ndjson)\)\)"
    r".*?\n```\n(.*?)```",
    re.DOTALL,
)
# the variables the page says to leave unset (their defaults)
UNSET = ("HER2_HISTORY_RETENTION_DAYS", "HER2_MAX_EVENT_TIME_SKEW_SECONDS")


def _entries() -> list[tuple[str, str]]:
    return ENTRY.findall(PAGE.read_text(encoding="utf-8"))


def _printed(path: Path) -> str:
    """`evaluate --history` on the file, one line per report and per alert record, as the
    page's loop prints them."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    run = subprocess.run(  # noqa: S603 - fixed argv, our own module
        [sys.executable, "-m", "consumer", "evaluate", "--history", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    lines = []
    for raw in run.stdout.splitlines():
        out = json.loads(raw)
        c = out.get("classification") or {}
        lines.append(
            f"line {out['line']} {out.get('event_id')} {c.get('report_status')} "
            f"{c.get('category')} {c.get('decided_by')} hr={c.get('hr_status')}"
        )
        lines += [
            f"    {a['status']} {a['code']} {a['severity']} rev {a['revision']} {a['accession_id']}"
            for a in out["alerts"]
        ]
        lines += [f"    ERROR {e}" for e in out["errors"]]
    return "\n".join(lines) + "\n"


def test_every_question_has_its_reproduction_and_output() -> None:
    files = [name for name, _ in _entries()]
    assert len(files) == PAGE.read_text(encoding="utf-8").count("**Reproduction**")
    assert len(files) == len(set(files)) >= 14
    on_disk = sorted(p.name for p in (ROOT / "docs" / "clinical-questions").glob("*.ndjson"))
    assert sorted(Path(f).name for f in files) == on_disk


@pytest.mark.parametrize(
    ("name", "shown"), _entries(), ids=[Path(name).stem[:3] for name, _ in _entries()]
)
def test_the_page_shows_what_the_product_prints(name: str, shown: str) -> None:
    assert _printed(PAGE.parent / name) == shown
