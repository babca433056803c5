"""What `her2-consumer` says before any work starts: an input file it cannot open and arguments
out of range are one line on stderr (exit 2), never a traceback (docs/design.md "Command line")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer import cli
from consumer.clinical.rules import load_ruleset
from consumer.resources import data_dir
from consumer.tools import evaluate as evaluate_tool

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 60


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m consumer ARGS` from the repository, stdin closed."""
    return subprocess.run(  # noqa: S603 - fixed argv, our own module
        [sys.executable, "-m", "consumer", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


class TestInputFile:
    """The NDJSON file of `evaluate` and `publish`: a missing one was reported in one line (exit
    2); a directory or an unreadable file gave an IsADirectoryError/PermissionError traceback
    (exit 1). Now each is reported like a missing file, naming it."""

    @pytest.mark.parametrize("command", ["evaluate", "publish"])
    @pytest.mark.parametrize(
        ("kind", "reason"),
        [
            pytest.param("missing", "No such file or directory", id="missing"),
            pytest.param("directory", "Is a directory", id="directory"),
            pytest.param("unreadable", "Permission denied", id="unreadable"),
        ],
    )
    def test_a_file_it_cannot_open(
        self, tmp_path: Path, command: str, kind: str, reason: str
    ) -> None:
        path = tmp_path / "events.ndjson"
        if kind == "directory":
            path.mkdir()
        elif kind == "unreadable":
            if os.geteuid() == 0:
                pytest.skip("root reads any file (see test_permission_denied_in_process)")
            path.write_text("{}\n", encoding="utf-8")
            path.chmod(0)
        done = run_cli(command, str(path))
        assert (done.returncode, done.stdout) == (2, ""), done.stderr[-2000:]
        assert done.stderr == f"her2-consumer: {reason}: {path}\n"

    @pytest.mark.parametrize("command", ["evaluate", "publish"])
    def test_permission_denied_in_process(
        self,
        tmp_path: Path,
        command: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The unreadable case wherever the tests run (as root, chmod 0 does not stop a read)."""
        path = str(tmp_path / "events.ndjson")

        def refuse(name: str, *_: Any, **__: Any) -> Any:
            raise PermissionError(13, "Permission denied", name)

        monkeypatch.setattr(evaluate_tool, "open", refuse, raising=False)
        assert cli.main([command, path]) == 2
        assert capsys.readouterr().err == f"her2-consumer: Permission denied: {path}\n"

    def test_an_os_error_without_a_file_keeps_its_traceback(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Only a file that cannot be opened is worded; any other OS error is not ours to hide."""

        def fail(*_: Any, **__: Any) -> Any:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(evaluate_tool, "open", fail, raising=False)
        with pytest.raises(OSError, match="Input/output error"):
            cli.main(["evaluate", str(tmp_path / "events.ndjson")])


def parse_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The argparse error line of `argv` (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


class TestTimeout:
    """`open-alerts --timeout` (and the demo's) took any float: a negative or nan deadline
    passes at once (nan compares false), inf never does."""

    @pytest.mark.parametrize("command", ["open-alerts", "demo", "rebuild-history"])
    @pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "soon"])
    def test_refused(self, capsys: pytest.CaptureFixture[str], command: str, value: str) -> None:
        error = parse_error(capsys, command, f"--timeout={value}")
        assert error.startswith(f"her2-consumer {command}: error: argument --timeout: ")
        assert repr(value) in error

    @pytest.mark.parametrize("command", ["open-alerts", "demo", "rebuild-history"])
    @pytest.mark.parametrize(("value", "seconds"), [("0.5", 0.5), ("30", 30.0), ("1e3", 1000.0)])
    def test_accepted(self, command: str, value: str, seconds: float) -> None:
        assert cli.build_parser().parse_args([command, "--timeout", value]).timeout == seconds

    @pytest.mark.parametrize(
        ("command", "default"), [("open-alerts", 30.0), ("demo", 60.0), ("rebuild-history", 60.0)]
    )
    def test_default(self, command: str, default: float) -> None:
        assert cli.build_parser().parse_args([command]).timeout == default


class TestDemoCount:
    """`demo --count` had no upper bound: every event is generated in memory before the demo
    connects, so a huge count hung (100,000 already took 18 s and 280 MB)."""

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("0", id="zero"),
            pytest.param("-3", id="negative"),
            pytest.param(str(cli.DEMO_MAX_COUNT + 1), id="one-over"),
            pytest.param("1000000000", id="huge"),
            pytest.param("4.5", id="fraction"),
        ],
    )
    def test_refused(self, capsys: pytest.CaptureFixture[str], value: str) -> None:
        error = parse_error(capsys, "demo", f"--count={value}")
        assert error.startswith("her2-consumer demo: error: argument --count: ")

    @pytest.mark.parametrize("value", [1, 40, cli.DEMO_MAX_COUNT])
    def test_accepted(self, value: int) -> None:
        assert cli.build_parser().parse_args(["demo", "--count", str(value)]).count == value

    def test_the_cap_is_in_the_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["demo", "--help"])
        assert "1 to 10,000" in capsys.readouterr().out


def _replace(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old` in the file at `path`."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _bad_severity(alerts: Path) -> None:
    _replace(alerts / "dg-assay.yaml", "\nseverity: INFO\n", "\nseverity: URGENT\n")


def _duplicate_rule(alerts: Path) -> None:
    shutil.copy(alerts / "dg-assay.yaml", alerts / "dg-assay-copy.yaml")


def _failing_example(alerts: Path) -> None:
    # the quiet example's facts made those of the firing one: it fires, against its `fires: false`
    _replace(alerts / "dg-assay.yaml", "assay_undocumented: false}", "assay_undocumented: true}")


class TestRulesCheckNamesTheFile:
    """`rules check --rules-dir DIR` named a broken rule file `rules/alerts/<file>.yaml`, the
    shipped rules' place, whatever DIR was (README: it exits 2 "with the file"). Now a given
    folder's file is named by its path as given: relative stays relative."""

    @pytest.mark.parametrize(
        ("breaks", "expected"),
        [
            pytest.param(
                _bad_severity,
                "x/custom/alerts/dg-assay.yaml: severity must be one of",
                id="rule-file-shape",
            ),
            pytest.param(
                _duplicate_rule,
                "x/custom/alerts/dg-assay.yaml: duplicate rule id 'dg-assay' "
                "(x/custom/alerts/dg-assay-copy.yaml)",
                id="duplicate-rule-id",
            ),
            pytest.param(
                _failing_example,
                "x/custom/alerts/dg-assay.yaml: example 1 (documented) expected fires=False",
                id="failing-example",
            ),
        ],
    )
    def test_a_relative_rules_dir(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        breaks: Callable[[Path], None],
        expected: str,
    ) -> None:
        shutil.copytree(data_dir("rules"), tmp_path / "x" / "custom")
        breaks(tmp_path / "x" / "custom" / "alerts")
        monkeypatch.chdir(tmp_path)
        assert cli.main(["rules", "check", "--rules-dir", "x/custom"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"her2-consumer: rule set invalid: {expected}"), err
        assert "rules/alerts/" not in err

    def test_an_absolute_rules_dir(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        folder = tmp_path / "custom"
        shutil.copytree(data_dir("rules"), folder)
        _bad_severity(folder / "alerts")
        assert cli.main(["rules", "check", "--rules-dir", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"her2-consumer: rule set invalid: {folder}/alerts/dg-assay.yaml: ")

    def test_the_shipped_rules_keep_their_source_tree_name(self) -> None:
        """Without --rules-dir the label stays `rules/alerts/<file>`, wherever the package data
        is read from (the wheel's consumer/_data/rules or the source tree)."""
        paths = {rule.path for rule in load_ruleset(check=False).rules}
        assert paths == {f"rules/alerts/{p.name}" for p in (data_dir("rules") / "alerts").iterdir()}
