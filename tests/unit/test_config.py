"""Unit tests of consumer.config: defaults, every variable, validation messages, secrets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError

from consumer.avro.codec import Decoder
from consumer.config import (
    ENV_VARS,
    EvaluationSettings,
    KafkaSecurity,
    Settings,
    _unresolvable,
    load_writer_schema,
)
from consumer.errors import ConfigError, DecodeError
from consumer.resources import PATHOLOGY_RESULT, parsed_schema, raw_schema

PINNED = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "HER2_GROUP_ID",
    "HER2_INPUT_TOPIC",
    "HER2_DLQ_TOPIC",
    "HER2_CLASSIFICATION_TOPIC",
    "HER2_HISTORY_TOPIC",
    "HER2_INPUT_FORMAT",
    "HER2_OUTPUT_FORMAT",
    "HER2_SCHEMA_REGISTRY_URL",
    "HER2_PROCESSING_GUARANTEE",
    "HER2_HTTP_PORT",
)


@pytest.fixture
def writer_schema(tmp_path: Path) -> Path:
    path = tmp_path / "writer.avsc"
    path.write_text(json.dumps(raw_schema(PATHOLOGY_RESULT)), encoding="utf-8")
    return path


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "file.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    return path


class TestDefaults:
    def test_an_empty_environment_gives_the_designs_defaults(self) -> None:
        s = Settings.from_env({})
        assert s.bootstrap_servers == "localhost:9092"
        assert s.group_id == "her2-alert-consumer"
        assert dataclasses.astuple(s.topics) == (
            "lab.pathology.results.v1",
            "lab.pathology.results.v1.dlq",
            "her2.classifications.v1",
            "her2.patient-history.v2",
            "her2.alerts.retest.v2",
            "her2.alerts.documentation.v2",
            "her2.alerts.tdxd-eligibility.v2",
            "her2.alerts.therapy-caution.v2",
        )
        assert (s.input_format, s.output_format) == ("auto", "single-object")
        assert s.schema_registry_url is None
        assert s.raw_writer_schema is None
        assert s.processing_guarantee == "at_least_once"
        assert not s.exactly_once
        assert s.http_port == 8000
        assert s.history_retention_days == 0  # keep every accession (test_history_retention)
        assert (s.log_level, s.max_poll_records, s.publish_retries) == ("INFO", 500, 3)
        assert s.instance_id is None
        assert s.event_time_skew == dt.timedelta(hours=24)
        assert s.test_crash_before_commit is None
        assert (s.history_store, s.state_dir) == ("disk", None)
        assert s.security == KafkaSecurity()

    def test_from_env_defaults_equal_the_dataclass_defaults(self) -> None:
        assert Settings.from_env({}) == Settings()

    def test_every_pinned_variable_is_declared(self) -> None:
        declared = {name for name, _, _ in ENV_VARS}
        assert set(PINNED) <= declared
        assert len(declared) == len(ENV_VARS), "no variable declared twice"

    def test_blank_values_mean_unset(self) -> None:
        assert Settings.from_env({"HER2_GROUP_ID": "  ", "HER2_HTTP_PORT": ""}) == Settings()


class TestVariables:
    @pytest.mark.parametrize(
        ("env", "attribute", "expected"),
        [
            pytest.param(
                {"KAFKA_BOOTSTRAP_SERVERS": "b1:9092, b2:9093"},
                "bootstrap_servers",
                "b1:9092,b2:9093",
                id="bootstrap-list",
            ),
            pytest.param({"HER2_GROUP_ID": "g"}, "group_id", "g", id="group"),
            pytest.param({"HER2_INPUT_TOPIC": "in"}, "topics.input", "in", id="input-topic"),
            pytest.param({"HER2_DLQ_TOPIC": "d"}, "topics.dlq", "d", id="dlq-topic"),
            pytest.param(
                {"HER2_CLASSIFICATION_TOPIC": "c"},
                "topics.classification",
                "c",
                id="classification-topic",
            ),
            pytest.param({"HER2_HISTORY_TOPIC": "h"}, "topics.history", "h", id="history-topic"),
            pytest.param({"HER2_RETEST_TOPIC": "r"}, "topics.retest", "r", id="retest-topic"),
            pytest.param(
                {"HER2_DOCUMENTATION_TOPIC": "x"},
                "topics.documentation",
                "x",
                id="documentation-topic",
            ),
            pytest.param({"HER2_TDXD_TOPIC": "t"}, "topics.tdxd", "t", id="tdxd-topic"),
            pytest.param(
                {"HER2_THERAPY_CAUTION_TOPIC": "tc"},
                "topics.therapy_caution",
                "tc",
                id="caution-topic",
            ),
            pytest.param(
                {"HER2_INPUT_FORMAT": "single-object"},
                "input_format",
                "single-object",
                id="input-format",
            ),
            pytest.param({"HER2_OUTPUT_FORMAT": "raw"}, "output_format", "raw", id="output-format"),
            pytest.param(
                {"HER2_PROCESSING_GUARANTEE": "exactly_once", "HER2_INSTANCE_ID": "pod-0"},
                "exactly_once",
                True,
                id="eos",
            ),
            pytest.param(
                {"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "3600"},
                "event_time_skew",
                dt.timedelta(hours=1),
                id="event-time-skew",
            ),
            pytest.param({"HER2_HTTP_PORT": "9100"}, "http_port", 9100, id="port"),
            pytest.param({"HER2_HTTP_PORT": "0"}, "http_port", 0, id="port-any"),
            pytest.param(
                {"HER2_HISTORY_RETENTION_DAYS": "0"},
                "history_retention_days",
                0,
                id="retention-forever",
            ),
            pytest.param(
                {"HER2_LOG_LEVEL": "debug"}, "log_level", "DEBUG", id="log-level-any-case"
            ),
            pytest.param({"HER2_MAX_POLL_RECORDS": "50"}, "max_poll_records", 50, id="max-poll"),
            pytest.param(
                {"HER2_HISTORY_CACHE_PATIENTS": "0"},
                "history_cache_patients",
                0,
                id="history-cache-off",
            ),
            pytest.param({"HER2_PUBLISH_RETRIES": "0"}, "publish_retries", 0, id="no-retries"),
            pytest.param({"HER2_INSTANCE_ID": "pod-1"}, "instance_id", "pod-1", id="instance"),
            pytest.param(
                {"HER2_POLL_TIMEOUT_MS": "250"}, "tuning.poll_timeout_ms", 250, id="poll-timeout"
            ),
            pytest.param(
                {"HER2_SESSION_TIMEOUT_MS": "6000"}, "tuning.session_timeout_ms", 6000, id="session"
            ),
            pytest.param(
                {"HER2_RESTORE_TIMEOUT_SECONDS": "2.5"},
                "tuning.restore_timeout_s",
                2.5,
                id="restore",
            ),
            pytest.param(
                {"HER2_TOPIC_REPLICATION_FACTOR": "3"},
                "tuning.replication_factor",
                3,
                id="replication",
            ),
            pytest.param(
                {"HER2_GC_GEN0_THRESHOLD": "0"}, "tuning.gc_gen0_threshold", 0, id="gc-default"
            ),
            pytest.param(
                {"HER2_TEST_CRASH_BEFORE_COMMIT": "2"},
                "test_crash_before_commit",
                2,
                id="test-hook",
            ),
        ],
    )
    def test_each_variable_sets_its_field(
        self, env: dict[str, str], attribute: str, expected: Any
    ) -> None:
        value: Any = Settings.from_env(env)
        for part in attribute.split("."):
            value = getattr(value, part)
        assert value == expected

    def test_raw_input_with_a_writer_schema(self, writer_schema: Path) -> None:
        s = Settings.from_env(
            {"HER2_INPUT_FORMAT": "raw", "HER2_RAW_WRITER_SCHEMA": str(writer_schema)}
        )
        assert s.raw_writer_schema == writer_schema
        assert load_writer_schema(writer_schema)["name"] == "health.her2.PathologyResult"

    def test_confluent_with_a_registry(self) -> None:
        s = Settings.from_env(
            {
                "HER2_INPUT_FORMAT": "confluent",
                "HER2_OUTPUT_FORMAT": "confluent",
                "HER2_SCHEMA_REGISTRY_URL": "https://user:pw@registry:8081/api",
            }
        )
        assert s.registry_display() == "https://registry:8081/api"

    def test_alert_topic_by_type(self) -> None:
        topics = Settings.from_env({"HER2_TDXD_TOPIC": "tdxd"}).topics
        assert topics.alert_topic("TDXD_ELIGIBILITY") == "tdxd"
        assert topics.alert_topic("RETEST") == "her2.alerts.retest.v2"
        assert len(topics.outputs()) == 7
        assert topics.input not in topics.outputs()

    def test_an_unknown_alert_type_is_a_key_error(self) -> None:
        topics = Settings.from_env({}).topics
        topics.alert_topic("RETEST")  # the mapping built
        with pytest.raises(KeyError, match="NO_SUCH_TYPE"):
            topics.alert_topic("NO_SUCH_TYPE")

    def test_the_alert_topic_mapping_is_not_part_of_the_value(self) -> None:
        """Built once per Topics and kept beside its fields: a used Topics equals, hashes and
        prints as a fresh one, and a replaced one maps to its own topics."""
        used, fresh = Settings.from_env({}).topics, Settings.from_env({}).topics
        assert used.alert_topic("RETEST") == "her2.alerts.retest.v2"
        assert used._alert_topics is used._alert_topics  # built once, not per call
        assert used == fresh
        assert hash(used) == hash(fresh)
        assert repr(used) == repr(fresh)
        changed = dataclasses.replace(used, tdxd="tdxd", retest="retest")
        assert changed.alert_topic("TDXD_ELIGIBILITY") == "tdxd"
        assert changed.alert_topic("RETEST") == "retest"
        assert used.alert_topic("RETEST") == "her2.alerts.retest.v2"

    def test_transactional_id_is_group_and_instance(self) -> None:
        with_instance = Settings.from_env({"HER2_GROUP_ID": "g", "HER2_INSTANCE_ID": "pod-1"})
        assert with_instance.transactional_id("host-a") == "g-pod-1"


class TestInstanceId:
    """Issue 15, item 5: the transactional id is `<group>-<instance id>`, unique per process
    and stable across its restarts. HER2_INSTANCE_ID wins; without it an exactly-once service
    claims a slot on its host at start-up (consumer/instance.py, tests/unit/test_instance.py)
    instead of using the host name, which several processes on one host shared."""

    @pytest.mark.parametrize(
        "env",
        [
            pytest.param({}, id="unset"),
            pytest.param({"HER2_INSTANCE_ID": "   "}, id="blank"),
        ],
    )
    def test_exactly_once_starts_without_an_instance_id(self, env: dict[str, str]) -> None:
        settings = Settings.from_env({"HER2_PROCESSING_GUARANTEE": "exactly_once", **env})
        assert settings.exactly_once
        assert settings.instance_id is None  # the service claims a host slot (runtime)

    def test_at_least_once_needs_none(self) -> None:
        assert Settings.from_env({}).instance_id is None  # no transactional id to share

    def test_the_instance_id_wins_over_the_default(self) -> None:
        env = {"HER2_PROCESSING_GUARANTEE": "exactly_once", "HER2_GROUP_ID": "g"}
        with_instance = Settings.from_env({**env, "HER2_INSTANCE_ID": "pod-1"})
        assert with_instance.transactional_id("host-a-0a1b2c3d-0") == "g-pod-1"
        assert Settings.from_env(env).transactional_id("host-a-0a1b2c3d-0") == (
            "g-host-a-0a1b2c3d-0"
        )

    def test_three_processes_on_one_host_get_three_transactional_ids(self) -> None:
        ids = {
            Settings.from_env(
                {"HER2_PROCESSING_GUARANTEE": "exactly_once", "HER2_INSTANCE_ID": f"host-a-{n}"}
            ).transactional_id("host-a")
            for n in range(3)
        }
        assert len(ids) == 3

    def test_a_run_without_a_usable_slot_directory_exits_2_naming_the_variable(
        self, tmp_path: Path
    ) -> None:
        # exactly-once without HER2_INSTANCE_ID and with a HER2_STATE_DIR that is a file: the
        # slot cannot be claimed, so `run` stops like any configuration error (exit 2), before
        # any Kafka connection
        not_a_dir = tmp_path / "state"
        not_a_dir.write_text("x")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HER2_", "KAFKA_"))},
            "HER2_PROCESSING_GUARANTEE": "exactly_once",
            "HER2_HISTORY_STORE": "memory",
            "HER2_STATE_DIR": str(not_a_dir),
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # never reached
            "HER2_HTTP_PORT": "0",
        }
        run = subprocess.run(
            [sys.executable, "-m", "consumer", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert run.returncode == 2, run.stderr
        assert "HER2_STATE_DIR: cannot claim an instance slot" in run.stderr

    def test_the_same_instance_id_after_a_restart_gives_the_same_transactional_id(self) -> None:
        # what lets the restarted process fence its predecessor and abort its open transaction
        env = {"HER2_PROCESSING_GUARANTEE": "exactly_once", "HER2_INSTANCE_ID": "her2-consumer-0"}
        first, second = Settings.from_env(env), Settings.from_env(dict(env))
        assert first.transactional_id("node-1") == second.transactional_id("node-2")


class TestValidation:
    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            pytest.param(
                {"HER2_INPUT_FORMAT": "json"}, "HER2_INPUT_FORMAT", id="unknown-input-format"
            ),
            pytest.param(
                {"HER2_OUTPUT_FORMAT": "auto"}, "HER2_OUTPUT_FORMAT", id="auto-is-input-only"
            ),
            pytest.param(
                {"HER2_OUTPUT_FORMAT": "confluent"},
                "HER2_SCHEMA_REGISTRY_URL",
                id="confluent-out-no-registry",
            ),
            pytest.param(
                {"HER2_INPUT_FORMAT": "confluent"},
                "HER2_SCHEMA_REGISTRY_URL",
                id="confluent-in-no-registry",
            ),
            pytest.param(
                {"HER2_SCHEMA_REGISTRY_URL": "registry:8081"},
                "HER2_SCHEMA_REGISTRY_URL",
                id="registry-not-a-url",
            ),
            pytest.param(
                {"HER2_SCHEMA_REGISTRY_URL": "http://r:port"},
                "HER2_SCHEMA_REGISTRY_URL",
                id="registry-bad-port",
            ),
            pytest.param(
                {"HER2_INPUT_FORMAT": "raw"}, "HER2_RAW_WRITER_SCHEMA", id="raw-without-writer"
            ),
            pytest.param(
                {"HER2_INPUT_FORMAT": "raw", "HER2_RAW_WRITER_SCHEMA": "/nonexistent.avsc"},
                "HER2_RAW_WRITER_SCHEMA",
                id="raw-writer-missing",
            ),
            pytest.param({"HER2_HTTP_PORT": "eighty"}, "HER2_HTTP_PORT", id="port-not-integer"),
            pytest.param({"HER2_HTTP_PORT": "70000"}, "HER2_HTTP_PORT", id="port-out-of-range"),
            pytest.param({"HER2_HTTP_PORT": "80.5"}, "HER2_HTTP_PORT", id="port-not-whole"),
            pytest.param(
                {"HER2_PROCESSING_GUARANTEE": "exactly-once"},
                "HER2_PROCESSING_GUARANTEE",
                id="guarantee",
            ),
            pytest.param({"HER2_LOG_LEVEL": "LOUD"}, "HER2_LOG_LEVEL", id="log-level"),
            pytest.param(
                {"HER2_MAX_POLL_RECORDS": "0"}, "HER2_MAX_POLL_RECORDS", id="max-poll-zero"
            ),
            pytest.param(
                {"HER2_PUBLISH_RETRIES": "-1"}, "HER2_PUBLISH_RETRIES", id="retries-negative"
            ),
            pytest.param(
                {"HER2_GC_GEN0_THRESHOLD": "-5"}, "HER2_GC_GEN0_THRESHOLD", id="gc-negative"
            ),
            pytest.param(
                {"HER2_HISTORY_RETENTION_DAYS": "-5"},
                "HER2_HISTORY_RETENTION_DAYS",
                id="retention-negative",
            ),
            pytest.param(
                {"HER2_HISTORY_CACHE_PATIENTS": "lots"},
                "HER2_HISTORY_CACHE_PATIENTS",
                id="history-cache-not-a-number",
            ),
            pytest.param({"HER2_INPUT_TOPIC": "bad topic"}, "HER2_INPUT_TOPIC", id="illegal-topic"),
            pytest.param(
                {"HER2_CLASSIFICATION_TOPIC": "lab.pathology.results.v1"},
                "HER2_CLASSIFICATION_TOPIC",
                id="output-equals-input",
            ),
            pytest.param(
                {"HER2_HISTORY_TOPIC": "her2.classifications.v1"},
                "HER2_HISTORY_TOPIC",
                id="changelog-shared",
            ),
            pytest.param({"HER2_INSTANCE_ID": "pod 1"}, "HER2_INSTANCE_ID", id="instance-id"),
            pytest.param({"HER2_INSTANCE_ID": "."}, "HER2_INSTANCE_ID", id="instance-id-dot"),
            pytest.param({"HER2_INSTANCE_ID": ".."}, "HER2_INSTANCE_ID", id="instance-id-dots"),
            pytest.param(
                {"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "0"},
                "HER2_MAX_EVENT_TIME_SKEW_SECONDS",
                id="skew-zero",
            ),
            pytest.param(
                {"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "-60"},
                "HER2_MAX_EVENT_TIME_SKEW_SECONDS",
                id="skew-negative",
            ),
            pytest.param(
                {"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "1d"},
                "HER2_MAX_EVENT_TIME_SKEW_SECONDS",
                id="skew-not-a-number",
            ),
            pytest.param(
                {"HER2_MAX_EVENT_TIME_SKEW_SECONDS": str(400 * 366 * 86400)},
                "HER2_MAX_EVENT_TIME_SKEW_SECONDS",
                id="skew-absurd",
            ),
            pytest.param(
                {"KAFKA_BOOTSTRAP_SERVERS": "localhost"},
                "KAFKA_BOOTSTRAP_SERVERS",
                id="bootstrap-no-port",
            ),
            pytest.param(
                {"HER2_HEARTBEAT_INTERVAL_MS": "6000", "HER2_SESSION_TIMEOUT_MS": "6000"},
                "HER2_HEARTBEAT_INTERVAL_MS",
                id="heartbeat-not-below-session",
            ),
            pytest.param(
                {"HER2_RESTORE_TIMEOUT_SECONDS": "400"},
                "HER2_RESTORE_TIMEOUT_SECONDS",
                id="restore-longer-than-poll-interval",
            ),
            pytest.param(
                {"HER2_RESTORE_TIMEOUT_SECONDS": "nan"},
                "HER2_RESTORE_TIMEOUT_SECONDS",
                id="restore-nan",
            ),
            pytest.param(
                {"HER2_TOPIC_REPLICATION_FACTOR": "0"},
                "HER2_TOPIC_REPLICATION_FACTOR",
                id="replication-zero",
            ),
            pytest.param(
                {"HER2_TEST_CRASH_BEFORE_COMMIT": "soon"},
                "HER2_TEST_CRASH_BEFORE_COMMIT",
                id="test-hook",
            ),
            pytest.param(
                {"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", id="protocol"
            ),
            pytest.param(
                {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
                "KAFKA_SASL_MECHANISM",
                id="sasl-no-mechanism",
            ),
            pytest.param(
                {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"},
                "KAFKA_SASL_USERNAME",
                id="sasl-no-user",
            ),
            pytest.param(
                {
                    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                    "KAFKA_SASL_USERNAME": "u",
                },
                "KAFKA_SASL_PASSWORD",
                id="sasl-no-password",
            ),
            pytest.param(
                {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "KERBEROS"},
                "KAFKA_SASL_MECHANISM",
                id="sasl-unknown-mechanism",
            ),
            pytest.param(
                {"KAFKA_SASL_MECHANISM": "PLAIN"},
                "KAFKA_SASL_MECHANISM",
                id="mechanism-without-sasl",
            ),
            pytest.param(
                {"KAFKA_SASL_PASSWORD": "pw"}, "KAFKA_SASL_PASSWORD", id="password-without-sasl"
            ),
            pytest.param(
                {"KAFKA_SSL_CAFILE": "/nonexistent.pem", "KAFKA_SECURITY_PROTOCOL": "SSL"},
                "KAFKA_SSL_CAFILE",
                id="cafile-missing",
            ),
            pytest.param(
                {"KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
                "KAFKA_SSL_CHECK_HOSTNAME",
                id="check-hostname",
            ),
        ],
    )
    def test_a_bad_value_names_its_variable(self, env: dict[str, str], variable: str) -> None:
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env(env)

    def test_ssl_files_need_an_ssl_protocol(self, pem: Path) -> None:
        with pytest.raises(ConfigError, match="KAFKA_SSL_CAFILE"):
            Settings.from_env({"KAFKA_SSL_CAFILE": str(pem)})

    def test_client_certificate_and_key_go_together(self, pem: Path) -> None:
        with pytest.raises(ConfigError, match="KAFKA_SSL_KEYFILE"):
            Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(pem)})

    def test_an_unparseable_writer_schema_is_refused(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.avsc"
        bad.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
        with pytest.raises(ConfigError, match="HER2_RAW_WRITER_SCHEMA"):
            Settings.from_env({"HER2_INPUT_FORMAT": "raw", "HER2_RAW_WRITER_SCHEMA": str(bad)})

    @pytest.mark.parametrize("value", ["Disk", "rocksdb", "sqlite"])
    def test_an_unknown_history_store_names_its_variable(self, value: str) -> None:
        with pytest.raises(ConfigError, match="HER2_HISTORY_STORE must be one of disk, memory"):
            Settings.from_env({"HER2_HISTORY_STORE": value})

    def test_an_unwritable_state_dir_fails_at_start_up(self, tmp_path: Path) -> None:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        probe = locked / "probe"
        try:
            probe.touch()  # root ignores permission bits: use a file where a directory must be
        except PermissionError:
            target = locked
        else:
            probe.unlink()
            target = tmp_path / "a-file"
            target.write_text("not a directory", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"HER2_STATE_DIR: .* is not a writable directory"):
            Settings.from_env({"HER2_STATE_DIR": str(target)})

    def test_a_missing_state_dir_is_created(self, tmp_path: Path) -> None:
        s = Settings.from_env({"HER2_STATE_DIR": str(tmp_path / "state" / "her2")})
        assert (s.history_store, s.state_dir) == ("disk", tmp_path / "state" / "her2")
        assert s.state_dir is not None
        assert s.state_dir.is_dir()
        assert list(s.state_dir.iterdir()) == []  # the probe file is gone

    def test_the_memory_store_ignores_the_state_dir(self, tmp_path: Path) -> None:
        target = tmp_path / "a-file"
        target.write_text("x", encoding="utf-8")
        s = Settings.from_env({"HER2_HISTORY_STORE": "memory", "HER2_STATE_DIR": str(target)})
        assert s.history_store == "memory"

    def test_messages_never_echo_the_bad_value(self) -> None:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"HER2_SCHEMA_REGISTRY_URL": "ftp://admin:s3cret@registry"})
        assert "s3cret" not in str(caught.value)


def reader_json() -> dict[str, Any]:
    """The PathologyResult reader schema as JSON (a copy)."""
    copied: dict[str, Any] = json.loads(json.dumps(raw_schema(PATHOLOGY_RESULT)))
    return copied


def without_field(name: str) -> dict[str, Any]:
    """The reader schema without its field `name`."""
    schema = reader_json()
    schema["fields"] = [f for f in schema["fields"] if f["name"] != name]
    return schema


def renamed(name: str, namespace: str | None = None) -> dict[str, Any]:
    """The reader schema's record under another name (and namespace)."""
    schema = {**reader_json(), "name": name}
    if namespace is not None:
        schema["namespace"] = namespace
    return schema


REQUIRED = {"event_id": "e-1", "patient_id": "p-1", "accession_id": "a-1", "report_status": "FINAL"}
EMPTY_RECORD = {
    "type": "record",
    "name": "PathologyResult",
    "namespace": "health.her2",
    "fields": [],
}
# writers the service refuses at start-up, and why: with any of them every valid input record
# (one written with the service's schema) would be dead-lettered
UNRESOLVABLE = [
    pytest.param("string", "not a record schema", id="a-string"),
    pytest.param(
        EMPTY_RECORD, "lacks event_id, patient_id, accession_id, report_status", id="no-fields"
    ),
    pytest.param(without_field("patient_id"), "lacks patient_id ", id="a-required-field-missing"),
    pytest.param(renamed("LabResult"), "named health.her2.LabResult", id="another-name"),
    # its records would resolve, but raw input is PathologyResult records, bodies without a
    # union's branch index (and a null written with it would be no report)
    pytest.param(["null", reader_json()], "not a record schema", id="a-union"),
    pytest.param(
        {"type": "enum", "name": "PathologyResult", "symbols": ["FINAL"]},
        "not a record schema",
        id="an-enum-of-the-name",
    ),
]
# writers the service accepts, and that resolve
RESOLVABLE = [
    pytest.param(reader_json(), REQUIRED, id="the-reader"),
    pytest.param(without_field("source_system"), REQUIRED, id="a-defaulted-field-missing"),
    # the Avro rule, which fastavro applies: the unqualified names match
    pytest.param(renamed("PathologyResult", "lab.v0"), REQUIRED, id="another-namespace"),
    pytest.param(
        {
            **reader_json(),
            "fields": [*reader_json()["fields"], {"name": "lab_note", "type": "string"}],
        },
        {**REQUIRED, "lab_note": "n"},
        id="an-extra-field",
    ),
]


def write_schema(tmp_path: Path, schema: Any) -> Path:
    """`schema` as an .avsc file."""
    path = tmp_path / "writer.avsc"
    path.write_text(json.dumps(schema), encoding="utf-8")
    return path


def raw_env(path: Path) -> dict[str, str]:
    """Raw input with the writer schema at `path`."""
    return {"HER2_INPUT_FORMAT": "raw", "HER2_RAW_WRITER_SCHEMA": str(path)}


class TestRawWriterSchema:
    """HER2_RAW_WRITER_SCHEMA must be a writer schema whose records can be read into the
    service's reader schema: one that never can is refused at start-up instead of every valid
    input record being dead-lettered (schema-resolution)."""

    @pytest.mark.parametrize(("writer", "problem"), UNRESOLVABLE)
    def test_a_writer_that_cannot_resolve_is_refused(
        self, tmp_path: Path, writer: Any, problem: str
    ) -> None:
        path = write_schema(tmp_path, writer)
        expected = (
            rf"HER2_RAW_WRITER_SCHEMA: {path} cannot be resolved to the reader schema "
            rf"health\.her2\.PathologyResult: .*{problem}"
        )
        with pytest.raises(ConfigError, match=expected):
            Settings.from_env(raw_env(path))
        with pytest.raises(ConfigError, match=expected):
            load_writer_schema(path)

    @pytest.mark.parametrize(("writer", "problem"), UNRESOLVABLE)
    def test_what_is_refused_would_dead_letter_every_valid_record(
        self, writer: Any, problem: str
    ) -> None:
        valid = avro_body(reader_json(), REQUIRED)
        assert raw_decoder(reader_json()).decode(valid)["patient_id"] == "p-1"
        with pytest.raises(DecodeError):
            raw_decoder(writer).decode(valid)

    @pytest.mark.parametrize(("writer", "datum"), RESOLVABLE)
    def test_a_writer_that_resolves_is_accepted_and_decoded(
        self, tmp_path: Path, writer: Any, datum: dict[str, Any]
    ) -> None:
        path = write_schema(tmp_path, writer)
        assert Settings.from_env(raw_env(path)).raw_writer_schema == path
        decoded = raw_decoder(load_writer_schema(path)).decode(avro_body(writer, datum))
        assert {name: decoded[name] for name in REQUIRED} == REQUIRED

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            pytest.param(b"\xff\xfe{\x00", "is not UTF-8 text", id="utf-16"),
            pytest.param(b'{"type": "string", "doc": "\xe9"}', "is not UTF-8 text", id="latin-1"),
            pytest.param(b"", r"is not an Avro schema \(JSONDecodeError\)", id="empty"),
        ],
    )
    def test_an_unreadable_file_is_refused(
        self, tmp_path: Path, content: bytes, problem: str
    ) -> None:
        path = tmp_path / "writer.avsc"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=f"HER2_RAW_WRITER_SCHEMA: {path} {problem}"):
            Settings.from_env(raw_env(path))


ALIASED_READER = {
    "type": "record",
    "name": "health.her2.PathologyResult",
    "aliases": ["lab.Report"],
    "fields": [
        {"name": "event_id", "type": "string", "aliases": ["id"]},
        {"name": "note", "type": "string", "default": ""},
    ],
}


class TestWriterResolvesToReader:
    """The check behind HER2_RAW_WRITER_SCHEMA with a reader that has aliases (the shipped
    reader has none yet): fastavro matches a writer's record and fields by them too."""

    @pytest.mark.parametrize(
        ("writer_name", "fields", "problem"),
        [
            pytest.param("health.her2.PathologyResult", ["event_id"], None, id="same"),
            pytest.param("lab.Report", ["event_id"], None, id="record-alias"),
            pytest.param("Report", ["event_id"], "named Report", id="not-the-aliass-namespace"),
            pytest.param("PathologyResult", ["id"], None, id="field-alias"),
            pytest.param("other.Report2", ["event_id"], "named other.Report2", id="no-alias"),
            pytest.param("PathologyResult", ["note"], "lacks event_id", id="required-missing"),
        ],
    )
    def test_names_and_aliases(
        self, writer_name: str, fields: list[str], problem: str | None
    ) -> None:
        writer = {
            "type": "record",
            "name": writer_name,
            "fields": [{"name": name, "type": "string"} for name in fields],
        }
        found = _unresolvable(fastavro.parse_schema(writer), ALIASED_READER)
        if problem is None:
            assert found is None
        else:
            assert found is not None
            assert problem in found
        # fastavro agrees: a record the writer wrote is read, or refused for resolution
        body = avro_body(writer, dict.fromkeys(fields, "x"))
        try:
            fastavro.schemaless_reader(
                io.BytesIO(body), fastavro.parse_schema(writer), ALIASED_READER
            )
        except SchemaResolutionError:
            assert problem is not None
        else:
            assert problem is None


def raw_decoder(writer: Any) -> Decoder:
    """The service's decoder of raw input written with `writer`."""
    return Decoder(
        "raw", parsed_schema(PATHOLOGY_RESULT), raw_writer_schema=fastavro.parse_schema(writer)
    )


def avro_body(writer: Any, datum: Any) -> bytes:
    """`datum` in Avro binary as `writer` writes it."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(writer), datum)
    return out.getvalue()


class TestMessages:
    """A refused value's message says what is accepted, whatever was wrong with the value."""

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            pytest.param(
                {"HER2_HTTP_PORT": "eighty"},
                "HER2_HTTP_PORT must be an integer between 0 and 65535",
                id="not-an-integer",
            ),
            pytest.param(
                {"HER2_HTTP_PORT": "80.5"},
                "HER2_HTTP_PORT must be an integer between 0 and 65535",
                id="not-whole",
            ),
            pytest.param(
                {"HER2_HTTP_PORT": "70000"},
                "HER2_HTTP_PORT must be an integer between 0 and 65535",
                id="integer-out-of-range",
            ),
            pytest.param(
                {"HER2_MAX_POLL_RECORDS": "lots"},
                "HER2_MAX_POLL_RECORDS must be an integer between 1 and 1000000",
                id="another-integer",
            ),
            pytest.param(
                {"HER2_RESTORE_TIMEOUT_SECONDS": "2min"},
                "HER2_RESTORE_TIMEOUT_SECONDS must be a number between 0.1 and 86400",
                id="not-a-number",
            ),
            pytest.param(
                {"HER2_MAX_UNREADABLE_CHANGELOG_SHARE": "5%"},
                "HER2_MAX_UNREADABLE_CHANGELOG_SHARE must be a number between 0 and 1",
                id="share-not-a-number",
            ),
            pytest.param(
                {"HER2_MAX_UNREADABLE_CHANGELOG_SHARE": "1.5"},
                "HER2_MAX_UNREADABLE_CHANGELOG_SHARE must be a number between 0 and 1",
                id="number-out-of-range",
            ),
            pytest.param(
                {"HER2_INSTANCE_ID": "pod 1"},
                "HER2_INSTANCE_ID must be at most 249 characters, each a letter, digit, '.', '_' "
                "or '-', and not '.' or '..' (a Kafka group.instance.id)",
                id="instance-id-character",
            ),
            pytest.param(
                {"HER2_INSTANCE_ID": "p" * 250},
                "HER2_INSTANCE_ID must be at most 249 characters, each a letter, digit, '.', '_' "
                "or '-', and not '.' or '..' (a Kafka group.instance.id)",
                id="instance-id-length",
            ),
        ],
    )
    def test_the_message_gives_what_is_accepted(self, env: dict[str, str], message: str) -> None:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env)
        assert str(caught.value) == message

    def test_the_longest_instance_id_is_accepted(self) -> None:
        assert Settings.from_env({"HER2_INSTANCE_ID": "p" * 249}).instance_id == "p" * 249


class TestClientLimits:
    """Values both Kafka clients accept (HER2_KAFKA_CLIENT may be either): a value one of them
    refuses is a ConfigError naming the variable at start-up, not a KafkaConfigurationError
    after the clients are built (tests/unit/test_config_clients.py builds the real clients at
    these edges)."""

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "300001"},
                "HER2_REQUEST_TIMEOUT_MS must be .*between 1000 and 300000",
                id="request-timeout-above-librdkafka-socket-timeout",
            ),
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "540000"},
                "HER2_REQUEST_TIMEOUT_MS must be .*between 1000 and 300000",
                id="request-timeout-kafka-python-connections-max-idle",
            ),
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "1000000"},
                "HER2_REQUEST_TIMEOUT_MS must be .*between 1000 and 300000",
                id="request-timeout-audit-value",
            ),
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "999"},
                "HER2_REQUEST_TIMEOUT_MS must be .*between 1000 and 300000",
                id="request-timeout-too-short",
            ),
            pytest.param(
                {"HER2_SESSION_TIMEOUT_MS": "300001"},
                "HER2_SESSION_TIMEOUT_MS must not exceed HER2_MAX_POLL_INTERVAL_MS",
                id="session-above-default-poll-interval",
            ),
            pytest.param(
                {
                    "HER2_SESSION_TIMEOUT_MS": "60000",
                    "HER2_MAX_POLL_INTERVAL_MS": "59999",
                    "HER2_RESTORE_TIMEOUT_SECONDS": "1",
                },
                "HER2_SESSION_TIMEOUT_MS must not exceed HER2_MAX_POLL_INTERVAL_MS",
                id="session-above-poll-interval",
            ),
            pytest.param(
                {
                    "HER2_PROCESSING_GUARANTEE": "exactly_once",
                    "HER2_TRANSACTION_TIMEOUT_MS": "1000",
                    "HER2_PRODUCER_LINGER_MS": "1000",
                },
                "HER2_PRODUCER_LINGER_MS must be lower than HER2_TRANSACTION_TIMEOUT_MS",
                id="eos-linger-equals-transaction-timeout",
            ),
            pytest.param(
                {
                    "HER2_PROCESSING_GUARANTEE": "exactly_once",
                    "HER2_TRANSACTION_TIMEOUT_MS": "1000",
                    "HER2_PRODUCER_LINGER_MS": "5000",
                },
                "HER2_PRODUCER_LINGER_MS must be lower than HER2_TRANSACTION_TIMEOUT_MS",
                id="eos-linger-above-transaction-timeout",
            ),
        ],
    )
    def test_a_value_a_client_refuses_names_its_variables(
        self, env: dict[str, str], message: str
    ) -> None:
        with pytest.raises(ConfigError, match=message):
            Settings.from_env(env)

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "1000"},
                {"request_timeout_ms": 1000},
                id="request-timeout-lowest",
            ),
            pytest.param(
                {"HER2_REQUEST_TIMEOUT_MS": "300000"},
                {"request_timeout_ms": 300000},
                id="request-timeout-highest",
            ),
            pytest.param(
                {
                    "HER2_SESSION_TIMEOUT_MS": "60000",
                    "HER2_MAX_POLL_INTERVAL_MS": "60000",
                    "HER2_RESTORE_TIMEOUT_SECONDS": "1",
                },
                {"session_timeout_ms": 60000, "max_poll_interval_ms": 60000},
                id="session-equals-poll-interval",
            ),
            pytest.param(
                {
                    "HER2_PROCESSING_GUARANTEE": "exactly_once",
                    "HER2_TRANSACTION_TIMEOUT_MS": "1000",
                    "HER2_PRODUCER_LINGER_MS": "999",
                },
                {"transaction_timeout_ms": 1000, "linger_ms": 999},
                id="eos-linger-below-transaction-timeout",
            ),
            pytest.param(
                {"HER2_TRANSACTION_TIMEOUT_MS": "1000", "HER2_PRODUCER_LINGER_MS": "5000"},
                {"transaction_timeout_ms": 1000, "linger_ms": 5000},
                id="at-least-once-has-no-transaction",
            ),
        ],
    )
    def test_the_edges_are_accepted(self, env: dict[str, str], expected: dict[str, int]) -> None:
        tuning = Settings.from_env(env).tuning
        assert {name: getattr(tuning, name) for name in expected} == expected


class TestKafkaClientSettings:
    def test_plaintext_needs_only_the_bootstrap(self) -> None:
        common = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2"}).kafka_common()
        assert common["bootstrap_servers"] == ["a:1", "b:2"]
        assert common["security_protocol"] == "PLAINTEXT"
        assert not {
            "sasl_mechanism",
            "sasl_plain_password",
            "ssl_cafile",
            "ssl_check_hostname",
        } & set(common)

    def test_a_broker_that_went_away_is_tried_again_within_a_second(self) -> None:
        # kafka-python's own default is 30 s: a restarted broker waited for up to that long
        common = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "a:1"}).kafka_common()
        assert common["reconnect_backoff_max_ms"] == 1000

    def test_sasl_ssl_passes_everything_through(self, pem: Path) -> None:
        s = Settings.from_env(
            {
                "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                "KAFKA_SASL_MECHANISM": "scram-sha-256",
                "KAFKA_SASL_USERNAME": "svc",
                "KAFKA_SASL_PASSWORD": "s3cret",
                "KAFKA_SSL_CAFILE": str(pem),
                "KAFKA_SSL_CHECK_HOSTNAME": "false",
            }
        )
        common = s.kafka_common()
        assert common["security_protocol"] == "SASL_SSL"
        assert common["sasl_mechanism"] == "SCRAM-SHA-256"
        assert (common["sasl_plain_username"], common["sasl_plain_password"]) == ("svc", "s3cret")
        assert common["ssl_cafile"] == str(pem)
        assert common["ssl_check_hostname"] is False

    @pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
    @pytest.mark.parametrize(
        ("given", "mechanism"),
        [("GSSAPI", "GSSAPI"), ("OAUTHBEARER", "OAUTHBEARER"), ("oauthbearer", "OAUTHBEARER")],
    )
    def test_mechanisms_without_their_settings_are_refused(
        self, protocol: str, given: str, mechanism: str
    ) -> None:
        """GSSAPI and OAUTHBEARER were accepted, but the service has no Kerberos settings and no
        OAuth token provider: kafka-python raised "sasl_oauth_token_provider required" and a run
        reported a rejected user name and password. Refused at start-up, naming the variable and
        what it takes (both transports build their clients from these settings)."""
        env = {
            "KAFKA_SECURITY_PROTOCOL": protocol,
            "KAFKA_SASL_MECHANISM": given,
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "s3cret",
        }
        expected = (
            rf"^KAFKA_SASL_MECHANISM {mechanism} is not supported \(.+\): "
            "use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512$"
        )
        with pytest.raises(ConfigError, match=expected) as refused:
            Settings.from_env(env)
        assert "s3cret" not in str(refused.value)

    @pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    def test_every_supported_mechanism_takes_a_user_and_password(self, mechanism: str) -> None:
        base = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": mechanism}
        with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME must be set"):
            Settings.from_env(base)
        s = Settings.from_env({**base, "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})
        assert s.security.sasl_mechanism == mechanism


class TestSecrets:
    def test_repr_masks_the_sasl_password_and_registry_credentials(self) -> None:
        s = Settings.from_env(
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "svc",
                "KAFKA_SASL_PASSWORD": "s3cret-password",
                "HER2_SCHEMA_REGISTRY_URL": "https://reg-user:reg-s3cret@registry:8081",
            }
        )
        for text in (repr(s), str(s), repr(s.security), str(s.summary())):
            assert "s3cret" not in text
        assert "***" in repr(s.security)
        assert "registry:8081" in repr(s)

    @pytest.mark.parametrize(
        ("name", "env", "read"),
        [
            (
                "KAFKA_SASL_PASSWORD",
                {
                    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                    "KAFKA_SASL_MECHANISM": "PLAIN",
                    "KAFKA_SASL_USERNAME": "svc",
                },
                lambda s: s.security.sasl_password,
            ),
            (
                "HER2_SCHEMA_REGISTRY_PASSWORD",
                {
                    "HER2_SCHEMA_REGISTRY_URL": "http://registry:8081",
                    "HER2_SCHEMA_REGISTRY_USERNAME": "reader",
                },
                lambda s: s.registry_access.password,
            ),
        ],
        ids=["sasl", "registry"],
    )
    def test_a_password_from_a_mounted_secret_file(
        self, tmp_path: Path, name: str, env: dict[str, str], read: Any
    ) -> None:
        """Security audit: secrets reached the pod only as environment variables (CIS
        Kubernetes 5.4.1 prefers files). NAME_FILE names a file holding it (a Secret volume);
        its trailing newline goes, as a variable's whitespace does. Errors name the variables,
        never the content."""
        secret = tmp_path / "password"
        secret.write_text("s3cret-from-file\n", encoding="utf-8")
        s = Settings.from_env({**env, f"{name}_FILE": str(secret)})
        assert read(s) == "s3cret-from-file"
        assert "s3cret" not in repr(s)
        with pytest.raises(ConfigError, match=f"^{name} and {name}_FILE are both set: use one$"):
            Settings.from_env({**env, name: "other", f"{name}_FILE": str(secret)})
        secret.write_text("\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=f"^{name}_FILE: the file is empty$"):
            Settings.from_env({**env, f"{name}_FILE": str(secret)})
        secret.write_bytes(b"\xff\xfes3cret")
        with pytest.raises(ConfigError, match=f"^{name}_FILE: cannot read the file") as refused:
            Settings.from_env({**env, f"{name}_FILE": str(secret)})
        assert "s3cret" not in str(refused.value)
        with pytest.raises(ConfigError, match=r"cannot read the file \(FileNotFoundError\)"):
            Settings.from_env({**env, f"{name}_FILE": str(tmp_path / "absent")})

    def test_settings_are_frozen(self) -> None:
        s = Settings.from_env({})
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.group_id = "other"  # type: ignore[misc]


class TestUnreadableChangelogShare:
    """HER2_MAX_UNREADABLE_CHANGELOG_SHARE (issue 14 item 3): a share between 0 and 1."""

    def test_default_is_zero(self) -> None:
        assert Settings.from_env({}).max_unreadable_changelog_share == 0.0

    def test_a_share_is_read(self) -> None:
        env = {"HER2_MAX_UNREADABLE_CHANGELOG_SHARE": "0.25"}
        assert Settings.from_env(env).max_unreadable_changelog_share == 0.25

    @pytest.mark.parametrize("value", ["-0.1", "1.5", "nan", "ten", "5%"])
    def test_a_bad_share_names_its_variable(self, value: str) -> None:
        with pytest.raises(ConfigError, match="HER2_MAX_UNREADABLE_CHANGELOG_SHARE"):
            Settings.from_env({"HER2_MAX_UNREADABLE_CHANGELOG_SHARE": value})


class TestEvaluationSettings:
    """The two settings `evaluate` shares with the service: read by the same code, so the same
    values, defaults and errors."""

    def test_defaults_are_the_services(self) -> None:
        assert EvaluationSettings.from_env({}) == EvaluationSettings() == Settings().evaluation

    @pytest.mark.parametrize(
        ("env", "retention", "skew"),
        [
            pytest.param({}, None, dt.timedelta(hours=24), id="defaults"),
            pytest.param(
                {"HER2_HISTORY_RETENTION_DAYS": "30", "HER2_MAX_EVENT_TIME_SKEW_SECONDS": "3600"},
                dt.timedelta(days=30),
                dt.timedelta(hours=1),
                id="set",
            ),
            pytest.param(
                {"HER2_HISTORY_RETENTION_DAYS": "0"}, None, dt.timedelta(hours=24), id="keep"
            ),
            pytest.param(
                {"HER2_HISTORY_RETENTION_DAYS": " ", "HER2_MAX_EVENT_TIME_SKEW_SECONDS": ""},
                None,
                dt.timedelta(hours=24),
                id="blank-is-unset",
            ),
        ],
    )
    def test_read_as_the_service_reads_them(
        self, env: dict[str, str], retention: dt.timedelta | None, skew: dt.timedelta
    ) -> None:
        evaluation = EvaluationSettings.from_env(env)
        assert evaluation == Settings.from_env(env).evaluation
        assert (evaluation.history_retention, evaluation.event_time_skew) == (retention, skew)

    @pytest.mark.parametrize(
        "env",
        [
            pytest.param({"HER2_HISTORY_RETENTION_DAYS": "-5"}, id="retention-negative"),
            pytest.param({"HER2_HISTORY_RETENTION_DAYS": "ten"}, id="retention-not-a-number"),
            pytest.param({"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "0"}, id="skew-zero"),
            pytest.param({"HER2_MAX_EVENT_TIME_SKEW_SECONDS": "1d"}, id="skew-not-a-number"),
        ],
    )
    def test_a_bad_value_is_the_services_error(self, env: dict[str, str]) -> None:
        with pytest.raises(ConfigError) as service:
            Settings.from_env(env)
        with pytest.raises(ConfigError) as evaluate:
            EvaluationSettings.from_env(env)
        assert str(evaluate.value) == str(service.value)

    def test_only_its_own_variables_are_read(self) -> None:
        """An offline run needs no Kafka settings: a bad one is not its concern."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": "nohost", "HER2_HISTORY_RETENTION_DAYS": "30"}
        assert EvaluationSettings.from_env(env).history_retention_days == 30
