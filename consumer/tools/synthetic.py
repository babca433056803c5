"""Deterministic generator of realistic synthetic PathologyResult events (no real patient data).

Events are dicts in the Avro shape the consumer decodes (enums as strings, dates as
`datetime.date`, `event_time` an aware UTC datetime), so they can be encoded with
`consumer.avro.codec.Encoder` or fed to `Pipeline` directly. The same seed gives the same events.

Each synthetic patient has a clinical story: a disease setting, hormone-receptor status,
treatment history, planned therapies, and one to four accessions in date order (a primary
breast biopsy first; later a lymph node, a local recurrence or a distant metastasis). An
accession's report may go PRELIMINARY -> FINAL and later be AMENDED, CORRECTED or CANCELLED.
Some events carry `prior_her2_results` that the lab already knows. The mix covers every HER2
category, documentation gaps, discordant samples and T-DXd eligibility routes.

Used by `her2-consumer demo`, the integration tests and the benchmarks:

    gen = SyntheticGenerator(seed=7)
    events = gen.events(200)            # interleaved across patients, per-patient in order
    story = gen.patient(3)              # all events of patient 3, in order
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

Event = dict[str, Any]

DEFAULT_START: Final = dt.datetime(2025, 1, 6, 8, 0, tzinfo=dt.UTC)
SOURCE_SYSTEMS: Final = ("synthetic-lis-north", "synthetic-lis-south", "synthetic-beaker")
ANTIBODY_CLONES: Final = ("4B5", "HercepTest", "CB11", "SP3")
METASTATIC_BODY_SITES: Final = ("liver", "bone", "lung", "pleura", "brain", "skin")
PLANNED_THERAPY_CHOICES: Final = (
    (),
    (),
    ("trastuzumab", "pertuzumab"),
    ("Herceptin",),
    ("Enhertu",),
    ("trastuzumab deruxtecan",),
    ("T-DM1",),
    ("letrozole",),
    ("palbociclib", "letrozole"),
    ("capecitabine",),
    ("Phesgo",),
    ("tucatinib", "capecitabine", "trastuzumab"),
)

_IHC_WEIGHTS: Final = (
    ("ZERO_NULL", 9),
    ("ZERO_ULTRALOW", 9),
    ("ZERO_UNSPECIFIED", 5),
    ("ONE_PLUS", 28),
    ("TWO_PLUS", 20),
    ("THREE_PLUS", 15),
    ("INDETERMINATE", 2),
    ("UNSCORED", 3),
    ("ISH_ONLY", 3),
    ("NONE", 2),
)
_SETTING_WEIGHTS: Final = (
    ("EARLY", 52),
    ("METASTATIC", 36),
    ("UNRESECTABLE_LOCALLY_ADVANCED", 7),
    ("UNKNOWN", 5),
)


@dataclass(frozen=True)
class PatientProfile:
    """The clinical facts of one synthetic patient that stay fixed across their events."""

    patient_id: str
    setting: str
    menopausal: str
    er_percent: float | None
    pr_percent: float | None
    chemo_lines: int | None
    endocrine_lines: int | None
    anti_her2_lines: int | None
    adjuvant_chemo_end: dt.date | None
    perioperative_anti_her2_end: dt.date | None
    recurrence: dt.date | None
    planned: tuple[str, ...]
    ild: bool | None
    flags: tuple[str, ...]


class SyntheticGenerator:
    """Seeded source of synthetic patients and their PathologyResult events."""

    def __init__(
        self,
        seed: int = 0,
        *,
        start: dt.datetime = DEFAULT_START,
        id_prefix: str = "",
    ) -> None:
        """`id_prefix` keeps event, patient and accession ids of separate runs apart."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.seed = seed
        self.start = start
        self.prefix = id_prefix or f"s{seed}"

    def patient(self, index: int) -> list[Event]:
        """Every event of patient `index`, in the order the lab would publish them."""
        rng = random.Random(f"{self.seed}/patient/{index}")  # noqa: S311 - synthetic data
        profile = self._profile(rng, index)
        events: list[Event] = []
        accessions = self._accessions(rng, profile)
        clock = self.start + dt.timedelta(hours=rng.randint(0, 24 * 30))
        for number, (site, collected) in enumerate(accessions):
            accession_id = f"{self.prefix}-A{index:05d}-{number}"
            sample = self._sample(rng, profile, site, collected)
            prior = _prior_results(rng, events) if events else []
            statuses = _lifecycle(rng)
            for step, status in enumerate(statuses):
                clock += dt.timedelta(hours=rng.randint(2, 96))
                if status in ("AMENDED", "CORRECTED"):
                    sample = self._sample(rng, profile, site, collected)
                events.append(
                    self._event(
                        profile,
                        event_id=f"{self.prefix}-E{index:05d}-{number}-{step}",
                        accession_id=accession_id,
                        status=status,
                        event_time=clock,
                        sample=sample,
                        prior=prior,
                        rng=rng,
                    )
                )
        return events

    def events(self, count: int, *, patients: int | None = None) -> list[Event]:
        """The first `count` events, by event time, of `patients` patients (default
        count // 3 + 1, more if their stories are too short); each patient's events keep their
        order, and stories may be cut short at `count`."""
        if count < 0:
            raise ValueError("count must not be negative")
        wanted = max(1, count // 3 + 1) if patients is None else patients
        stories = [self.patient(i) for i in range(wanted)]
        while sum(map(len, stories)) < count:  # the stories are short: add patients
            stories.append(self.patient(len(stories)))
        merged = sorted(
            (event["event_time"], p, i)
            for p, story in enumerate(stories)
            for i, event in enumerate(story)
        )
        return [stories[p][i] for _, p, i in merged[:count]]

    def iter_events(self) -> Iterator[Event]:
        """An endless stream, patient after patient (for benchmarks)."""
        index = 0
        while True:
            yield from self.patient(index)
            index += 1

    # -- building blocks ------------------------------------------------------------------

    def _profile(self, rng: random.Random, index: int) -> PatientProfile:
        setting = _weighted(rng, _SETTING_WEIGHTS)
        hr_positive = rng.random() < 0.7
        er = _receptor_percent(rng, hr_positive)
        pr = _receptor_percent(rng, hr_positive and rng.random() < 0.8)
        advanced = setting in ("METASTATIC", "UNRESECTABLE_LOCALLY_ADVANCED")
        chemo = endocrine = anti_her2 = None
        adjuvant_end = anti_her2_end = recurrence = None
        if advanced:
            chemo = _maybe(rng, 0.85, lambda: rng.choice((0, 0, 1, 1, 2, 3)))
            endocrine = _maybe(rng, 0.8, lambda: rng.choice((0, 1, 1, 2)) if hr_positive else 0)
            anti_her2 = _maybe(rng, 0.7, lambda: rng.choice((0, 0, 1, 2)))
            if rng.random() < 0.4:
                adjuvant_end = (self.start - dt.timedelta(days=rng.randint(60, 900))).date()
                recurrence = adjuvant_end + dt.timedelta(days=rng.randint(-30, 400))
                if rng.random() < 0.3:
                    anti_her2_end = adjuvant_end + dt.timedelta(days=rng.randint(0, 200))
        return PatientProfile(
            patient_id=f"{self.prefix}-P{index:05d}-{rng.getrandbits(24):06x}",
            setting=setting,
            menopausal=rng.choice(("PRE", "POST", "POST", "UNKNOWN")),
            er_percent=er,
            pr_percent=pr,
            chemo_lines=chemo,
            endocrine_lines=endocrine,
            anti_her2_lines=anti_her2,
            adjuvant_chemo_end=adjuvant_end,
            perioperative_anti_her2_end=anti_her2_end,
            recurrence=recurrence,
            planned=rng.choice(PLANNED_THERAPY_CHOICES),
            ild=_maybe(rng, 0.5, lambda: rng.random() < 0.1),
            flags=(
                (
                    rng.choice(
                        (
                            "HER2_POSITIVE_LIKE_BEHAVIOR",
                            "TRIPLE_NEGATIVE_LIKE_BEHAVIOR",
                            "SUSPECTED_RECEPTOR_CONVERSION",
                        )
                    ),
                )
                if rng.random() < 0.06
                else ()
            ),
        )

    def _accessions(
        self, rng: random.Random, profile: PatientProfile
    ) -> list[tuple[str, dt.date | None]]:
        """(site, collection date) of each accession, oldest first."""
        first = (self.start - dt.timedelta(days=rng.randint(30, 2000))).date()
        sites: list[tuple[str, dt.date | None]] = [("PRIMARY_BREAST", first)]
        if rng.random() < 0.2:
            sites.append(("REGIONAL_LYMPH_NODE", first + dt.timedelta(days=rng.randint(0, 20))))
        if (
            profile.setting in ("METASTATIC", "UNRESECTABLE_LOCALLY_ADVANCED")
            and rng.random() < 0.7
        ):
            later = first + dt.timedelta(days=rng.randint(200, 1500))
            site = "DISTANT_METASTASIS" if rng.random() < 0.75 else "LOCOREGIONAL_RECURRENCE"
            sites.append((site, later))
            if rng.random() < 0.25:
                sites.append(
                    ("DISTANT_METASTASIS", later + dt.timedelta(days=rng.randint(90, 400)))
                )
        if rng.random() < 0.04:  # a specimen with neither site nor date documented
            sites[-1] = ("UNKNOWN", None)
        return sites

    def _sample(
        self, rng: random.Random, profile: PatientProfile, site: str, collected: dt.date | None
    ) -> dict[str, Any]:
        """Specimen, IHC and ISH of one accession."""
        body_site = {
            "PRIMARY_BREAST": rng.choice(("left breast", "right breast")),
            "REGIONAL_LYMPH_NODE": "axillary lymph node",
            "LOCOREGIONAL_RECURRENCE": "chest wall",
            "DISTANT_METASTASIS": rng.choice(METASTATIC_BODY_SITES),
        }.get(site)
        specimen: dict[str, Any] | None = {
            "site": site,
            "body_site": body_site,
            "collection_date": collected,
            "cold_ischemia_minutes": _maybe(rng, 0.85, lambda: rng.choice((5, 15, 25, 40, 55, 75))),
            "fixation_hours": _maybe(
                rng, 0.85, lambda: rng.choice((4.0, 8.0, 12.0, 24.0, 36.0, 48.0, 80.0))
            ),
            "fixative": "10% neutral buffered formalin",
            "decalcified": (body_site == "bone" and rng.random() < 0.7) or None,
        }
        if rng.random() < 0.02:
            specimen = None
        kind = _weighted(rng, _IHC_WEIGHTS)
        ihc = _ihc(rng, kind)
        ish = _ish(rng, kind)
        return {"specimen": specimen, "her2_ihc": ihc, "her2_ish": ish}

    def _event(
        self,
        profile: PatientProfile,
        *,
        event_id: str,
        accession_id: str,
        status: str,
        event_time: dt.datetime,
        sample: dict[str, Any],
        prior: list[dict[str, Any]],
        rng: random.Random,
    ) -> Event:
        return {
            "event_id": event_id,
            "event_time": event_time,
            "source_system": rng.choice(SOURCE_SYSTEMS),
            "patient_id": profile.patient_id,
            "accession_id": accession_id,
            "report_status": status,
            "specimen": copy.deepcopy(sample["specimen"]),
            "her2_ihc": copy.deepcopy(sample["her2_ihc"]),
            "her2_ish": copy.deepcopy(sample["her2_ish"]),
            "er": _receptor(profile.er_percent),
            "pr": _receptor(profile.pr_percent),
            "clinical_context": {
                "disease_setting": profile.setting,
                "menopausal_status": profile.menopausal,
                "metastatic_chemotherapy_lines": profile.chemo_lines,
                "metastatic_endocrine_therapy_lines": profile.endocrine_lines,
                "metastatic_anti_her2_lines": profile.anti_her2_lines,
                "adjuvant_chemotherapy_end_date": profile.adjuvant_chemo_end,
                "perioperative_anti_her2_end_date": profile.perioperative_anti_her2_end,
                "recurrence_date": profile.recurrence,
                "planned_therapies": list(profile.planned),
                "interstitial_lung_disease_history": profile.ild,
                "clinical_flags": list(profile.flags),
            },
            "prior_her2_results": copy.deepcopy(prior),
        }


def malformed_values(valid: bytes, seed: int = 0) -> list[tuple[str, bytes]]:
    """Payloads the consumer must dead-letter, derived from one valid framed value.

    Returns (label, bytes): random garbage, the value cut short, an unknown single-object
    fingerprint, and an empty value.
    """
    rng = random.Random(f"{seed}/malformed")  # noqa: S311 - synthetic data
    garbage = bytes([0x7B]) + rng.randbytes(31)  # starts like JSON: never a known magic byte
    cut = valid[: max(1, len(valid) * 2 // 3)]
    unknown_fp = b"\xc3\x01" + rng.randbytes(8) + valid[10:]
    return [
        ("garbage bytes", garbage),
        ("truncated Avro", cut),
        ("unknown fingerprint", unknown_fp),
        ("empty value", b""),
    ]


# -- helpers ------------------------------------------------------------------------------


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([name for name, _ in table], weights=[w for _, w in table])[0]


def _maybe(rng: random.Random, probability: float, make: Any) -> Any:
    """`make()` with `probability`, else None (the field is left out of the report)."""
    return make() if rng.random() < probability else None


def _receptor_percent(rng: random.Random, positive: bool) -> float | None:
    if rng.random() < 0.05:
        return None
    if not positive:
        return 0.0
    return float(rng.choice((5, 30, 60, 80, 90, 95, 100)))


def _receptor(percent: float | None) -> dict[str, Any] | None:
    if percent is None:
        return None
    if percent >= 11:
        result = "POSITIVE"
    elif percent >= 1:
        result = "LOW_POSITIVE"
    else:
        result = "NEGATIVE"
    return {"percent_positive": percent, "result": result}


def _ihc(rng: random.Random, kind: str) -> dict[str, Any] | None:
    if kind in ("ISH_ONLY", "NONE"):
        return None
    documented = rng.random() < 0.85
    base: dict[str, Any] = {
        "score": None,
        "percent_cells_stained": None,
        "staining_intensity": None,
        "staining_completeness": None,
        "antibody_clone": rng.choice(ANTIBODY_CLONES) if documented else None,
        "assay_type": (
            rng.choice(("FDA_APPROVED", "FDA_APPROVED", "LABORATORY_DEVELOPED"))
            if documented
            else None
        ),
        "controls_documented": True if rng.random() < 0.85 else None,
        "reported_text": None,
    }
    if kind == "ZERO_NULL":
        base.update(
            score="ZERO",
            percent_cells_stained=0.0,
            staining_intensity="NONE",
            staining_completeness="NONE",
            reported_text="HER2 IHC 0: no membrane staining.",
        )
    elif kind == "ZERO_ULTRALOW":
        base.update(
            score="ZERO",
            percent_cells_stained=float(rng.choice((1, 3, 5, 8, 10))),
            staining_intensity="FAINT",
            staining_completeness="INCOMPLETE",
            reported_text="HER2 IHC 0 with faint incomplete staining (ultralow).",
        )
    elif kind == "ZERO_UNSPECIFIED":
        base.update(score="ZERO", reported_text="HER2 negative (score 0).")
    elif kind == "ONE_PLUS":
        detailed = rng.random() < 0.8
        base.update(
            score="ONE_PLUS",
            percent_cells_stained=float(rng.choice((15, 20, 30, 40, 60))) if detailed else None,
            staining_intensity="FAINT" if detailed else None,
            staining_completeness="INCOMPLETE" if detailed else None,
            reported_text="HER2 IHC 1+ (faint, incomplete).",
        )
    elif kind == "TWO_PLUS":
        base.update(
            score="TWO_PLUS",
            percent_cells_stained=float(rng.choice((20, 40, 70))),
            staining_intensity="WEAK_MODERATE",
            staining_completeness="COMPLETE",
            reported_text="HER2 IHC 2+ (equivocal); reflex ISH ordered.",
        )
    elif kind == "THREE_PLUS":
        base.update(
            score="THREE_PLUS",
            percent_cells_stained=float(rng.choice((40, 80, 95))),
            staining_intensity="STRONG",
            staining_completeness="COMPLETE",
            reported_text="HER2 IHC 3+ (positive).",
        )
    elif kind == "INDETERMINATE":
        base.update(score="INDETERMINATE", reported_text="HER2 IHC indeterminate: crush artefact.")
    elif kind == "UNSCORED":
        base.update(reported_text="HER2 negative.")
    return base


def _ish(rng: random.Random, kind: str) -> dict[str, Any] | None:
    if kind == "ISH_ONLY" or (kind == "TWO_PLUS" and rng.random() < 0.8):
        return _dual_probe(rng)
    if kind == "THREE_PLUS" and rng.random() < 0.1:
        return _dual_probe(rng)
    if kind == "ONE_PLUS" and rng.random() < 0.03:  # an IHC/ISH discordance
        return {
            "probe_type": "DUAL",
            "her2_copies_per_cell": 6.2,
            "cep17_copies_per_cell": 2.0,
            "her2_cep17_ratio": 3.1,
            "cells_counted": 20,
            "recount_group": None,
            "reported_result": "AMPLIFIED",
        }
    return None


def _dual_probe(rng: random.Random) -> dict[str, Any]:
    """A dual-probe ISH result in one of the five ASCO/CAP groups, sometimes without counts."""
    her2, cep17 = rng.choice(
        ((8.4, 2.1), (3.2, 1.5), (6.4, 4.0), (4.8, 3.0), (2.1, 2.0), (2.4, 1.9), (2.0, 2.1))
    )
    if rng.random() < 0.08:
        return {
            "probe_type": "DUAL",
            "her2_copies_per_cell": None,
            "cep17_copies_per_cell": None,
            "her2_cep17_ratio": None,
            "cells_counted": None,
            "recount_group": None,
            "reported_result": rng.choice(("AMPLIFIED", "NOT_AMPLIFIED", "EQUIVOCAL")),
        }
    ratio = round(her2 / cep17, 2)
    amplified = ratio >= 2.0 and her2 >= 4.0
    return {
        "probe_type": "DUAL",
        "her2_copies_per_cell": her2,
        "cep17_copies_per_cell": cep17,
        "her2_cep17_ratio": ratio,
        "cells_counted": rng.choice((20, 20, 40, 60, 15)),
        "recount_group": None,
        "reported_result": "AMPLIFIED" if amplified else "NOT_AMPLIFIED",
    }


def _lifecycle(rng: random.Random) -> list[str]:
    """The report statuses one accession goes through."""
    statuses = ["PRELIMINARY"] if rng.random() < 0.1 else []
    statuses.append("FINAL")
    roll = rng.random()
    if roll < 0.08:
        statuses.append("AMENDED")
    elif roll < 0.12:
        statuses.append("CORRECTED")
    elif roll < 0.15:
        statuses.append("CANCELLED")
    return statuses


def _prior_results(rng: random.Random, earlier: list[Event]) -> list[dict[str, Any]]:
    """Sometimes the lab attaches the patient's earlier HER2 results (their last report each)."""
    if rng.random() >= 0.3:
        return []
    latest: dict[str, Event] = {}
    for event in earlier:
        latest[event["accession_id"]] = event
    return [
        {
            "accession_id": event["accession_id"],
            "specimen": event["specimen"],
            "her2_ihc": event["her2_ihc"],
            "her2_ish": event["her2_ish"],
        }
        for event in latest.values()
        if event["report_status"] != "CANCELLED"
    ]
