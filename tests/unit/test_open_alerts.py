"""`her2-consumer open-alerts` (consumer/tools/downstream.py) against a scripted KafkaConsumer:
what it prints, and how it reports a broker it cannot reach or topics it cannot read in time
(one line on stderr, exit 1, as `demo` and `publish` report Kafka errors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from kafka.errors import BrokerNotAvailableError, KafkaConnectionError, KafkaTimeoutError

from consumer import cli
from consumer.avro.outputs import Codecs
from consumer.config import Settings
from consumer.tools import downstream

TOPIC_COUNT = 4  # the alert topics (Settings.topics.alert_topics)


def alert(alert_id: str, revision: int, status: str, patient: str = "P1") -> dict[str, Any]:
    """A Her2Alert v2 record."""
    return {
        "alert_id": alert_id, "revision": revision, "alert_type": "RETEST", "code": "RETEST-01",
        "scope": "PATIENT", "status": status, "rule_id": "retest-metastasis", "rule_version": 1,
        "severity": "WARNING", "patient_id": patient, "accession_id": f"S-{alert_id}",
        "event_id": "e1", "her2_category": "LOW", "title": "t", "detail": "d",
        "recommendation": "r", "evidence": ["ASCO/CAP 2023"], "ruleset_version": "1",
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
        "event_time": datetime(2024, 1, 1, tzinfo=UTC),
    }  # fmt: skip


class ScriptedConsumer:
    """Partition 0 of every topic; `values` are the first topic's records, one poll each.
    `fail_on`: the method that raises `error` (None: none)."""

    values: ClassVar[list[bytes]] = []
    error: ClassVar[Exception | None] = None
    fail_on: ClassVar[str | None] = None
    stuck: ClassVar[bool] = False  # the position never reaches the end (a read never done)

    def __init__(self, **config: Any) -> None:
        assert config["isolation_level"] == "read_committed"
        self._raise_on("__init__")
        self.closed = False
        self._queue: list[tuple[Any, bytes]] = []
        self._pos: dict[Any, int] = {}

    def _raise_on(self, method: str) -> None:
        if self.fail_on == method and self.error is not None:
            raise self.error

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions: list[Any]) -> None:
        first = partitions[0]
        self._queue = [(first, v) for v in self.values]
        self._pos = dict.fromkeys(partitions, 0)

    def seek_to_beginning(self, *partitions: Any) -> None:
        pass

    def seek(self, tp: Any, offset: int) -> None:
        assert offset == 0, "the scripted topics are read from their start"

    def end_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        self._raise_on("end_offsets")
        first = partitions[0]
        return {tp: len(self.values) if tp == first else 0 for tp in partitions}

    def position(self, tp: Any) -> int:
        return -1 if self.stuck else self._pos[tp]

    def poll(self, timeout_ms: int) -> dict[Any, list[Any]]:
        self._raise_on("poll")
        if not self._queue:
            return {}
        tp, value = self._queue.pop(0)
        self._pos[tp] += 1
        return {tp: [SimpleNamespace(value=value)]}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedConsumer]:
    """A fresh ScriptedConsumer class in place of kafka-python's, single-object output."""
    monkeypatch.setenv("HER2_OUTPUT_FORMAT", "single-object")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("HER2_REQUEST_TIMEOUT_MS", raising=False)
    monkeypatch.delenv("HER2_SCHEMA_REGISTRY_URL", raising=False)
    script = type("Script", (ScriptedConsumer,), {})
    monkeypatch.setattr(downstream, "KafkaConsumer", script)
    return script


def encoded(*alerts: dict[str, Any]) -> list[bytes]:
    settings = Settings.from_env({"HER2_OUTPUT_FORMAT": "single-object"})
    encoder = Codecs.build(settings, None).alerts[settings.topics.retest]
    return [encoder.encode(a) for a in alerts]


class TestOpenAlerts:
    """The highest revision per alert_id; the ACTIVE ones are printed, by patient."""

    def test_prints_the_open_alerts(
        self, scripted: type[ScriptedConsumer], capsys: pytest.CaptureFixture[str]
    ) -> None:
        scripted.values = [
            *encoded(alert("a1", 1, "ACTIVE"), alert("a2", 1, "ACTIVE", patient="P2")),
            b"not an alert",
            *encoded(alert("a1", 2, "RESOLVED")),
        ]
        # an undecodable record (another writer schema, say) may hide an open alert: the list
        # is printed, the count said, and the exit is a failure (it was 0, audit M1)
        assert cli.main(["open-alerts"]) == 1
        out, err = capsys.readouterr()
        assert [line.count('"alert_id":"a2"') for line in out.splitlines()] == [1]
        assert err == (
            "open-alerts: 1 alert records could not be decoded; the open alerts above may be "
            "incomplete\n"
        )

    def test_one_patient(
        self, scripted: type[ScriptedConsumer], capsys: pytest.CaptureFixture[str]
    ) -> None:
        scripted.values = encoded(alert("a1", 1, "ACTIVE"), alert("a2", 1, "ACTIVE", "P2"))
        assert cli.main(["open-alerts", "--patient", "P2"]) == 0
        [line] = capsys.readouterr().out.splitlines()
        assert '"alert_id":"a2"' in line


def _kafka_error(error: Exception, method: str) -> Callable[[type[ScriptedConsumer]], None]:
    def script(consumer: type[ScriptedConsumer]) -> None:
        consumer.values = encoded(alert("a1", 1, "ACTIVE"))
        consumer.error, consumer.fail_on = error, method

    return script


def _stuck(consumer: type[ScriptedConsumer]) -> None:
    consumer.stuck = True


class TestErrors:
    """A broker it cannot reach gave kafka-python's traceback (exit 1); the read deadline a bare
    TimeoutError. Each is now one line on stderr, exit 1, nothing on stdout."""

    @pytest.mark.parametrize(
        ("script", "message"),
        [
            pytest.param(
                _kafka_error(
                    KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']"), "__init__"
                ),
                # run's diagnosis, naming what to check (was kafka-python's bare timeout)
                "open-alerts: KafkaConnectError: no Kafka broker answered at "
                "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1 within HER2_REQUEST_TIMEOUT_MS=30000 (check "
                "the address and KAFKA_SECURITY_PROTOCOL=PLAINTEXT)",
                id="bootstrap-timeout",
            ),
            pytest.param(
                _kafka_error(BrokerNotAvailableError(), "end_offsets"),
                "open-alerts: BrokerNotAvailableError: [Error 8] BrokerNotAvailableError",
                id="broker-not-available",
            ),
            pytest.param(
                _kafka_error(KafkaConnectionError("connection reset"), "poll"),
                "open-alerts: KafkaConnectionError: KafkaConnectionError: connection reset",
                id="lost-while-reading",
            ),
            pytest.param(
                _stuck,
                "open-alerts: the alert topics were not read to their end in time (--timeout 0.05)",
                id="read-deadline",
            ),
        ],
    )
    def test_one_line_exit_1(
        self,
        scripted: type[ScriptedConsumer],
        capsys: pytest.CaptureFixture[str],
        script: Callable[[type[ScriptedConsumer]], None],
        message: str,
    ) -> None:
        script(scripted)
        assert cli.main(["open-alerts", "--timeout", "0.05"]) == 1
        out, err = capsys.readouterr()
        assert (out, err) == ("", message + "\n")


def test_end_offsets_prints_every_alert_partitions_end(
    scripted: type[ScriptedConsumer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Noted before a changelog replay; each alert topic's partition 0 here."""
    scripted.values = encoded(alert("a1", 1, "ACTIVE"), alert("a2", 1, "ACTIVE"))
    assert cli.main(["open-alerts", "--end-offsets"]) == 0
    noted = json.loads(capsys.readouterr().out)
    topics = Settings.from_env({}).topics.alert_topics()
    assert noted == {t: {"0": 2 if t == topics[0] else 0} for t in topics}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it (FileNotFoundError)"),
        ("not json", "cannot read it (JSONDecodeError)"),
        ("{}", "no offsets for alert topic"),
        ('{"TOPIC": {"0": "x"}}', "not partition: offset"),
        ('{"TOPIC": {"0": -1}}', "not partition: offset"),
        ('{"TOPIC": {"0": 5.9}}', "not partition: offset"),
        ('{"TOPIC": {"0": true}}', "not partition: offset"),
        ('{"TOPIC": {"00": 1}}', "not partition: offset"),
        ("[" * 100_000, "cannot read it (RecursionError)"),
    ],
    ids=[
        "missing",
        "garbage",
        "other-topics",
        "bad-offset",
        "negative",
        "fraction",
        "bool",
        "padded-partition",
        "nested",
    ],
)
def test_an_offsets_file_that_does_not_fit_is_a_configuration_error(
    scripted: type[ScriptedConsumer],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: str | None,
    message: str,
) -> None:
    path = tmp_path / "offsets.json"
    if content is not None:
        topics = Settings.from_env({}).topics.alert_topics()
        ok = {t: {"0": 0} for t in topics[1:]}
        path.write_text(
            content
            if content in {"not json", "{}", "[" * 100_000}
            else json.dumps({**ok, topics[0]: json.loads(content)["TOPIC"]}),
            encoding="utf-8",
        )
    assert cli.main(["open-alerts", "--from-offsets", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_partition_added_since_the_offsets_were_noted_is_read_from_its_start(
    scripted: type[ScriptedConsumer], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scripted.values = encoded(alert("a1", 1, "ACTIVE"))
    topics = Settings.from_env({}).topics.alert_topics()
    path = tmp_path / "offsets.json"
    path.write_text(json.dumps({t: {} for t in topics}), encoding="utf-8")  # no partition yet
    assert cli.main(["open-alerts", "--from-offsets", str(path)]) == 0
    assert [line.count('"alert_id":"a1"') for line in capsys.readouterr().out.splitlines()] == [1]


def test_offsets_past_a_partitions_end_are_refused(
    scripted: type[ScriptedConsumer], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A topic re-created since the offsets were noted: reading from its end would show no
    alert at all, so the command refuses."""
    scripted.values = encoded(alert("a1", 1, "ACTIVE"))
    topics = Settings.from_env({}).topics.alert_topics()
    path = tmp_path / "offsets.json"
    path.write_text(json.dumps({t: {"0": 5} for t in topics}), encoding="utf-8")
    assert cli.main(["open-alerts", "--from-offsets", str(path)]) == 2
    assert "ends at 1, before the noted 5" in capsys.readouterr().err
