"""Normalise planned-therapy names to the HER2 drugs the rules know (docs/her2-rules.md 5.2).

Matching is case-insensitive on whole words. Longer names are matched first and consumed, so
"trastuzumab deruxtecan" is T-DXd and "trastuzumab emtansine" is T-DM1, never trastuzumab.
Names that match nothing are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TRASTUZUMAB = "trastuzumab"
PERTUZUMAB = "pertuzumab"
T_DM1 = "ado-trastuzumab emtansine"
T_DXD = "fam-trastuzumab deruxtecan-nxki"
MARGETUXIMAB = "margetuximab"
LAPATINIB = "lapatinib"
NERATINIB = "neratinib"
TUCATINIB = "tucatinib"

TRADITIONAL_HER2 = frozenset(
    {TRASTUZUMAB, PERTUZUMAB, T_DM1, MARGETUXIMAB, LAPATINIB, NERATINIB, TUCATINIB}
)

# Each alias maps to the drugs it names. Order matters only through length (longest first).
_ALIASES: dict[str, tuple[str, ...]] = {
    "fam-trastuzumab deruxtecan-nxki": (T_DXD,),
    "fam-trastuzumab deruxtecan": (T_DXD,),
    "fam-trastuzumab": (T_DXD,),
    "trastuzumab deruxtecan": (T_DXD,),
    "trastuzumab-deruxtecan": (T_DXD,),
    "t-dxd": (T_DXD,),
    "tdxd": (T_DXD,),
    "ds-8201": (T_DXD,),
    "ds-8201a": (T_DXD,),
    "enhertu": (T_DXD,),
    "ado-trastuzumab emtansine": (T_DM1,),
    "ado-trastuzumab": (T_DM1,),
    "trastuzumab emtansine": (T_DM1,),
    "trastuzumab-emtansine": (T_DM1,),
    "t-dm1": (T_DM1,),
    "tdm1": (T_DM1,),
    "kadcyla": (T_DM1,),
    "trastuzumab": (TRASTUZUMAB,),
    "herceptin hylecta": (TRASTUZUMAB,),
    "herceptin": (TRASTUZUMAB,),
    "ogivri": (TRASTUZUMAB,),
    "kanjinti": (TRASTUZUMAB,),
    "trazimera": (TRASTUZUMAB,),
    "ontruzant": (TRASTUZUMAB,),
    "herzuma": (TRASTUZUMAB,),
    "hercessi": (TRASTUZUMAB,),
    "pertuzumab": (PERTUZUMAB,),
    "perjeta": (PERTUZUMAB,),
    "phesgo": (PERTUZUMAB, TRASTUZUMAB),
    "margetuximab": (MARGETUXIMAB,),
    "margenza": (MARGETUXIMAB,),
    "lapatinib": (LAPATINIB,),
    "tykerb": (LAPATINIB,),
    "neratinib": (NERATINIB,),
    "nerlynx": (NERATINIB,),
    "tucatinib": (TUCATINIB,),
    "tukysa": (TUCATINIB,),
}

# Biosimilars are named trastuzumab-xxxx (four letters), e.g. trastuzumab-dkst.
_BIOSIMILAR = r"trastuzumab-[a-z]{4}(?![a-z-])"
_PATTERN = re.compile(
    r"(?<![a-z0-9-])(?:(?P<bio>"
    + _BIOSIMILAR
    + r")|(?P<name>"
    + "|".join(re.escape(a) for a in sorted(_ALIASES, key=len, reverse=True))
    + r"))(?![a-z0-9])"
)


def normalise_therapy(name: str) -> frozenset[str]:
    """Return the HER2 drugs named in one planned-therapy entry (may name several)."""
    found: set[str] = set()
    text = " ".join(name.lower().split())
    for match in _PATTERN.finditer(text):
        if match.group("bio"):
            found.add(TRASTUZUMAB)
        else:
            found.update(_ALIASES[match.group("name")])
    return frozenset(found)


def normalise_therapies(names: Iterable[str]) -> frozenset[str]:
    """Return the HER2 drugs named anywhere in `names`."""
    found: set[str] = set()
    for name in names:
        found |= normalise_therapy(name)
    return frozenset(found)
