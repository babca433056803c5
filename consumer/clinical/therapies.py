"""Normalise planned-therapy names to the HER2 drugs the rules know (docs/her2-rules.md 5.2).

Matching is case-insensitive on whole words. Longer names are matched first and consumed, so
"trastuzumab deruxtecan" is T-DXd and "trastuzumab emtansine" is T-DM1, never trastuzumab.
Names that match nothing are ignored.

A hyphen separates words as a space does: regimens are written drug-drug ("paclitaxel-
trastuzumab", "docetaxel-carboplatin-trastuzumab", "AC-Herceptin", "capecitabine-lapatinib"),
and a name after a hyphen is still that drug (5.5: an entry may name several drugs). A name
that begins with a hyphenated prefix is listed whole and matched first ("fam-trastuzumab
deruxtecan", "ado-trastuzumab emtansine", "Dato-DXd"); a hyphen before a word that is no drug
the rules know ("non-trastuzumab") still leaves the drug named, conservative like the rest: a
caution a clinician reviews rather than a silent miss of TC-HER2-TARGETED-NOT-POSITIVE
(CRITICAL). "T DXd" and "T DM1", written with a space, are T-DXd and T-DM1.

Dashes and hyphens are one: names pasted from word processors and order systems carry the
typographic ones (U+2010 hyphen, U+2011 non-breaking hyphen, the figure, en and em dashes, the
minus sign, their small and full-width forms), and "T\u2013DM1" or "trastuzumab\u2011deruxtecan"
must read as "T-DM1" and "trastuzumab-deruxtecan": read as other characters, the first named no
drug (a silent miss of TC-HER2-TARGETED-NOT-POSITIVE) and the second named trastuzumab (a false
CRITICAL for a planned T-DXd). The text is NFKC-normalised (full-width letters are letters),
invisible format characters are dropped (soft hyphens, zero-width spaces and joiners, word
joiners, byte-order marks: "trastu\u200bzumab" is trastuzumab) and every dash becomes "-".

"T-DXd" is trastuzumab deruxtecan, DXd being the deruxtecan payload, so "trastuzumab DXd" and
"trastuzumab-DXd", the abbreviation spelled out, are T-DXd (not a conjugate read as trastuzumab,
which raised the CRITICAL caution for a planned T-DXd).

Other drugs that look alike are named in the table too, mapped to no drug, so that no part of
them is read as one: "datopotamab deruxtecan" (Dato-DXd, Datroway) and "DXd" alone are not
T-DXd (5.2).

"trastuzumab <payload>": the international nonproprietary name of an antibody-drug conjugate
is the antibody's name followed by a word for its payload (deruxtecan, emtansine, rezetecan,
duocarmazine, ...). A conjugate of trastuzumab other than T-DXd and T-DM1 is not trastuzumab
(5.2), so a bare "trastuzumab" followed (after a space or a hyphen) by a payload word names no
drug the rules know and is ignored. A payload word is one of the stems of conjugate payloads,
-tecan (camptothecins: deruxtecan, govitecan, rezetecan, ...), -dotin (auristatins: vedotin,
mafodotin, ...) and -tansine (maytansinoids: emtansine, mertansine, ...), or a listed payload
(duocarmazine, ozogamicin, tesirine, talirine); the unconjugated camptothecins irinotecan,
topotecan and belotecan are not payloads ("trastuzumab irinotecan" is two drugs).

Why not "trastuzumab followed by any other word": that would also drop "trastuzumab weekly",
"trastuzumab maintenance" or a regimen written without separators, and a missed trastuzumab
silences the CRITICAL caution TC-HER2-TARGETED-NOT-POSITIVE. So the decision is conservative
for safety: only positive evidence of a conjugate (a payload word) makes "trastuzumab" not
trastuzumab; any other following word ("+", "and", ",", "/", "biosimilar", "hyaluronidase",
another drug) leaves it trastuzumab, and a conjugate with a payload word outside the stems above
is read as trastuzumab (a caution that a clinician reviews rather than a silent miss).
Biosimilars named trastuzumab-xxxx (four letters, e.g. trastuzumab-dkst) stay trastuzumab.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

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
    "trastuzumab dxd": (T_DXD,),
    "trastuzumab-dxd": (T_DXD,),
    "t-dxd": (T_DXD,),
    "t dxd": (T_DXD,),
    "tdxd": (T_DXD,),
    "ds-8201": (T_DXD,),
    "ds-8201a": (T_DXD,),
    "enhertu": (T_DXD,),
    "ado-trastuzumab emtansine": (T_DM1,),
    "ado-trastuzumab": (T_DM1,),
    "trastuzumab emtansine": (T_DM1,),
    "trastuzumab-emtansine": (T_DM1,),
    "t-dm1": (T_DM1,),
    "t dm1": (T_DM1,),
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
    # Recognised so that no part of them is read as a HER2 drug; the rules know none of them.
    "datopotamab deruxtecan": (),
    "dato-dxd": (),
    "datroway": (),
    "dxd": (),
}

# Biosimilars are named trastuzumab-xxxx (four letters), e.g. trastuzumab-dkst.
_BIOSIMILAR = r"trastuzumab-[a-z]{4}(?![a-z-])"
_PATTERN = re.compile(
    r"(?<![a-z0-9])(?:(?P<bio>"
    + _BIOSIMILAR
    + r")|(?P<name>"
    + "|".join(re.escape(a) for a in sorted(_ALIASES, key=len, reverse=True))
    + r"))(?![a-z0-9])"
)


# The word after a bare "trastuzumab" (a space or a hyphen between them).
_NEXT_WORD = re.compile(r"[ -]([a-z][a-z0-9]*)")
_PAYLOAD_STEMS = ("tecan", "dotin", "tansine")
_PAYLOADS = frozenset({"duocarmazine", "ozogamicin", "tesirine", "talirine"})
_UNCONJUGATED = frozenset({"irinotecan", "topotecan", "belotecan"})


def is_payload(word: str) -> bool:
    """True when `word` names the payload of an antibody-drug conjugate (module docstring)."""
    if word in _UNCONJUGATED:
        return False
    return word in _PAYLOADS or word.endswith(_PAYLOAD_STEMS)


def _conjugate_follows(text: str, end: int) -> bool:
    """True when a payload word follows the "trastuzumab" that ends at `end`."""
    following = _NEXT_WORD.match(text, end)
    return following is not None and is_payload(following.group(1))


# Every dash-like character as "-" (after NFKC, module docstring).
_DASHES = str.maketrans(
    dict.fromkeys(
        "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\u2e3a\u2e3b\ufe58\ufe63\uff0d", "-"
    )
)


def _visible(text: str) -> str:
    """`text` without Unicode format characters (category Cf: soft hyphen, zero-width space
    and joiners, word joiner, byte-order mark), which pasted names carry invisibly."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def normalise_therapy(name: str) -> frozenset[str]:
    """Return the HER2 drugs named in one planned-therapy entry (may name several)."""
    found: set[str] = set()
    text = " ".join(
        _visible(unicodedata.normalize("NFKC", name)).translate(_DASHES).lower().split()
    )
    for match in _PATTERN.finditer(text):
        alias = match.group("name")
        if match.group("bio"):
            found.add(TRASTUZUMAB)
        elif alias == "trastuzumab" and _conjugate_follows(text, match.end()):
            continue  # "trastuzumab <payload>": another conjugate, not trastuzumab
        else:
            found.update(_ALIASES[alias])
    return frozenset(found)


@lru_cache(maxsize=1024)
def _drugs_in(name: str) -> frozenset[str]:
    """normalise_therapy, remembered: a patient's planned therapies recur in each of their
    reports and in the stored context of each (bounded: free text cannot grow it)."""
    return normalise_therapy(name)


def normalise_therapies(names: Iterable[str]) -> frozenset[str]:
    """Return the HER2 drugs named anywhere in `names`."""
    found: set[str] = set()
    for name in names:
        found |= _drugs_in(name)
    return frozenset(found)
