"""`her2-consumer evaluate` end to end (subprocess, `python -m consumer`), from the spec:
docs/her2-rules.md section 7 (worked examples) and 5.5, docs/design.md "Command line".
"""
# ruff: noqa: E501 - table rows (one pytest.param per spec case) read best on one line

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from consumer.avro.codec import Encoder
from consumer.avro.outputs import Codecs
from consumer.clinical.pipeline import Pipeline, utc_now
from consumer.clinical.rules import load_ruleset
from consumer.clinical.validate import JsonConverter, check_event
from consumer.config import Settings
from consumer.errors import ConfigError
from consumer.ops.metrics import Metrics
from consumer.resources import PATHOLOGY_RESULT, parsed_schema
from consumer.runtime.kafka import TopicPartition
from consumer.runtime.processor import Processor
from consumer.runtime.restore import Restorer
from consumer.runtime.results import DeadLettered, Processed
from consumer.state.store import HistoryStore
from consumer.tools import jsonout
from consumer.tools.evaluate import evaluate_lines

Record = dict[str, Any]
CLI_TIMEOUT_S = 60


# ---------------------------------------------------------------------------------------------
# NDJSON builders (JSON shapes: enums as strings, ISO dates)
# ---------------------------------------------------------------------------------------------


def ihc(score: str | None, **fields: Any) -> Record:
    """A documented IHC record (clone, assay type, controls)."""
    return {
        "score": score,
        "antibody_clone": "4B5",
        "assay_type": "FDA_APPROVED",
        "controls_documented": True,
        **fields,
    }


def specimen(site: str = "PRIMARY_BREAST", collected: str = "2025-05-20", **fields: Any) -> Record:
    """A documented specimen."""
    return {
        "site": site,
        "collection_date": collected,
        "cold_ischemia_minutes": 25,
        "fixation_hours": 20.0,
        "decalcified": False,
        **fields,
    }


def result(event_id: str, **fields: Any) -> Record:
    """A FINAL PathologyResult; keyword arguments replace top-level fields."""
    record: Record = {
        "event_id": event_id,
        "event_time": "2025-06-01T10:00:00Z",
        "source_system": "LIS-TEST",
        "patient_id": f"pat-{event_id}",
        "accession_id": f"acc-{event_id}",
        "report_status": "FINAL",
        "specimen": specimen(),
        "her2_ihc": ihc("ONE_PLUS", percent_cells_stained=40.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"),
        "er": {"percent_positive": 90.0, "result": "POSITIVE"},
        "pr": {"percent_positive": 40.0, "result": "POSITIVE"},
        "clinical_context": {"disease_setting": "EARLY", "menopausal_status": "POST"},
    }
    record.update(fields)
    return record


NULL_IHC = ihc("ZERO", percent_cells_stained=0.0, staining_intensity="NONE", staining_completeness="NONE")
LOW_IHC = ihc("ONE_PLUS", percent_cells_stained=30.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE")
TRIPLE_NEGATIVE = {"er": {"percent_positive": 0.0, "result": "NEGATIVE"}, "pr": {"percent_positive": 0.0, "result": "NEGATIVE"}}


def evaluate(lines: list[str], *args: str, tmp_path: Path | None = None, env: Mapping[str, str] | None = None) -> tuple[list[Record], subprocess.CompletedProcess[str]]:
    """Run `python -m consumer evaluate [args]` on the lines (a file when tmp_path, else stdin),
    in `env` (None: this process's environment)."""
    text = "".join(line + "\n" for line in lines)
    command = [sys.executable, "-m", "consumer", "evaluate", *args]
    stdin: str | None = text
    if tmp_path is not None:
        path = tmp_path / "events.ndjson"
        path.write_text(text, encoding="utf-8")
        command.append(str(path))
        stdin = None
    done = subprocess.run(  # noqa: S603 - fixed argv, our own module
        command, input=stdin, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False, env=env
    )
    outputs = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return outputs, done


def codes(output: Record) -> set[str]:
    return {a["code"] for a in output["alerts"] if a["status"] == "ACTIVE"}


def dumps(records: list[Record]) -> list[str]:
    return [json.dumps(r) for r in records]


# ---------------------------------------------------------------------------------------------
# Section 7 worked examples
# ---------------------------------------------------------------------------------------------

WORKED = {
    "wx-1": result(
        "wx-1",
        clinical_context={"disease_setting": "EARLY", "planned_therapies": ["trastuzumab + pertuzumab"]},
        er={"percent_positive": 90.0},
        her2_ihc=ihc("ONE_PLUS", percent_cells_stained=40.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"),
    ),
    "wx-2": result(
        "wx-2",
        specimen=specimen("DISTANT_METASTASIS", body_site="liver"),
        er={"percent_positive": 95.0},
        her2_ihc=ihc("ONE_PLUS", percent_cells_stained=30.0),
        clinical_context={
            "disease_setting": "METASTATIC",
            "metastatic_chemotherapy_lines": 1,
            "metastatic_endocrine_therapy_lines": 2,
        },
    ),
    "wx-3": result(
        "wx-3",
        specimen=specimen("DISTANT_METASTASIS"),
        her2_ihc=ihc("ZERO", percent_cells_stained=5.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"),
        clinical_context={
            "disease_setting": "METASTATIC",
            "metastatic_chemotherapy_lines": 1,
            "planned_therapies": ["trastuzumab deruxtecan"],
        },
        **TRIPLE_NEGATIVE,
    ),
    "wx-4": result("wx-4", her2_ihc=ihc("TWO_PLUS", percent_cells_stained=50.0), clinical_context={"disease_setting": "EARLY"}),
    "wx-5": result(
        "wx-5",
        her2_ihc=ihc("TWO_PLUS", percent_cells_stained=50.0),
        her2_ish={"her2_cep17_ratio": 1.6, "her2_copies_per_cell": 6.4, "cells_counted": 40, "recount_group": 3},
        clinical_context={"disease_setting": "EARLY"},
    ),
    "wx-6": result(
        "wx-6",
        specimen=specimen("DISTANT_METASTASIS", body_site="liver"),
        er={"percent_positive": 90.0},
        her2_ihc=NULL_IHC,
        clinical_context={"disease_setting": "METASTATIC"},
        prior_her2_results=[
            {"accession_id": "acc-primary", "specimen": specimen("PRIMARY_BREAST", "2021-02-03"), "her2_ihc": ihc("ONE_PLUS")}
        ],
    ),
}
WORKED |= {
    "wx-7": result(
        "wx-7",
        specimen=specimen("PRIMARY_BREAST", "2026-10-02", body_site="breast, resection after neoadjuvant therapy"),
        her2_ihc=ihc("THREE_PLUS", percent_cells_stained=90.0, staining_intensity="STRONG", staining_completeness="COMPLETE"),
        clinical_context={"disease_setting": "EARLY", "planned_therapies": ["Enhertu"]},
    ),
    "wx-8": result(
        "wx-8",
        er={"percent_positive": 90.0},
        her2_ihc=ihc("ONE_PLUS", percent_cells_stained=30.0),
        clinical_context={"disease_setting": "EARLY", "planned_therapies": ["trastuzumab deruxtecan"]},
    ),
    "wx-9": result(
        "wx-9",
        specimen=specimen("DISTANT_METASTASIS", body_site="liver"),
        er={"percent_positive": 90.0},
        her2_ihc=ihc("ZERO", percent_cells_stained=5.0, staining_intensity="FAINT", staining_completeness="INCOMPLETE"),
        clinical_context={"disease_setting": "METASTATIC", "metastatic_endocrine_therapy_lines": 1},
    ),
    "wx-10": result(
        "wx-10",
        specimen=specimen("DISTANT_METASTASIS", body_site="liver"),
        er={"percent_positive": 90.0},
        her2_ihc=ihc("ZERO", percent_cells_stained=5.0, staining_intensity="STRONG", staining_completeness="COMPLETE"),
        clinical_context={"disease_setting": "METASTATIC", "metastatic_endocrine_therapy_lines": 1},
    ),
}
TDXD_CODES = {
    "TDXD-LOW-DB04", "TDXD-HR-DB06", "TDXD-POSITIVE-DB03", "TDXD-POSITIVE-DB09", "TDXD-POSITIVE-EARLY",
    "TDXD-CANDIDATE", "TC-TDXD-CRITERIA-NOT-MET", "TC-TDXD-EARLY-STAGE", "TC-TDXD-ILD",
}
# Example 6 with one chemotherapy line: the DB04 route is met on the prior LOW sample.
WORKED["wx-6b"] = copy.deepcopy(WORKED["wx-6"]) | {"event_id": "wx-6b"}
WORKED["wx-6b"]["clinical_context"]["metastatic_chemotherapy_lines"] = 1

EXPECTED = [
    pytest.param("wx-1", "LOW", {"TC-HER2-TARGETED-NOT-POSITIVE"}, set(), id="1-early-low-trastuzumab-pertuzumab"),
    pytest.param("wx-2", "LOW", {"TDXD-LOW-DB04", "TDXD-HR-DB06"}, set(), id="2-metastatic-low-db04-db06"),
    pytest.param("wx-3", "ULTRALOW", {"TC-TDXD-CRITERIA-NOT-MET"}, {"TDXD-HR-DB06", "TDXD-CANDIDATE", "TDXD-LOW-DB04"}, id="3-triple-negative-ultralow-tdxd"),
    pytest.param("wx-4", "EQUIVOCAL", {"DG-NO-REFLEX-ISH"}, set(), id="4-early-2plus-no-ish"),
    pytest.param("wx-5", "POSITIVE", set(), {"DG-ISH-WORKUP", "DG-NO-REFLEX-ISH"}, id="5-group3-recount-confirmed"),
    pytest.param("wx-6", "NULL", {"RT-DISCORDANT", "TDXD-CANDIDATE"}, {"RT-ALL-ZERO"}, id="6-null-prior-low-candidate"),
    pytest.param("wx-6b", "NULL", {"RT-DISCORDANT", "TDXD-LOW-DB04"}, {"TDXD-CANDIDATE"}, id="6b-null-prior-low-db04"),
    pytest.param("wx-7", "POSITIVE", {"TDXD-POSITIVE-EARLY"}, {"TC-TDXD-EARLY-STAGE", "TC-TDXD-CRITERIA-NOT-MET", "TC-HER2-TARGETED-NOT-POSITIVE", "DG-SCORE-INCONSISTENT"}, id="7-early-positive-tdxd-planned"),
    pytest.param("wx-8", "LOW", {"TC-TDXD-EARLY-STAGE"}, {"TDXD-POSITIVE-EARLY", "TC-HER2-TARGETED-NOT-POSITIVE", "TDXD-CANDIDATE"}, id="8-early-low-tdxd-planned"),
    pytest.param("wx-9", "ULTRALOW", {"TDXD-HR-DB06"}, {"DG-ZERO-SUBTYPE", "DG-SCORE-INCONSISTENT", "TDXD-LOW-DB04", "TDXD-CANDIDATE"}, id="9-metastatic-ultralow-db06"),
    pytest.param("wx-10", "ZERO_UNSPECIFIED", {"DG-SCORE-INCONSISTENT", "DG-ZERO-SUBTYPE"}, TDXD_CODES, id="10-metastatic-0-strong-complete-not-determinable"),
]

# Severities the examples name, and the classification fields they pin.
SEVERITIES = [
    pytest.param("wx-7", "TDXD-POSITIVE-EARLY", "INFO", id="7-tdxd-positive-early-info"),
    pytest.param("wx-8", "TC-TDXD-EARLY-STAGE", "WARNING", id="8-tc-tdxd-early-stage-warning"),
    pytest.param("wx-9", "TDXD-HR-DB06", "WARNING", id="9-tdxd-hr-db06-warning"),
    pytest.param("wx-10", "DG-ZERO-SUBTYPE", "WARNING", id="10-dg-zero-subtype-warning"),
    pytest.param("wx-10", "DG-SCORE-INCONSISTENT", "WARNING", id="10-dg-score-inconsistent-warning"),
]
CLASSIFIED = [
    pytest.param("wx-7", "THREE_PLUS", "C2", id="7-3plus-C2"),
    pytest.param("wx-8", "ONE_PLUS", "C7", id="8-1plus-C7"),
    pytest.param("wx-9", "ZERO", "C8", id="9-0-ultralow-C8"),
    pytest.param("wx-10", "ZERO", "C10", id="10-0-not-determinable-C10-score-kept"),
]


@pytest.fixture(scope="module")
def worked_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Record]:
    outputs, done = evaluate(dumps(list(WORKED.values())), tmp_path=tmp_path_factory.mktemp("worked"))
    assert done.returncode == 0, done.stderr
    assert len(outputs) == len(WORKED)
    return {o["event_id"]: o for o in outputs}


class TestWorkedExamples:
    """her2-rules.md section 7: category and the expected codes present."""

    @pytest.mark.parametrize(("event_id", "category", "present", "absent"), EXPECTED)
    def test_example(
        self, worked_outputs: dict[str, Record], event_id: str, category: str, present: set[str], absent: set[str]
    ) -> None:
        output = worked_outputs[event_id]
        assert output["errors"] == []
        assert output["classification"]["category"] == category
        assert present <= codes(output), sorted(codes(output))
        assert not (absent & codes(output)), sorted(absent & codes(output))

    @pytest.mark.parametrize(("event_id", "code", "severity"), SEVERITIES)
    def test_example_severity(self, worked_outputs: dict[str, Record], event_id: str, code: str, severity: str) -> None:
        (alert,) = [a for a in worked_outputs[event_id]["alerts"] if a["code"] == code]
        assert alert["severity"] == severity

    @pytest.mark.parametrize(("event_id", "score", "row"), CLASSIFIED)
    def test_example_score_and_row(self, worked_outputs: dict[str, Record], event_id: str, score: str, row: str) -> None:
        """Section 2 and 4: the reported score is kept and the deciding row is the spec's."""
        classification = worked_outputs[event_id]["classification"]
        assert (classification["ihc_score"], classification["decided_by"]) == (score, row)

    def test_example_6_names_the_prior_sample(self, worked_outputs: dict[str, Record]) -> None:
        alerts = {a["code"]: a for a in worked_outputs["wx-6b"]["alerts"]}
        assert "acc-primary" in alerts["TDXD-LOW-DB04"]["detail"]
        assert "acc-primary" in alerts["RT-DISCORDANT"]["detail"]

    def test_output_shape(self, worked_outputs: dict[str, Record]) -> None:
        """design.md: {"event_id", "classification": {"category", ...}, "alerts": [...], "errors": [...]}."""
        output = worked_outputs["wx-2"]
        assert {"event_id", "classification", "alerts", "errors"} <= set(output)
        classification = output["classification"]
        assert classification["ihc_score"] == "ONE_PLUS"
        assert classification["ish_group"] is None
        assert classification["hr_status"] == "POSITIVE"
        assert classification["guidance"]
        for alert in output["alerts"]:
            assert {"alert_type", "code", "rule_id", "severity", "alert_id", "evidence"} <= set(alert)

    def test_example_5_ish_group_in_output(self, worked_outputs: dict[str, Record]) -> None:
        assert worked_outputs["wx-5"]["classification"]["ish_group"] == 3


# ---------------------------------------------------------------------------------------------
# Section 2: the IHC 0 sub-type, one row per step, end to end (metastatic, ER 90 %, 1 endocrine line)
# ---------------------------------------------------------------------------------------------

ZERO_DB06 = {"TDXD-HR-DB06"}
ZERO_GAPS = {"DG-ZERO-SUBTYPE", "DG-SCORE-INCONSISTENT"}
SUBTYPE_ROWS = [
    # step 1: not determinable -> ZERO_UNSPECIFIED, both gaps, never ultralow (no DB06)
    pytest.param({"staining_intensity": "WEAK_MODERATE"}, "ZERO_UNSPECIFIED", ZERO_GAPS, ZERO_DB06, id="1-weak-moderate"),
    pytest.param({"percent_cells_stained": 5.0, "staining_intensity": "STRONG"}, "ZERO_UNSPECIFIED", ZERO_GAPS, ZERO_DB06, id="1-strong-5-percent"),
    pytest.param({"percent_cells_stained": 5.0, "staining_completeness": "COMPLETE"}, "ZERO_UNSPECIFIED", ZERO_GAPS, ZERO_DB06, id="1-complete-5-percent"),
    pytest.param({"percent_cells_stained": 11.0, "staining_intensity": "FAINT", "staining_completeness": "INCOMPLETE"}, "ZERO_UNSPECIFIED", ZERO_GAPS, ZERO_DB06, id="1-11-percent-faint-incomplete"),
    pytest.param({"percent_cells_stained": 0.0, "staining_intensity": "STRONG", "staining_completeness": "COMPLETE"}, "ZERO_UNSPECIFIED", ZERO_GAPS, ZERO_DB06, id="1-before-2-zero-percent-strong"),
    # step 2: null
    pytest.param({"percent_cells_stained": 0.0}, "NULL", set(), ZERO_GAPS | ZERO_DB06, id="2-zero-percent"),
    pytest.param({"percent_cells_stained": 5.0, "staining_intensity": "NONE"}, "NULL", set(), ZERO_GAPS | ZERO_DB06, id="2-before-3-intensity-none"),
    # step 3: ultralow
    pytest.param({"percent_cells_stained": 10.0}, "ULTRALOW", ZERO_DB06, ZERO_GAPS, id="3-exactly-10-percent"),
    pytest.param({"staining_intensity": "FAINT"}, "ULTRALOW", ZERO_DB06, ZERO_GAPS, id="3-faint"),
    pytest.param({"staining_completeness": "INCOMPLETE"}, "ULTRALOW", ZERO_DB06, ZERO_GAPS, id="3-incomplete"),
    # step 4: not stated -> ZERO_UNSPECIFIED with DG-ZERO-SUBTYPE only
    pytest.param({}, "ZERO_UNSPECIFIED", {"DG-ZERO-SUBTYPE"}, {"DG-SCORE-INCONSISTENT"} | ZERO_DB06, id="4-not-stated"),
]


@pytest.fixture(scope="module")
def subtype_outputs(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    records = [
        result(
            f"sub-{i}",
            specimen=specimen("DISTANT_METASTASIS", body_site="liver"),
            her2_ihc=ihc("ZERO", **param.values[0]),
            clinical_context={"disease_setting": "METASTATIC", "metastatic_endocrine_therapy_lines": 1},
        )
        for i, param in enumerate(SUBTYPE_ROWS)
    ]
    outputs, done = evaluate(dumps(records), tmp_path=tmp_path_factory.mktemp("subtype"))
    assert done.returncode == 0, done.stderr
    assert len(outputs) == len(records)
    return outputs


class TestZeroSubtypeRows:
    """her2-rules.md section 2: not determinable -> null -> ultralow -> not stated, via `evaluate`."""

    @pytest.mark.parametrize(("detail", "category", "present", "absent"), SUBTYPE_ROWS)
    def test_row(
        self, subtype_outputs: list[Record], detail: Record, category: str, present: set[str], absent: set[str]
    ) -> None:
        index = next(i for i, param in enumerate(SUBTYPE_ROWS) if param.values[0] is detail)
        output = subtype_outputs[index]
        assert output["errors"] == []
        assert output["classification"]["category"] == category
        assert output["classification"]["ihc_score"] == "ZERO"
        assert present <= codes(output), sorted(codes(output))
        assert not (absent & codes(output)), sorted(absent & codes(output))
        for alert in output["alerts"]:
            if alert["code"] == "DG-ZERO-SUBTYPE":
                assert alert["severity"] == "WARNING"  # HR-positive and advanced


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


class TestInputHandling:
    """5.5 Input and design.md: blank lines skipped; an invalid line gives `errors`, never a crash."""

    def test_invalid_lines_and_blank_lines(self, tmp_path: Path) -> None:
        lines = [
            json.dumps(result("ok-1")),
            "",
            "this is not json",
            "   ",
            json.dumps({k: v for k, v in result("bad-missing").items() if k != "patient_id"}),
            json.dumps(result("bad-enum", report_status="final")),
            json.dumps(result("bad-nested-enum", her2_ihc={"score": "1+"})),
            json.dumps(result("bad-null-required", accession_id=None)),
            json.dumps([1, 2, 3]),
            "\t",
            json.dumps(result("ok-2")),
        ]
        outputs, done = evaluate(lines, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        non_blank = [line for line in lines if line.strip()]
        assert len(outputs) == len(non_blank)
        ok = [o for o in outputs if not o["errors"]]
        assert [o["event_id"] for o in ok] == ["ok-1", "ok-2"]
        bad = [o for o in outputs if o["errors"]]
        assert len(bad) == 6
        for output in bad:
            assert output["alerts"] == []
            assert output["classification"] is None
        echoed = {o["event_id"] for o in bad}
        assert {"bad-missing", "bad-enum", "bad-nested-enum", "bad-null-required"} <= echoed

    @pytest.mark.parametrize("from_file", [True, False], ids=["file", "stdin"])
    def test_a_line_that_is_not_utf8_is_an_error_not_a_crash(self, tmp_path: Path, from_file: bool) -> None:
        """A file opened as UTF-8 text stopped the whole run at the first byte that is not UTF-8
        (a traceback, no output for any line); now that line alone is an error."""
        data = b"".join(
            (json.dumps(result("ok-1")).encode(), b"\n", b'{"event_id": "bad-\xff\xfe"}\n', json.dumps(result("ok-2")).encode(), b"\n")
        )
        command = [sys.executable, "-m", "consumer", "evaluate"]
        stdin: bytes | None = data
        if from_file:
            path = tmp_path / "events.ndjson"
            path.write_bytes(data)
            command.append(str(path))
            stdin = None
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=CLI_TIMEOUT_S, check=False)  # noqa: S603 - our own module
        assert done.returncode == 0, done.stderr
        outputs = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert [(o["line"], o["event_id"]) for o in outputs] == [(1, "ok-1"), (2, None), (3, "ok-2")]
        [error] = outputs[1]["errors"]
        assert (error["stage"], error["reason"]) == ("decode", "json-decode")
        assert "UTF-8" in error["message"]

    @pytest.mark.parametrize(
        ("bad_line", "error"),
        [
            # json.loads raises a plain ValueError (not JSONDecodeError) past 4,300 digits
            pytest.param('{"event_id": "big", "n": ' + "9" * 5_000 + "}", ("decode", "json-decode", None, "line holds a number with too many digits to read"), id="number-over-the-digit-limit"),
            # a lone surrogate escape passed validation and raised UnicodeEncodeError at the output
            pytest.param(json.dumps(result("lone", patient_id="pat-\ud800")), ("validate", "schema-validation", "lone", "patient_id: must be valid Unicode text (no lone surrogate escapes)"), id="lone-surrogate-patient-id"),
            pytest.param(json.dumps(result("lone-nested", specimen=specimen("DISTANT_METASTASIS", body_site="liver \udc00"), her2_ihc=LOW_IHC, clinical_context={"disease_setting": "METASTATIC", "metastatic_chemotherapy_lines": 1})), ("validate", "schema-validation", "lone-nested", "specimen.body_site: must be valid Unicode text (no lone surrogate escapes)"), id="lone-surrogate-nested"),
            # the event id itself: echoed in the result line, it crashed the output (review)
            pytest.param(json.dumps(result("e-\ud800")), ("validate", "schema-validation", None, "event_id: must be valid Unicode text (no lone surrogate escapes)"), id="lone-surrogate-event-id"),
        ],
    )
    @pytest.mark.parametrize("history", [False, True], ids=["plain", "history"])
    def test_a_line_that_crashed_the_run_is_an_error_entry(self, tmp_path: Path, bad_line: str, error: tuple[str, str, str | None, str], history: bool) -> None:
        """README: an invalid line gives an `errors` entry, never a crash; these two ended the
        whole run with a traceback (the lines after them were never evaluated)."""
        stage, reason, event_id, message = error
        lines = [json.dumps(result("ok-1")), bad_line, json.dumps(result("ok-2"))]
        outputs, done = evaluate(lines, *(["--history"] if history else []), tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert [(o["line"], o["event_id"]) for o in outputs] == [(1, "ok-1"), (2, event_id), (3, "ok-2")]
        assert outputs[1]["errors"] == [{"stage": stage, "reason": reason, "message": message}]
        assert (outputs[1]["classification"], outputs[1]["alerts"]) == (None, [])

    def test_unknown_fields_ignored_and_null_is_absent(self, tmp_path: Path) -> None:
        record = result("lenient", her2_ish=None, source_system=None, pr=None, extra_field={"x": 1})
        record["her2_ihc"] = {**LOW_IHC, "vendor_field": "ignored"}
        record["specimen"] = {**specimen(), "room": "B12"}
        outputs, done = evaluate([json.dumps(record)], tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        (output,) = outputs
        assert output["errors"] == []
        assert output["classification"]["category"] == "LOW"

    def test_missing_probe_type_means_dual(self, tmp_path: Path) -> None:
        record = result("dual", her2_ihc=ihc("TWO_PLUS"), her2_ish={"her2_cep17_ratio": 2.4, "her2_copies_per_cell": 5.2, "cells_counted": 30})
        outputs, _ = evaluate([json.dumps(record)], tmp_path=tmp_path)
        assert outputs[0]["classification"]["category"] == "POSITIVE"
        assert outputs[0]["classification"]["ish_group"] == 1

    @pytest.mark.parametrize("args", [pytest.param(["-"], id="dash"), pytest.param([], id="default")])
    def test_stdin(self, args: list[str]) -> None:
        outputs, done = evaluate([json.dumps(WORKED["wx-1"]), "", json.dumps(WORKED["wx-4"])], *args)
        assert done.returncode == 0, done.stderr
        assert [o["classification"]["category"] for o in outputs] == ["LOW", "EQUIVOCAL"]

    def test_extreme_dates_do_not_crash(self, tmp_path: Path) -> None:
        record = result(
            "far-future",
            clinical_context={
                "disease_setting": "METASTATIC",
                "adjuvant_chemotherapy_end_date": "9999-08-31",
                "recurrence_date": "9999-12-31",
            },
        )
        outputs, done = evaluate([json.dumps(record), json.dumps(result("after"))], tmp_path=tmp_path)
        assert done.returncode == 0
        assert "Traceback" not in done.stderr
        assert [o["event_id"] for o in outputs] == ["far-future", "after"]


# ---------------------------------------------------------------------------------------------
# --history: report lifecycle
# ---------------------------------------------------------------------------------------------


def same_patient(event_id: str, accession: str, time: str, **fields: Any) -> Record:
    return result(event_id, patient_id="pat-H", accession_id=accession, event_time=time, **fields)


METASTATIC_LOW_AFTER_CHEMO = {
    "specimen": specimen("DISTANT_METASTASIS", "2025-05-01", body_site="liver"),
    "her2_ihc": LOW_IHC,
    "clinical_context": {"disease_setting": "METASTATIC", "metastatic_chemotherapy_lines": 1},
}





def run_cli(records: list[Record], tmp_path: Path) -> list[Record]:
    """`evaluate --history` in a subprocess."""
    outputs, done = evaluate(dumps(records), "--history", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(outputs) == len(records)
    return outputs


def run_store(records: list[Record], tmp_path: Path) -> list[Record]:
    """The same events straight through HistoryStore.apply (the consumer's lifecycle code)."""
    del tmp_path
    store, converter, pipeline = HistoryStore(), JsonConverter(), Pipeline(load_ruleset())
    outputs = []
    for record in records:
        outcome = store.apply(check_event(converter.convert(record)), pipeline)
        outputs.append(json.loads(jsonout.dumps({"classification": outcome.classification, "alerts": outcome.alerts})))
    return outputs


RUNNERS = {"cli": run_cli, "store": run_store}
BOTH = pytest.mark.parametrize("runner", ["cli", "store"])
BOTH_PASSING = pytest.mark.parametrize("runner", ["cli", "store"])


class TestHistory:
    """design.md `--history` and her2-rules.md section 1 report lifecycle."""

    @BOTH
    def test_a_discordance_and_tdxd_from_history(self, tmp_path: Path, runner: str) -> None:
        primary = same_patient("h-1", "acc-prim", "2024-01-10T09:00:00Z", specimen=specimen("PRIMARY_BREAST", "2024-01-05"), her2_ihc=NULL_IHC, clinical_context={"disease_setting": "EARLY"})
        metastasis = same_patient("h-2", "acc-met", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        outputs = RUNNERS[runner]([primary, metastasis], tmp_path)
        assert outputs[1]["classification"]["category"] == "LOW"
        later = codes(outputs[1])
        assert "RT-DISCORDANT" in later
        assert "TDXD-LOW-DB04" in later
        assert "acc-prim" in {a["code"]: a for a in outputs[1]["alerts"]}["RT-DISCORDANT"]["detail"]

    def test_an_event_id_reused_with_other_content_is_an_error_entry(self, tmp_path: Path) -> None:
        """As the service dead-letters it: the event_id of the accession's latest report with
        other content (an amended 3+ over a 1+) is a second event under a reused id."""
        low = same_patient("u-1", "acc-1", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        amended = {**low, "report_status": "AMENDED", "her2_ihc": ihc("THREE_PLUS", percent_cells_stained=90.0)}
        outputs, done = evaluate(dumps([low, amended, low]), "--history", tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "TDXD-LOW-DB04" in codes(outputs[0])
        assert outputs[1]["classification"] is None
        assert outputs[1]["alerts"] == []
        assert [(e["stage"], e["reason"]) for e in outputs[1]["errors"]] == [("validate", "event-id-reused")]
        assert outputs[2]["errors"] == []
        assert "TDXD-LOW-DB04" in codes(outputs[2])

    def test_a_control_without_history(self, tmp_path: Path) -> None:
        primary = same_patient("h-1", "acc-prim", "2024-01-10T09:00:00Z", her2_ihc=NULL_IHC, clinical_context={"disease_setting": "EARLY"})
        metastasis = same_patient("h-2", "acc-met", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        alone, done = evaluate(dumps([primary, metastasis]), tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "RT-DISCORDANT" not in codes(alone[1])

    @BOTH
    def test_a_reverse_tdxd_route_on_remembered_low_sample(self, tmp_path: Path, runner: str) -> None:
        """Example 6 with the prior LOW sample remembered from an earlier event, not sent along."""
        primary = same_patient("r-1", "acc-prim", "2024-01-10T09:00:00Z", her2_ihc=LOW_IHC, clinical_context={"disease_setting": "EARLY"})
        metastasis = same_patient(
            "r-2", "acc-met", "2025-05-03T09:00:00Z",
            **{**METASTATIC_LOW_AFTER_CHEMO, "her2_ihc": NULL_IHC},
        )
        outputs = RUNNERS[runner]([primary, metastasis], tmp_path)
        assert outputs[1]["classification"]["category"] == "NULL"
        assert {"RT-DISCORDANT", "TDXD-LOW-DB04"} <= codes(outputs[1])
        db04 = {a["code"]: a for a in outputs[1]["alerts"]}["TDXD-LOW-DB04"]
        assert "acc-prim" in db04["detail"]

    @BOTH
    def test_b_amended_resolves_with_same_id(self, tmp_path: Path, runner: str) -> None:
        """An AMENDED report that ends a finding brings new information: RESOLVED (section 8),
        the same alert_id, the next revision."""
        final = same_patient("b-1", "acc-B", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        amended = same_patient(
            "b-2", "acc-B", "2025-05-04T09:00:00Z", report_status="AMENDED",
            **{**METASTATIC_LOW_AFTER_CHEMO, "her2_ihc": NULL_IHC},
        )
        outputs = RUNNERS[runner]([final, amended], tmp_path)
        first = {a["code"]: a for a in outputs[0]["alerts"]}
        assert "TDXD-LOW-DB04" in first
        resolved = {a["code"]: a for a in outputs[1]["alerts"] if a["status"] == "RESOLVED"}
        assert "TDXD-LOW-DB04" in resolved
        assert not [a for a in outputs[1]["alerts"] if a["status"] == "RETRACTED"]
        # only findings it no longer supports are closed, each with its id and the next revision
        active_now = {a["code"] for a in outputs[1]["alerts"] if a["status"] == "ACTIVE"}
        assert set(resolved) == set(first) - active_now
        for code, alert in resolved.items():
            assert alert["alert_id"] == first[code]["alert_id"]
            assert alert["revision"] == first[code]["revision"] + 1

    @BOTH_PASSING
    def test_b_amended_keeps_what_it_still_supports(self, tmp_path: Path, runner: str) -> None:
        final = same_patient("k-1", "acc-K", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        amended = same_patient("k-2", "acc-K", "2025-05-04T09:00:00Z", report_status="CORRECTED", **METASTATIC_LOW_AFTER_CHEMO)
        outputs = RUNNERS[runner]([final, amended], tmp_path)
        assert "TDXD-LOW-DB04" in codes(outputs[0])
        # a corrected report with the same content changes nothing: nothing is re-published
        assert outputs[1]["alerts"] == []

    @BOTH
    def test_c_cancelled_retracts_all(self, tmp_path: Path, runner: str) -> None:
        final = same_patient("c-1", "acc-C", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        cancelled = same_patient("c-2", "acc-C", "2025-05-05T09:00:00Z", report_status="CANCELLED", **METASTATIC_LOW_AFTER_CHEMO)
        outputs = RUNNERS[runner]([final, cancelled], tmp_path)
        active = {a["alert_id"] for a in outputs[0]["alerts"] if a["status"] == "ACTIVE"}
        assert active
        after = outputs[1]["alerts"]
        assert all(a["status"] == "RETRACTED" for a in after)
        assert {a["alert_id"] for a in after} == active

    @BOTH_PASSING
    def test_c_cancelled_sample_no_longer_counts(self, tmp_path: Path, runner: str) -> None:
        positive = same_patient("c-3", "acc-P", "2024-01-10T09:00:00Z", her2_ihc=ihc("THREE_PLUS", percent_cells_stained=90.0))
        cancelled = same_patient("c-4", "acc-P", "2024-01-11T09:00:00Z", report_status="CANCELLED", her2_ihc=ihc("THREE_PLUS"))
        low = same_patient("c-5", "acc-L", "2025-05-03T09:00:00Z", clinical_context={"disease_setting": "EARLY", "planned_therapies": ["Herceptin"]})
        outputs = RUNNERS[runner]([positive, cancelled, low], tmp_path)
        assert "TC-HER2-TARGETED-NOT-POSITIVE" in codes(outputs[2])
        assert "RT-CONVERSION" not in codes(outputs[2])

    @BOTH
    def test_c_remembered_positive_counts_until_cancelled(self, tmp_path: Path, runner: str) -> None:
        """Control for the test above: without the cancellation the POSITIVE sample is remembered."""
        positive = same_patient("c-6", "acc-P", "2024-01-10T09:00:00Z", her2_ihc=ihc("THREE_PLUS", percent_cells_stained=90.0))
        low = same_patient("c-7", "acc-L", "2025-05-03T09:00:00Z", clinical_context={"disease_setting": "EARLY", "planned_therapies": ["Herceptin"]})
        outputs = RUNNERS[runner]([positive, low], tmp_path)
        assert "RT-CONVERSION" in codes(outputs[1])
        assert "TC-HER2-TARGETED-NOT-POSITIVE" not in codes(outputs[1])

    @BOTH_PASSING
    def test_d_same_event_twice(self, tmp_path: Path, runner: str) -> None:
        final = same_patient("d-1", "acc-D", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        outputs = RUNNERS[runner]([final, final], tmp_path)
        first = [a["alert_id"] for a in outputs[0]["alerts"]]
        second = [a["alert_id"] for a in outputs[1]["alerts"]]
        assert first
        assert set(second) <= set(first)  # nothing new
        assert sorted(second) in ([], sorted(first))  # a redelivery re-emits identical ids (or nothing)
        assert all(a["status"] == "ACTIVE" for a in outputs[1]["alerts"])
        assert outputs[1]["classification"]["category"] == outputs[0]["classification"]["category"]

    @BOTH_PASSING
    def test_e_preliminary_raises_nothing(self, tmp_path: Path, runner: str) -> None:
        prelim = same_patient("e-1", "acc-E", "2025-05-03T09:00:00Z", report_status="PRELIMINARY", **METASTATIC_LOW_AFTER_CHEMO)
        final = same_patient("e-2", "acc-E", "2025-05-04T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        outputs = RUNNERS[runner]([prelim, final], tmp_path)
        assert outputs[0]["alerts"] == []
        assert outputs[0]["classification"]["category"] == "LOW"
        assert "TDXD-LOW-DB04" in codes(outputs[1])


class TestClinical202612History:
    """The 2026.12 rules over a patient's reports (her2-rules.md 5.1, 5.2, 5.3 and section 8)."""

    @BOTH
    def test_early_stage_caution_resolves_when_a_positive_sample_arrives(self, tmp_path: Path, runner: str) -> None:
        """5.2: TC-TDXD-EARLY-STAGE only while no sample was ever POSITIVE; then TDXD-POSITIVE-EARLY."""
        early = {"disease_setting": "EARLY", "planned_therapies": ["Enhertu"]}
        low = same_patient("t-1", "acc-core", "2026-06-01T09:00:00Z", specimen=specimen("PRIMARY_BREAST", "2026-05-20"), her2_ihc=LOW_IHC, clinical_context=early)
        positive = same_patient(
            "t-2", "acc-resection", "2026-09-01T09:00:00Z", specimen=specimen("PRIMARY_BREAST", "2026-08-25"),
            her2_ihc=ihc("THREE_PLUS", percent_cells_stained=90.0, staining_intensity="STRONG", staining_completeness="COMPLETE"), clinical_context=early,
        )
        outputs = RUNNERS[runner]([low, positive], tmp_path)
        assert "TC-TDXD-EARLY-STAGE" in codes(outputs[0])
        assert "TDXD-POSITIVE-EARLY" not in codes(outputs[0])
        second = {a["code"]: a for a in outputs[1]["alerts"]}
        assert second["TC-TDXD-EARLY-STAGE"]["status"] == "RESOLVED"
        assert second["TDXD-POSITIVE-EARLY"]["status"] == "ACTIVE"

    @BOTH
    def test_all_zero_unchanged_by_an_older_zero_sample(self, tmp_path: Path, runner: str) -> None:
        """Section 8 Content: RT-ALL-ZERO names the most recent decisive sample, so an older IHC 0
        sample does not change the finding (no new revision)."""
        metastatic = {"disease_setting": "METASTATIC"}
        recent = same_patient("z-1", "acc-liver", "2026-06-01T09:00:00Z", specimen=specimen("DISTANT_METASTASIS", "2026-05-20"), her2_ihc=NULL_IHC, clinical_context=metastatic)
        older = same_patient("z-2", "acc-primary", "2026-06-02T09:00:00Z", specimen=specimen("PRIMARY_BREAST", "2021-03-01"), her2_ihc=NULL_IHC, clinical_context=metastatic)
        outputs = RUNNERS[runner]([recent, older], tmp_path)
        assert "RT-ALL-ZERO" in codes(outputs[0])
        assert "acc-liver" in {a["code"]: a for a in outputs[0]["alerts"]}["RT-ALL-ZERO"]["detail"]
        assert "RT-ALL-ZERO" not in {a["code"] for a in outputs[1]["alerts"]}


# ---------------------------------------------------------------------------------------------
# A future-dated event_time (issue 15, item 4)
# ---------------------------------------------------------------------------------------------


class TestFutureEventTime:
    """An event_time more than 24 h ahead of the clock is an `errors` entry (stage validate,
    reason event-time-in-future), as the service dead-letters it; it never reaches the history,
    so a later CANCELLED report of the accession still retracts its alerts."""

    def test_a_9999_report_is_an_error_and_the_accession_stays_open(self, tmp_path: Path) -> None:
        final = same_patient("f-1", "acc-F", "2025-05-03T09:00:00Z", **METASTATIC_LOW_AFTER_CHEMO)
        future = same_patient("f-2", "acc-F", "9999-12-31T23:59:59Z", report_status="CORRECTED", **METASTATIC_LOW_AFTER_CHEMO)
        cancelled = same_patient("f-3", "acc-F", "2025-05-05T09:00:00Z", report_status="CANCELLED", **METASTATIC_LOW_AFTER_CHEMO)
        outputs, done = evaluate(dumps([final, future, cancelled]), "--history", tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        opened = {a["alert_id"] for a in outputs[0]["alerts"] if a["status"] == "ACTIVE"}
        assert opened
        assert outputs[1]["event_id"] == "f-2"
        assert outputs[1]["classification"] is None
        assert outputs[1]["alerts"] == []
        (error,) = outputs[1]["errors"]
        assert (error["stage"], error["reason"]) == ("validate", "event-time-in-future")
        assert "9999" not in error["message"]
        assert "pat-H" not in error["message"]
        retracted = {a["alert_id"] for a in outputs[2]["alerts"] if a["status"] == "RETRACTED"}
        assert retracted == opened  # the accession was not locked by the future-dated report

    @pytest.mark.parametrize(
        ("event_time", "refused"),
        [
            pytest.param("2026-12-07T12:00:00Z", False, id="exactly-24h-ahead"),
            pytest.param("2026-12-07T12:00:00.001Z", True, id="one-ms-over"),
            pytest.param("9999-12-31T23:59:59Z", True, id="far-future"),
            pytest.param(None, False, id="missing"),
        ],
    )
    def test_evaluate_lines_uses_the_injected_clock(self, event_time: str | None, refused: bool) -> None:
        now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
        record = result("clocked", event_time=event_time)
        (output,) = evaluate_lines([json.dumps(record)], Pipeline(load_ruleset()), clock=lambda: now)
        reasons = [e["reason"] for e in output["errors"]]
        assert reasons == (["event-time-in-future"] if refused else [])
        assert (output["classification"] is None) is refused

    def test_the_tolerance_is_a_parameter(self) -> None:
        now = dt.datetime(2025, 6, 1, 8, 0, tzinfo=dt.UTC)  # the record is 2 h ahead of it
        lines = [json.dumps(result("two-hours-ahead"))]
        pipeline = Pipeline(load_ruleset())
        (hour,) = evaluate_lines(lines, pipeline, clock=lambda: now, max_event_time_skew=dt.timedelta(hours=1))
        (day,) = evaluate_lines(lines, pipeline, clock=lambda: now)
        assert [e["reason"] for e in hour["errors"]] == ["event-time-in-future"]
        assert day["errors"] == []


# ---------------------------------------------------------------------------------------------
# The service's settings: HER2_HISTORY_RETENTION_DAYS, HER2_MAX_EVENT_TIME_SKEW_SECONDS
# ---------------------------------------------------------------------------------------------

SHARED_SETTINGS = ("HER2_HISTORY_RETENTION_DAYS", "HER2_MAX_EVENT_TIME_SKEW_SECONDS")
Seen = tuple[Any, ...]  # what became of one event, as the service and evaluate both tell it


def settings_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `settings` as the only shared settings set."""
    return {**{k: v for k, v in os.environ.items() if k not in SHARED_SETTINGS}, **settings}


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def service_run(records: list[Record], settings: Mapping[str, str]) -> list[Seen]:
    """The events through the service's own components, configured by `settings` through
    Settings.from_env: the store of a newly assigned partition (Restorer.new_store, which
    applies the retention) and the Processor (which refuses an event_time beyond the
    tolerance), on the real clock as `evaluate` runs on it."""
    config = Settings.from_env({**settings, "HER2_HISTORY_STORE": "memory"})
    tp = TopicPartition(config.topics.input, 0)
    restorer = Restorer(None, config, lambda: "test", Metrics.on_new_registry(), lambda: False, utc_now)  # type: ignore[arg-type]  # no clients: nothing is restored
    store = restorer.new_store(tp)
    processor = Processor(config, Pipeline(load_ruleset()), Codecs.build(config, None), lambda topic: 1, utc_now)
    encoder, converter = Encoder("single-object", parsed_schema(PATHOLOGY_RESULT)), JsonConverter()
    seen: list[Seen] = []
    for offset, record in enumerate(records):
        value = encoder.encode(converter.convert(record))
        message = types.SimpleNamespace(key=record["patient_id"].encode(), value=value, offset=offset, headers=[], timestamp=0)
        result = processor.process(tp, message, store)
        if isinstance(result, DeadLettered):
            seen.append(("refused", result.stage, result.reason))
        else:
            assert isinstance(result, Processed)
            seen.append(("evaluated", result.category, sorted(result.alerts)))
    return seen


def evaluate_run(records: list[Record], settings: Mapping[str, str], tmp_path: Path) -> list[Seen]:
    """`evaluate --history` on the records with `settings` in its environment, told as service_run tells it."""
    outputs, done = evaluate(dumps(records), "--history", tmp_path=tmp_path, env=settings_env(settings))
    assert done.returncode == 0, done.stderr
    seen: list[Seen] = []
    for output in outputs:
        if output["errors"]:
            (error,) = output["errors"]
            seen.append(("refused", error["stage"], error["reason"]))
        else:
            alerts = sorted((a["alert_type"], a["code"], a["status"]) for a in output["alerts"])
            seen.append(("evaluated", output["classification"]["category"], alerts))
    return seen


class TestServiceSettings:
    """`evaluate --history` applies the history retention and the event-time tolerance the
    service applies, from the same variables: the same events give the same alerts."""

    @pytest.mark.parametrize(
        ("settings", "age_days", "dropped"),
        [
            pytest.param({}, 4000, False, id="default-keeps-forever"),
            pytest.param({"HER2_HISTORY_RETENTION_DAYS": "365"}, 300, False, id="365-days-keeps-300"),
            pytest.param({"HER2_HISTORY_RETENTION_DAYS": "365"}, 400, True, id="365-days-drops-400"),
            pytest.param({"HER2_HISTORY_RETENTION_DAYS": "0"}, 4000, False, id="0-keeps-forever"),
        ],
    )
    def test_an_old_report_drops_out_as_in_the_service(self, tmp_path: Path, settings: dict[str, str], age_days: int, dropped: bool) -> None:
        """An old LOW sample that nothing rests on leaves the history once it is older than
        the retention (off by default); the later metastatic NULL report after chemotherapy
        then no longer qualifies for the T-DXd 'any sample' route. (A POSITIVE sample is kept
        for good: tests/unit/test_history_retention.py.)"""
        now = utc_now()
        low = same_patient("r-1", "acc-old", iso(now - dt.timedelta(days=age_days)), her2_ihc=LOW_IHC, clinical_context={"disease_setting": "EARLY"})
        null = same_patient("r-2", "acc-new", iso(now - dt.timedelta(days=1)), her2_ihc=NULL_IHC, clinical_context={"disease_setting": "METASTATIC", "metastatic_chemotherapy_lines": 1})
        service = service_run([low, null], settings)
        assert evaluate_run([low, null], settings, tmp_path) == service
        later = {code for _, code, status in service[1][2] if status == "ACTIVE"}
        assert ("TDXD-LOW-DB04" in later) is not dropped

    @pytest.mark.parametrize(
        ("settings", "ahead", "refused"),
        [
            pytest.param({}, dt.timedelta(hours=2), False, id="default-24h-accepts-2h"),
            pytest.param({}, dt.timedelta(days=2), True, id="default-24h-refuses-2d"),
            pytest.param({"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "3600"}, dt.timedelta(minutes=30), False, id="1h-accepts-30min"),
            pytest.param({"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "3600"}, dt.timedelta(hours=2), True, id="1h-refuses-2h"),
            pytest.param({"HER2_MAX_EVENT_TIME_SKEW_SECONDS": str(7 * 86400)}, dt.timedelta(days=2), False, id="7d-accepts-2d"),
        ],
    )
    def test_a_future_dated_report_is_refused_as_in_the_service(self, tmp_path: Path, settings: dict[str, str], ahead: dt.timedelta, refused: bool) -> None:
        """A CORRECTED report dated `ahead` of the clock: refused, it never reaches the history
        and the CANCELLED report after it retracts the accession's alerts; accepted, it is the
        accession's latest report and the cancellation, dated before it, is stale."""
        now = utc_now()
        final = same_patient("s-1", "acc-S", iso(now - dt.timedelta(hours=1)), **METASTATIC_LOW_AFTER_CHEMO)
        future = same_patient("s-2", "acc-S", iso(now + ahead), report_status="CORRECTED", **METASTATIC_LOW_AFTER_CHEMO)
        cancelled = same_patient("s-3", "acc-S", iso(now - dt.timedelta(minutes=1)), report_status="CANCELLED", **METASTATIC_LOW_AFTER_CHEMO)
        service = service_run([final, future, cancelled], settings)
        assert evaluate_run([final, future, cancelled], settings, tmp_path) == service
        assert (service[1] == ("refused", "validate", "event-time-in-future")) is refused
        retracted = any(status == "RETRACTED" for _, _, status in service[2][2])
        assert retracted is refused

    @pytest.mark.parametrize(
        ("settings", "args"),
        [
            pytest.param({"HER2_HISTORY_RETENTION_DAYS": "-5"}, ("--history",), id="retention-negative"),
            pytest.param({"HER2_HISTORY_RETENTION_DAYS": "ten"}, ("--history",), id="retention-not-a-number"),
            pytest.param({"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "1d"}, ("--history",), id="skew-not-a-number"),
            pytest.param({"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "0"}, (), id="skew-zero-without-history"),
        ],
    )
    def test_a_bad_value_is_refused_as_the_service_refuses_it(self, tmp_path: Path, settings: dict[str, str], args: tuple[str, ...]) -> None:
        """Exit 2 and the service's message naming the variable, before any line is read."""
        with pytest.raises(ConfigError) as service:
            Settings.from_env(settings)
        outputs, done = evaluate([json.dumps(result("bad-setting"))], *args, tmp_path=tmp_path, env=settings_env(settings))
        assert done.returncode == 2
        assert outputs == []
        assert done.stderr == f"her2-consumer: configuration error: {service.value}\n"
        assert next(iter(settings)) in done.stderr
