"""Unit tests of consumer.clinical.therapies against docs/her2-rules.md section 5.2 and 5.5."""
# ruff: noqa: E501 - table rows (one pytest.param per spec case) read best on one line

from __future__ import annotations

import pytest

from consumer.clinical.therapies import (
    LAPATINIB,
    MARGETUXIMAB,
    NERATINIB,
    PERTUZUMAB,
    T_DM1,
    T_DXD,
    TRADITIONAL_HER2,
    TRASTUZUMAB,
    TUCATINIB,
    is_payload,
    normalise_therapies,
    normalise_therapy,
)


class TestNormaliseTherapy:
    """Section 5.2: case-insensitive names, brands, biosimilars, combinations; unknown ignored."""

    @pytest.mark.parametrize(
        ("name", "drugs"),
        [
            # trastuzumab, its brands and biosimilars
            pytest.param("trastuzumab", {TRASTUZUMAB}, id="trastuzumab"),
            pytest.param("Trastuzumab", {TRASTUZUMAB}, id="trastuzumab-capitalised"),
            pytest.param("TRASTUZUMAB", {TRASTUZUMAB}, id="trastuzumab-upper"),
            pytest.param("Herceptin", {TRASTUZUMAB}, id="herceptin"),
            pytest.param("Herceptin Hylecta", {TRASTUZUMAB}, id="herceptin-hylecta"),
            pytest.param("Ogivri", {TRASTUZUMAB}, id="ogivri"),
            pytest.param("Kanjinti", {TRASTUZUMAB}, id="kanjinti"),
            pytest.param("Trazimera", {TRASTUZUMAB}, id="trazimera"),
            pytest.param("Ontruzant", {TRASTUZUMAB}, id="ontruzant"),
            pytest.param("Herzuma", {TRASTUZUMAB}, id="herzuma"),
            pytest.param("trastuzumab-dkst", {TRASTUZUMAB}, id="biosimilar-dkst"),
            pytest.param("trastuzumab-anns", {TRASTUZUMAB}, id="biosimilar-anns"),
            pytest.param("trastuzumab-qyyp", {TRASTUZUMAB}, id="biosimilar-qyyp"),
            pytest.param("trastuzumab-dttb", {TRASTUZUMAB}, id="biosimilar-dttb"),
            pytest.param("trastuzumab-pkrb", {TRASTUZUMAB}, id="biosimilar-pkrb"),
            pytest.param("Trastuzumab-DKST", {TRASTUZUMAB}, id="biosimilar-mixed-case"),
            # pertuzumab, Phesgo
            pytest.param("pertuzumab", {PERTUZUMAB}, id="pertuzumab"),
            pytest.param("Perjeta", {PERTUZUMAB}, id="perjeta"),
            pytest.param("Phesgo", {PERTUZUMAB, TRASTUZUMAB}, id="phesgo-is-pertuzumab-plus-trastuzumab"),
            pytest.param("PHESGO", {PERTUZUMAB, TRASTUZUMAB}, id="phesgo-upper"),
            # T-DXd is NOT trastuzumab
            pytest.param("trastuzumab deruxtecan", {T_DXD}, id="trastuzumab-deruxtecan-is-tdxd"),
            pytest.param("Trastuzumab Deruxtecan", {T_DXD}, id="trastuzumab-deruxtecan-capitalised"),
            pytest.param("fam-trastuzumab deruxtecan-nxki", {T_DXD}, id="fam-trastuzumab-deruxtecan-nxki"),
            pytest.param("T-DXd", {T_DXD}, id="t-dxd"),
            pytest.param("Enhertu", {T_DXD}, id="enhertu"),
            pytest.param("ENHERTU", {T_DXD}, id="enhertu-upper"),
            # T-DM1 is NOT trastuzumab
            pytest.param("trastuzumab emtansine", {T_DM1}, id="trastuzumab-emtansine-is-tdm1"),
            pytest.param("ado-trastuzumab emtansine", {T_DM1}, id="ado-trastuzumab-emtansine"),
            pytest.param("T-DM1", {T_DM1}, id="t-dm1"),
            pytest.param("Kadcyla", {T_DM1}, id="kadcyla"),
            # margetuximab and the kinase inhibitors (with brands, 5.5)
            pytest.param("margetuximab", {MARGETUXIMAB}, id="margetuximab"),
            pytest.param("Margenza", {MARGETUXIMAB}, id="margenza"),
            pytest.param("lapatinib", {LAPATINIB}, id="lapatinib"),
            pytest.param("Tykerb", {LAPATINIB}, id="tykerb"),
            pytest.param("neratinib", {NERATINIB}, id="neratinib"),
            pytest.param("Nerlynx", {NERATINIB}, id="nerlynx"),
            pytest.param("tucatinib", {TUCATINIB}, id="tucatinib"),
            pytest.param("Tukysa", {TUCATINIB}, id="tukysa"),
            # combinations (5.5: entries may name several drugs)
            pytest.param("trastuzumab + pertuzumab", {TRASTUZUMAB, PERTUZUMAB}, id="combo-trastuzumab-plus-pertuzumab"),
            pytest.param("Herceptin + Perjeta", {TRASTUZUMAB, PERTUZUMAB}, id="combo-brands"),
            pytest.param("docetaxel/trastuzumab/pertuzumab", {TRASTUZUMAB, PERTUZUMAB}, id="combo-slashes-with-chemo"),
            pytest.param("trastuzumab deruxtecan + pertuzumab", {T_DXD, PERTUZUMAB}, id="combo-tdxd-plus-pertuzumab-no-trastuzumab"),
            pytest.param("tucatinib, trastuzumab and capecitabine", {TUCATINIB, TRASTUZUMAB}, id="combo-her2climb"),
            pytest.param("Enhertu then Kadcyla", {T_DXD, T_DM1}, id="combo-tdxd-and-tdm1"),
            pytest.param("paclitaxel + trastuzumab-dkst", {TRASTUZUMAB}, id="combo-biosimilar"),
            # regimens written drug-drug: a hyphen separates drugs as a space does (5.5)
            pytest.param("paclitaxel-trastuzumab", {TRASTUZUMAB}, id="hyphen-chemo-trastuzumab"),
            pytest.param("docetaxel-carboplatin-trastuzumab", {TRASTUZUMAB}, id="hyphen-tch"),
            pytest.param("AC-Herceptin", {TRASTUZUMAB}, id="hyphen-ac-herceptin"),
            pytest.param("capecitabine-lapatinib", {LAPATINIB}, id="hyphen-capecitabine-lapatinib"),
            pytest.param("trastuzumab-pertuzumab-docetaxel", {TRASTUZUMAB, PERTUZUMAB}, id="hyphen-hp-docetaxel"),
            pytest.param("capecitabine-Enhertu", {T_DXD}, id="hyphen-capecitabine-enhertu"),
            pytest.param("AC-T-DXd", {T_DXD}, id="hyphen-ac-tdxd"),
            pytest.param("paclitaxel-trastuzumab emtansine", {T_DM1}, id="hyphen-chemo-tdm1-not-trastuzumab"),
            pytest.param("capecitabine-trastuzumab rezetecan", set(), id="hyphen-chemo-conjugate-not-trastuzumab"),
            pytest.param("vic-trastuzumab duocarmazine", set(), id="hyphen-prefixed-conjugate-not-trastuzumab"),
            pytest.param("non-trastuzumab regimen", {TRASTUZUMAB}, id="hyphen-prefix-conservative"),
            # typographic dashes are hyphens (names pasted from word processors), full-width
            # letters are letters, a soft hyphen is no character
            pytest.param("T\u2013DM1", {T_DM1}, id="tdm1-en-dash"),
            pytest.param("T\u2011DXd", {T_DXD}, id="tdxd-non-breaking-hyphen"),
            pytest.param("trastuzumab\u2011deruxtecan", {T_DXD}, id="tdxd-non-breaking-hyphen-not-trastuzumab"),
            pytest.param("trastuzumab\u2014emtansine", {T_DM1}, id="tdm1-em-dash-not-trastuzumab"),
            pytest.param("paclitaxel\u2013trastuzumab", {TRASTUZUMAB}, id="regimen-en-dash"),
            pytest.param("trastuzumab\u2212dkst", {TRASTUZUMAB}, id="biosimilar-minus-sign"),
            pytest.param("Dato\u2010DXd", set(), id="dato-dxd-hyphen-char-not-tdxd"),
            pytest.param("\uff28\uff25\uff32\uff23\uff25\uff30\uff34\uff29\uff2e", {TRASTUZUMAB}, id="herceptin-full-width"),
            pytest.param("tras\u00adtuzumab", {TRASTUZUMAB}, id="soft-hyphen-dropped"),
            pytest.param("trastu\u200bzumab", {TRASTUZUMAB}, id="zero-width-space-dropped"),
            pytest.param("\ufeffHerceptin", {TRASTUZUMAB}, id="byte-order-mark-dropped"),
            pytest.param("trastuzumab\u200b deruxtecan", {T_DXD}, id="zero-width-space-before-a-space"),
            pytest.param("T-\u2060DXd", {T_DXD}, id="word-joiner-dropped"),
            pytest.param("T\u2e3aDM1", {T_DM1}, id="two-em-dash"),
            pytest.param("T\u2043DM1", {T_DM1}, id="hyphen-bullet"),
            # T-DXd spelled out: DXd is the deruxtecan payload
            pytest.param("trastuzumab DXd", {T_DXD}, id="trastuzumab-dxd-is-tdxd"),
            pytest.param("Trastuzumab-DXd", {T_DXD}, id="trastuzumab-hyphen-dxd-is-tdxd"),
            # the abbreviations written with a space
            pytest.param("T DXd", {T_DXD}, id="t-space-dxd"),
            pytest.param("T DM1", {T_DM1}, id="t-space-dm1"),
            # unknown names are ignored
            pytest.param("letrozole", set(), id="unknown-letrozole"),
            pytest.param("capecitabine", set(), id="unknown-capecitabine"),
            pytest.param("sacituzumab govitecan", set(), id="unknown-sacituzumab"),
            pytest.param("", set(), id="empty-string"),
            pytest.param("   ", set(), id="blank"),
        ],
    )
    def test_name(self, name: str, drugs: set[str]) -> None:
        assert normalise_therapy(name) == frozenset(drugs)

    @pytest.mark.parametrize(
        ("name", "drugs"),
        [
            # 5.2: any other "trastuzumab <payload>" conjugate is not trastuzumab (ignored)
            pytest.param("trastuzumab rezetecan", set(), id="conjugate-rezetecan"),
            pytest.param("Trastuzumab Rezetecan", set(), id="conjugate-rezetecan-capitalised"),
            pytest.param("trastuzumab-rezetecan", set(), id="conjugate-rezetecan-hyphen"),
            pytest.param("trastuzumab  rezetecan", set(), id="conjugate-rezetecan-two-spaces"),
            pytest.param("trastuzumab duocarmazine", set(), id="conjugate-duocarmazine"),
            pytest.param("trastuzumab govitecan", set(), id="conjugate-tecan-stem"),
            pytest.param("trastuzumab botidotin", set(), id="conjugate-dotin-stem"),
            pytest.param("trastuzumab mertansine", set(), id="conjugate-tansine-stem"),
            pytest.param("trastuzumab rezetecan + pertuzumab", {PERTUZUMAB}, id="conjugate-plus-pertuzumab"),
            pytest.param("trastuzumab rezetecan, then trastuzumab", {TRASTUZUMAB}, id="conjugate-then-trastuzumab"),
            pytest.param("docetaxel + trastuzumab duocarmazine", set(), id="chemo-plus-conjugate"),
            # the listed conjugates keep their own identity
            pytest.param("trastuzumab deruxtecan", {T_DXD}, id="listed-deruxtecan-is-tdxd"),
            pytest.param("trastuzumab-deruxtecan", {T_DXD}, id="listed-deruxtecan-hyphen"),
            pytest.param("trastuzumab deruxtecan-nxki", {T_DXD}, id="listed-deruxtecan-nxki"),
            pytest.param("trastuzumab emtansine", {T_DM1}, id="listed-emtansine-is-tdm1"),
            pytest.param("trastuzumab-emtansine", {T_DM1}, id="listed-emtansine-hyphen"),
            # "trastuzumab" followed by a word that is no payload stays trastuzumab
            pytest.param("trastuzumab + pertuzumab", {TRASTUZUMAB, PERTUZUMAB}, id="followed-by-plus"),
            pytest.param("trastuzumab and pertuzumab", {TRASTUZUMAB, PERTUZUMAB}, id="followed-by-and"),
            pytest.param("trastuzumab plus pertuzumab", {TRASTUZUMAB, PERTUZUMAB}, id="followed-by-plus-word"),
            pytest.param("trastuzumab, pertuzumab, docetaxel", {TRASTUZUMAB, PERTUZUMAB}, id="followed-by-comma"),
            pytest.param("trastuzumab/pertuzumab", {TRASTUZUMAB, PERTUZUMAB}, id="followed-by-slash"),
            pytest.param("trastuzumab pertuzumab docetaxel", {TRASTUZUMAB, PERTUZUMAB}, id="followed-by-pertuzumab-no-separator"),
            pytest.param("trastuzumab biosimilar", {TRASTUZUMAB}, id="followed-by-biosimilar"),
            pytest.param("trastuzumab weekly", {TRASTUZUMAB}, id="followed-by-schedule-word"),
            pytest.param("trastuzumab maintenance", {TRASTUZUMAB}, id="followed-by-maintenance"),
            pytest.param("trastuzumab 6 mg/kg", {TRASTUZUMAB}, id="followed-by-dose"),
            pytest.param("trastuzumab (Herceptin)", {TRASTUZUMAB}, id="followed-by-brand-in-brackets"),
            pytest.param("trastuzumab and hyaluronidase-oysk", {TRASTUZUMAB}, id="herceptin-hylecta-generic-name"),
            pytest.param("trastuzumab-hyaluronidase-oysk", {TRASTUZUMAB}, id="herceptin-hylecta-hyphenated"),
            pytest.param("trastuzumab irinotecan", {TRASTUZUMAB}, id="unconjugated-camptothecin-irinotecan"),
            pytest.param("trastuzumab topotecan", {TRASTUZUMAB}, id="unconjugated-camptothecin-topotecan"),
            pytest.param("trastuzumab vinorelbine", {TRASTUZUMAB}, id="followed-by-chemotherapy"),
            pytest.param("trastuzumab", {TRASTUZUMAB}, id="alone"),
            pytest.param("trastuzumab.", {TRASTUZUMAB}, id="alone-with-full-stop"),
            # biosimilars named trastuzumab-xxxx stay trastuzumab
            pytest.param("trastuzumab-dkst", {TRASTUZUMAB}, id="biosimilar-dkst"),
            pytest.param("trastuzumab-anns + pertuzumab", {TRASTUZUMAB, PERTUZUMAB}, id="biosimilar-plus-pertuzumab"),
            pytest.param("trastuzumab-strf", {TRASTUZUMAB}, id="biosimilar-strf"),
            # 5.2: datopotamab deruxtecan (Dato-DXd, Datroway) and DXd alone are not T-DXd
            pytest.param("datopotamab deruxtecan", set(), id="datopotamab-deruxtecan"),
            pytest.param("Datopotamab Deruxtecan", set(), id="datopotamab-deruxtecan-capitalised"),
            pytest.param("Dato-DXd", set(), id="dato-dxd"),
            pytest.param("DATO-DXD", set(), id="dato-dxd-upper"),
            pytest.param("Datroway", set(), id="datroway"),
            pytest.param("DXd", set(), id="dxd-alone"),
            pytest.param("deruxtecan", set(), id="deruxtecan-alone"),
            pytest.param("HER3-DXd", set(), id="other-dxd-conjugate"),
            pytest.param("Dato-DXd + T-DXd", {T_DXD}, id="dato-dxd-and-t-dxd"),
            pytest.param("datopotamab deruxtecan, trastuzumab deruxtecan", {T_DXD}, id="both-deruxtecans"),
            pytest.param("sacituzumab govitecan", set(), id="sacituzumab-govitecan"),
        ],
    )
    def test_lookalikes(self, name: str, drugs: set[str]) -> None:
        """Section 5.2 'Beware': conjugates and look-alike names (module docstring: the decision)."""
        assert normalise_therapy(name) == frozenset(drugs)

    @pytest.mark.parametrize(
        ("word", "payload"),
        [
            pytest.param("deruxtecan", True, id="deruxtecan"),
            pytest.param("rezetecan", True, id="rezetecan"),
            pytest.param("govitecan", True, id="govitecan"),
            pytest.param("vedotin", True, id="vedotin"),
            pytest.param("emtansine", True, id="emtansine"),
            pytest.param("duocarmazine", True, id="duocarmazine"),
            pytest.param("ozogamicin", True, id="ozogamicin"),
            pytest.param("irinotecan", False, id="irinotecan-unconjugated"),
            pytest.param("topotecan", False, id="topotecan-unconjugated"),
            pytest.param("belotecan", False, id="belotecan-unconjugated"),
            pytest.param("pertuzumab", False, id="pertuzumab"),
            pytest.param("biosimilar", False, id="biosimilar"),
            pytest.param("and", False, id="and"),
            pytest.param("dkst", False, id="biosimilar-suffix"),
            pytest.param("hyaluronidase", False, id="hyaluronidase"),
        ],
    )
    def test_is_payload(self, word: str, payload: bool) -> None:
        assert is_payload(word) is payload

    def test_many_entries(self) -> None:
        assert normalise_therapies(["Enhertu", "letrozole", "Perjeta"]) == {T_DXD, PERTUZUMAB}

    def test_no_entries(self) -> None:
        assert normalise_therapies([]) == frozenset()


class TestDrugClasses:
    """Section 5.2: which drugs are 'traditional HER2-targeted' (T-DXd is not; T-DM1 is)."""

    @pytest.mark.parametrize(
        "drug", [TRASTUZUMAB, PERTUZUMAB, T_DM1, MARGETUXIMAB, LAPATINIB, NERATINIB, TUCATINIB]
    )
    def test_traditional(self, drug: str) -> None:
        assert drug in TRADITIONAL_HER2

    def test_tdxd_is_not_traditional(self) -> None:
        assert T_DXD not in TRADITIONAL_HER2

    @pytest.mark.parametrize(
        "name", ["trastuzumab deruxtecan", "Enhertu", "T-DXd", "fam-trastuzumab deruxtecan-nxki"]
    )
    def test_tdxd_names_never_count_as_traditional(self, name: str) -> None:
        assert not (normalise_therapy(name) & TRADITIONAL_HER2)

    @pytest.mark.parametrize(
        "name",
        ["trastuzumab rezetecan", "trastuzumab duocarmazine", "datopotamab deruxtecan", "Dato-DXd", "Datroway", "DXd"],
    )
    def test_lookalikes_are_neither_traditional_nor_tdxd(self, name: str) -> None:
        assert normalise_therapy(name) == frozenset()
