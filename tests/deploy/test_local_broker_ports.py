"""The test broker's ports: every listener of one broker gets its own port.

A SASL_SSL listener whose port was picked on its own, and released before the launcher picked
the controller's, once got the same port as the controller: Kafka refused the configuration
and the three secure-broker tests errored. The listener's port is now one of the launcher's
``extra_ports``, picked together with the others while all their sockets are held.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

KAFKA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"


def load(name: str) -> ModuleType:
    """Load deploy/kafka/<name>.py by path, as the integration tests do."""
    module_name = f"her2_test_local_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, KAFKA_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def listener_ports(properties: dict[str, str]) -> dict[str, int]:
    """``{listener name: port}`` of a broker's ``listeners`` property."""
    entries = (item.split("://") for item in properties["listeners"].split(","))
    return {name: int(address.rsplit(":", 1)[1]) for name, address in entries}


def secure_broker(tmp_path: Path, *, same_port_every_time: bool = False) -> tuple[Any, Any]:
    """A LocalKafka and its SASL_SSL listener, ports chosen as at start (no broker started)."""
    launcher, secure = load("launcher"), load("secure")
    listener = secure.SecureListener(tmp_path / "tls", {"alice": "secret"})
    kafka = launcher.LocalKafka(
        tmp_path / "kafka",
        extra_ports=[secure.PORT_NAME],
        extra_properties=listener.extra_properties(),
    )
    kafka.work_dir.mkdir(parents=True)
    if same_port_every_time:  # what the OS may do to ports picked one at a time
        original = launcher.free_ports
        launcher.free_ports = lambda count: [original(1)[0]] * count
        try:
            kafka._choose_ports()
        finally:
            launcher.free_ports = original
    else:
        kafka._choose_ports()
    listener.bind(kafka.ports)
    return kafka, listener


def test_every_listener_of_the_secure_broker_has_its_own_port(tmp_path: Path) -> None:
    kafka, listener = secure_broker(tmp_path)
    ports = listener_ports(kafka.broker_properties())
    assert set(ports) == {"PLAINTEXT", "CONTROLLER", "SASL_SSL"}
    assert len(set(ports.values())) == 3, ports
    assert ports["SASL_SSL"] == listener.port == kafka.ports["sasl_ssl_port"]
    assert listener.bootstrap == f"127.0.0.1:{ports['SASL_SSL']}"
    advertised = kafka.broker_properties()["advertised.listeners"]
    assert f"SASL_SSL://127.0.0.1:{listener.port}" in advertised


def test_a_port_picked_twice_is_a_clear_launcher_error(tmp_path: Path) -> None:
    launcher = load("launcher")
    with pytest.raises(launcher.KafkaLauncherError, match="two listeners cannot share a port"):
        secure_broker(tmp_path, same_port_every_time=True)


def test_listeners_sharing_a_port_through_the_properties_are_refused(tmp_path: Path) -> None:
    launcher = load("launcher")
    kafka = launcher.LocalKafka(
        tmp_path,
        port=40001,
        controller_port=40002,
        extra_properties={
            "listeners": "PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port},"
            "SASL_SSL://{host}:{port}"
        },
    )
    with pytest.raises(launcher.KafkaLauncherError, match="two listeners cannot share a port"):
        kafka.broker_properties()


def test_an_unbound_listener_has_no_bootstrap(tmp_path: Path) -> None:
    listener = load("secure").SecureListener(tmp_path, {"alice": "secret"})
    with pytest.raises(RuntimeError, match="bind"):
        _ = listener.bootstrap
