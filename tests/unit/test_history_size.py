"""A patient's changelog records stay small however many accessions the patient has (issue 15,
item 2: a patient's single state record reached Kafka's 1 MiB request limit at ~190 accessions
and was silently not written).

The state is split into one changelog record per accession plus one patient-wide record
(consumer/history.py; README "Patient history: the state model"). Driven here through 300
accessions, with the mix of reports that opens, updates, resolves and retracts PATIENT-scoped
findings (HER2-low, 0 and 3+ samples, metastatic context, prior results, amendments and
cancellations), every record the store emits is measured.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from consumer.clinical.pipeline import Pipeline
from consumer.clinical.rules import load_ruleset
from consumer.clinical.validate import MAX_TEXT, JsonConverter, check_event
from consumer.state.store import HistoryStore, parse_key

MIB = 1024 * 1024
ACCESSIONS = 300
T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)

IHC = {
    "low": {
        "score": "ONE_PLUS",
        "percent_cells_stained": 30.0,
        "staining_intensity": "FAINT",
        "staining_completeness": "INCOMPLETE",
        "antibody_clone": "4B5",
        "assay_type": "FDA_APPROVED",
        "controls_documented": True,
    },
    "zero": {
        "score": "ZERO",
        "percent_cells_stained": 0.0,
        "staining_intensity": "NONE",
        "staining_completeness": "NONE",
        "antibody_clone": "4B5",
        "assay_type": "FDA_APPROVED",
        "controls_documented": True,
    },
    "positive": {
        "score": "THREE_PLUS",
        "percent_cells_stained": 90.0,
        "staining_intensity": "STRONG",
        "staining_completeness": "COMPLETE",
        "antibody_clone": "4B5",
        "assay_type": "FDA_APPROVED",
        "controls_documented": True,
    },
    "undocumented": {"score": "ONE_PLUS"},
}
KINDS = ("low", "zero", "low", "positive", "zero", "undocumented")


def _event(patient: str, accession: str, n: int, status: str, kind: str) -> dict[str, Any]:
    record = {
        "event_id": f"E{n}-{status}",
        "event_time": (T0 + dt.timedelta(hours=n)).isoformat(),
        "source_system": "LIS",
        "patient_id": patient,
        "accession_id": accession,
        "report_status": status,
        "specimen": {
            "site": "DISTANT_METASTASIS" if n % 2 else "PRIMARY_BREAST",
            "collection_date": (T0 + dt.timedelta(hours=n)).date().isoformat(),
            "cold_ischemia_minutes": 20,
            "fixation_hours": 24.0,
        },
        "her2_ihc": IHC[kind],
        "er": {
            "percent_positive": 90.0 if n % 3 else 0.0,
            "result": "POSITIVE" if n % 3 else "NEGATIVE",
        },
        "clinical_context": {
            "disease_setting": "METASTATIC",
            "menopausal_status": "POST",
            "metastatic_chemotherapy_lines": n % 3,
            "metastatic_endocrine_therapy_lines": n % 2,
            "planned_therapies": ["trastuzumab deruxtecan"] if n % 5 == 0 else [],
        },
        "prior_her2_results": [
            {
                "accession_id": f"prior-{accession}"[:MAX_TEXT],
                "specimen": {"site": "PRIMARY_BREAST"},
                "her2_ihc": IHC["zero"],
            }
        ]
        if n % 7 == 0
        else [],
    }
    return check_event(JsonConverter().convert(record))


def _story(patient: str, accession_of: Any, count: int) -> list[dict[str, Any]]:
    """FINAL reports of `count` accessions; every 10th is amended, every 13th cancelled."""
    events = []
    n = 0
    for i in range(count):
        accession = accession_of(i)
        kind = KINDS[i % len(KINDS)]
        events.append(_event(patient, accession, n := n + 1, "FINAL", kind))
        if i % 10 == 9:
            events.append(_event(patient, accession, n := n + 1, "AMENDED", "low"))
        if i % 13 == 12:
            events.append(_event(patient, accession, n := n + 1, "CANCELLED", kind))
    return events


def _drive(events: list[dict[str, Any]]) -> tuple[list[tuple[int, bytes, bytes | None]], int]:
    """Apply the events one batch each; ((accessions so far, key, value) of every changelog
    record emitted, alert records published)."""
    store = HistoryStore(None, lambda: NOW)
    pipeline = Pipeline(load_ruleset(), clock=lambda: NOW)
    records: list[tuple[int, bytes, bytes | None]] = []
    published = 0
    accessions: set[str] = set()
    for event in events:
        accessions.add(event["accession_id"])
        published += len(store.apply(event, pipeline).alerts)
        records.extend((len(accessions), k, v) for k, v in store.take_dirty())
    return records, published


def _patient_wide(records: list[tuple[int, bytes, bytes | None]]) -> list[tuple[int, int]]:
    return [(n, len(v)) for n, k, v in records if v is not None and parse_key(k)[1] is None]


@pytest.fixture(scope="module")
def driven() -> tuple[list[tuple[int, bytes, bytes | None]], int]:
    """One QC-like patient through 300 accessions."""
    return _drive(_story("QC-PATIENT-0001", lambda i: f"S26-{i:06d}", ACCESSIONS))


class TestOnePatientManyAccessions:
    def test_the_story_exercises_patient_findings(
        self, driven: tuple[list[tuple[int, bytes, bytes | None]], int]
    ) -> None:
        records, published = driven
        assert max(n for n, _, _ in records) == ACCESSIONS
        assert published > ACCESSIONS  # findings open, change and close along the way
        assert len(_patient_wide(records)) > 50  # the patient-wide part is rewritten often

    def test_every_changelog_record_stays_far_below_1_mib(
        self, driven: tuple[list[tuple[int, bytes, bytes | None]], int]
    ) -> None:
        records, _ = driven
        largest = max(len(k) + len(v or b"") for _, k, v in records)
        assert largest < 16 * 1024, f"a changelog record of {largest} bytes"

    def test_the_patient_wide_record_does_not_grow_with_accessions(
        self, driven: tuple[list[tuple[int, bytes, bytes | None]], int]
    ) -> None:
        sizes = _patient_wide(driven[0])
        early = max(size for n, size in sizes if n <= 50)
        late = max(size for n, size in sizes if n > ACCESSIONS - 50)
        # seq grows by a varint byte now and then; nothing else may grow
        assert late <= early + 4, f"patient-wide record: {early} bytes early, {late} late"

    def test_no_accession_record_grows_with_accessions(
        self, driven: tuple[list[tuple[int, bytes, bytes | None]], int]
    ) -> None:
        sizes = [(n, len(v)) for n, k, v in driven[0] if v is not None and parse_key(k)[1]]
        early = max(size for n, size in sizes if n <= 50)
        late = max(size for n, size in sizes if n > ACCESSIONS - 50)
        assert late <= early + 4, f"accession records: {early} bytes early, {late} late"


def test_worst_case_ids_of_maximal_length_stay_below_1_mib() -> None:
    # the issue: "or sooner with long ids". Every id at the validated maximum (MAX_TEXT
    # characters), 40 accessions: ids, not the number of accessions, decide the size.
    patient = "P" * MAX_TEXT
    records, _ = _drive(_story(patient, lambda i: f"{i:05d}" + "A" * (MAX_TEXT - 5), 40))
    largest = max(len(k) + len(v or b"") for _, k, v in records)
    assert largest < MIB // 4, f"a changelog record of {largest} bytes"
    print(json.dumps({"largest_record_bytes_with_max_ids": largest}))
