"""5.2 end to end: a planned drug written with typographic dashes, or as "trastuzumab DXd",
raises the cautions its name calls for (the pipeline over schema-valid events; the names'
own table is tests/unit/test_therapies.py)."""

from __future__ import annotations

import pytest
from test_alert_codes import codes, event, ihc, pipeline, planned, ruleset, ultralow

from consumer.clinical.pipeline import Pipeline

__all__ = ["pipeline", "ruleset"]  # the module-scoped fixtures, shared

TARGETED = "TC-HER2-TARGETED-NOT-POSITIVE"  # CRITICAL
EARLY = "TC-TDXD-EARLY-STAGE"
CRITERIA = "TC-TDXD-CRITERIA-NOT-MET"


@pytest.mark.parametrize(
    ("ev", "raised", "quiet"),
    [
        # early HER2-low: T-DM1 is a traditional HER2-targeted drug (CRITICAL), T-DXd is not
        pytest.param(
            event(clinical_context=planned("T\u2013DM1")),
            {TARGETED},
            {EARLY},
            id="tdm1-en-dash-critical",
        ),
        pytest.param(
            event(clinical_context=planned("T\u2011DM1")),
            {TARGETED},
            {EARLY},
            id="tdm1-non-breaking-hyphen-critical",
        ),
        pytest.param(
            event(clinical_context=planned("paclitaxel\u2013trastuzumab")),
            {TARGETED},
            set(),
            id="regimen-en-dash-critical",
        ),
        pytest.param(
            event(clinical_context=planned("trastuzumab\u2011deruxtecan")),
            {EARLY},
            {TARGETED},
            id="tdxd-non-breaking-hyphen-not-trastuzumab",
        ),
        pytest.param(
            event(clinical_context=planned("trastuzumab\u2013deruxtecan")),
            {EARLY},
            {TARGETED},
            id="tdxd-en-dash-not-trastuzumab",
        ),
        pytest.param(
            event(clinical_context=planned("trastuzumab-DXd")),
            {EARLY},
            {TARGETED},
            id="trastuzumab-dxd-is-tdxd",
        ),
        pytest.param(
            event(clinical_context=planned("trastuzumab DXd")),
            {EARLY},
            {TARGETED},
            id="trastuzumab-space-dxd-is-tdxd",
        ),
        # worked example 3 (advanced ultralow, HR-negative) with T-DXd written with a dash
        pytest.param(
            event(
                her2_ihc=ultralow(),
                er=None,
                pr=None,
                clinical_context=planned("T\u2011DXd", setting="METASTATIC"),
            ),
            {CRITERIA},
            {TARGETED},
            id="worked-example-3-tdxd-non-breaking-hyphen",
        ),
        # a positive result: no caution whatever the spelling
        pytest.param(
            event(her2_ihc=ihc("THREE_PLUS"), clinical_context=planned("T\u2013DM1")),
            set(),
            {TARGETED},
            id="positive-quiet",
        ),
    ],
)
def test_dashes_and_dxd(
    pipeline: Pipeline, ev: dict[str, object], raised: set[str], quiet: set[str]
) -> None:
    found = codes(pipeline, ev)
    assert raised <= found, f"missing {sorted(raised - found)}; raised {sorted(found)}"
    assert not (quiet & found), f"raised {sorted(quiet & found)}"
