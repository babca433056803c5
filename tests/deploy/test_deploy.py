"""Static checks of deploy/: Kubernetes manifests, compose, Prometheus rules, Grafana dashboard.

Core Kubernetes kinds are validated offline against the JSON schemas that the
`kubernetes-validate` package ships (strict mode: unknown fields fail). CRDs (PodMonitor,
PrometheusRule, ScaledObject, TriggerAuthentication) and the Kustomization are not in those
schemas; they are checked against the small structural schemas below plus explicit assertions.
The compose file is validated against the Compose Specification schema vendored by
`check-jsonschema`. Alert expressions are exercised with `promtool test rules` when the
Prometheus tools are installed.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from consumer.config import ENV_VARS
from consumer.ops.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "her2-consumer.json"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
KUBERNETES_VERSIONS = ("1.29", "1.33")  # oldest supported cluster we target, and a current one
INPUT_PARTITIONS = 6  # documented in configmap.yaml, scaledobject.yaml, compose.yaml, docs
POD_LABELS = {"app.kubernetes.io/name": "her2-consumer"}
CORE_KINDS = {
    "ConfigMap",
    "Service",
    "ServiceAccount",
    "StatefulSet",
    "Deployment",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
ENV_NAMES = {name for name, _, _ in ENV_VARS}
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool not installed (apt-get install prometheus)"


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) of every manifest under deploy/k8s."""
    return [
        (path.name, doc) for path in sorted(K8S.glob("*.yaml")) for doc in load_yaml_documents(path)
    ]


def manifest(kind: str, name: str = "her2-consumer") -> dict[str, Any]:
    """The one manifest of `kind` named `name`."""
    found = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def metric_names() -> set[str]:
    """Every sample name the service's Metrics container can expose."""
    registry = CollectorRegistry()
    Metrics(registry)
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "info": ("_info",),
    }
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]
    }


def service_metrics() -> set[str]:
    """The service's own metrics as the operations.md table names them: a counter's family name
    with the `_total` its samples carry (prometheus_client's collect() leaves it off the family),
    an info's with `_info`, gauges and histograms as they are. Not the process_* and python_*
    collectors' families, which the table does not list."""
    exposed = {"counter": "_total", "info": "_info"}
    return {
        family.name + exposed.get(family.type, "")
        for family in Metrics.on_new_registry().registry.collect()
        if not family.name.startswith(("process_", "python_"))
    }


def service_metric_kinds() -> dict[str, tuple[str, set[str]]]:
    """Each of service_metrics(): its type and label names (an info's from its one sample: its
    labels are values set at start-up, not declared)."""
    metrics = Metrics.on_new_registry()
    exposed = {"counter": "_total", "info": "_info"}
    declared = {
        metric._name: set(metric._labelnames)  # the declared labels: no public view of them
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }
    return {
        family.name + exposed.get(family.type, ""): (
            family.type,
            set(family.samples[0].labels) if family.type == "info" else declared[family.name],
        )
        for family in metrics.registry.collect()
        if not family.name.startswith(("process_", "python_"))
    }


SETTINGS_BEGIN = (
    "<!-- generated from ENV_VARS in consumer/config.py by `python3 tests/deploy/test_deploy.py`;"
    " a test fails while it is stale -->"
)
SETTINGS_END = "<!-- end of the generated settings table -->"
# variables of the registry launcher and the fault tests (deploy/registry/launcher.py,
# tests/integration/faults.py), not the service's
HARNESS_VARIABLES = frozenset(
    {"HER2_APICURIO_DIR", "HER2_FAULT_RESULTS", "HER2_REGISTRY_JAVA_HOME", "HER2_RUN_KNOWN_BUGS"}
)


def settings_table() -> str:
    """The settings table of docs/operations.md: every variable of ENV_VARS, in its order, with
    its default (blank = unset) and meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, meaning in ENV_VARS:
        shown = f"`{default}`" if default else "unset"
        cell = meaning.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{name}` | {shown} | {cell} |")
    return "\n".join(rows)


def documented_settings_table() -> str:
    """What docs/operations.md holds between the generated table's markers."""
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    assert SETTINGS_BEGIN in text, f"no generated settings table in {OPERATIONS_DOC}"
    return text.split(SETTINGS_BEGIN, 1)[1].split(SETTINGS_END, 1)[0].strip("\n")


def write_settings_table() -> None:
    """Rewrite the generated settings table of docs/operations.md from ENV_VARS."""
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    before, rest = text.split(SETTINGS_BEGIN, 1)
    after = rest.split(SETTINGS_END, 1)[1]
    table = f"{SETTINGS_BEGIN}\n{settings_table()}\n{SETTINGS_END}"
    OPERATIONS_DOC.write_text(before + table + after, encoding="utf-8")


def variables_named(text: str) -> set[str]:
    """The HER2_* and KAFKA_* variable names a text cites."""
    return set(re.findall(r"\b(?:HER2|KAFKA)_[A-Z0-9_]*[A-Z0-9]\b", text))


def metrics_table() -> list[str]:
    """The body rows of the metrics table of docs/operations.md."""
    lines = OPERATIONS_DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index("| metric | type | labels | meaning |") + 2  # past the separator
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def row_names(row: str) -> set[str]:
    """The metric names of a table row: the quoted names of its first cell."""
    return set(re.findall(r"`([^`]+)`", row.split("|")[1]))


def promql_metrics(expr: str) -> set[str]:
    """Names of her2_consumer_* series referenced by a PromQL expression."""
    return set(re.findall(r"\bher2_consumer_[a-z0-9_]+", expr))


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of deploy/prometheus/alerts.yaml."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_targets() -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


# -- minimal schemas of the custom resources -------------------------------------------------

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "namespace": {"type": "string"},
    },
    "additionalProperties": False,
}
_DURATION = {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d|w|y))+$"}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array"}},
    "additionalProperties": False,
}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # monitoring.coreos.com/v1 PodMonitor (prometheus-operator API reference)
    "PodMonitor": _resource(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": _SELECTOR,
                "namespaceSelector": {"type": "object"},
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
    # monitoring.coreos.com/v1 PrometheusRule
    "PrometheusRule": _resource(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": _DURATION,
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    ),
    # keda.sh/v1alpha1 ScaledObject (KEDA reference; trigger metadata values are strings)
    "ScaledObject": _resource(
        "keda.sh/v1alpha1",
        "ScaledObject",
        {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {"type": "object"},
                            },
                            "additionalProperties": False,
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": _STRING_MAP,
                            "metricType": {"enum": ["AverageValue", "Value"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                                "additionalProperties": False,
                            },
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
    # keda.sh/v1alpha1 TriggerAuthentication
    "TriggerAuthentication": _resource(
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        {
            "type": "object",
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    ),
}


class TestKubernetesManifests:
    """deploy/k8s: schema validity and the operational choices the issue asks for."""

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    @pytest.mark.parametrize(
        ("filename", "doc"),
        [
            pytest.param(f, d, id=f"{f}:{d['kind']}")
            for f, d in manifests()
            if d["kind"] in CORE_KINDS
        ],
    )
    def test_core_kinds_validate_against_kubernetes_schemas(
        self, filename: str, doc: dict[str, Any], version: str
    ) -> None:
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{filename} {doc['kind']}: {path}: {exc.message}")

    def test_the_kubernetes_validator_catches_an_unknown_field(self) -> None:
        # Guards against a validator that passes everything (e.g. a missing schema folder).
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        broken = json.loads(json.dumps(manifest("StatefulSet")))
        broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)

    @pytest.mark.parametrize(
        ("filename", "doc"),
        [
            pytest.param(f, d, id=f"{f}:{d['kind']}")
            for f, d in manifests()
            if d["kind"] in CRD_SCHEMAS
        ],
    )
    def test_custom_resources_match_their_minimal_schema(
        self, filename: str, doc: dict[str, Any]
    ) -> None:
        # Not in kubernetes-validate's core schemas: checked against CRD_SCHEMAS instead.
        errors = sorted(
            jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]]).iter_errors(doc),
            key=lambda e: list(e.path),
        )
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]

    def test_every_manifest_kind_is_checked(self) -> None:
        kinds = {doc["kind"] for _, doc in manifests()}
        unchecked = kinds - CORE_KINDS - set(CRD_SCHEMAS) - {"Kustomization"}
        assert not unchecked

    def test_kustomization_lists_every_manifest(self) -> None:
        [kustomization] = [d for _, d in manifests() if d["kind"] == "Kustomization"]
        listed = set(kustomization["resources"])
        files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == files

    def test_statefulset_uses_static_membership(self) -> None:
        pod = manifest("StatefulSet")["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["HER2_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        service_name = manifest("Service")["metadata"]["name"]
        assert manifest("StatefulSet")["spec"]["serviceName"] == service_name

    def test_probes_are_wired_to_health_endpoints(self) -> None:
        container = manifest("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        config = manifest("ConfigMap")["data"]
        assert ports["http"] == int(config["HER2_HTTP_PORT"])

    def test_restricted_security_context(self) -> None:
        pod = manifest("StatefulSet")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert "add" not in security["capabilities"]
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False

    def test_resources_and_grace_period(self) -> None:
        pod = manifest("StatefulSet")["spec"]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert set(resources) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])
        assert pod["terminationGracePeriodSeconds"] >= 30

    def test_the_state_dir_is_its_own_disk_backed_volume(self) -> None:
        """HER2_STATE_DIR (the disk history store) is mounted from an emptyDir of its own, on
        disk: tmpfs pages count against the memory limit, so a Memory medium would move the
        history's memory instead of saving it. /tmp stays a small tmpfs; the root is read-only."""
        pod = manifest("StatefulSet")["spec"]["template"]["spec"]
        config = manifest("ConfigMap")["data"]
        assert config["HER2_HISTORY_STORE"] == "disk"
        state_dir = config["HER2_STATE_DIR"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        volume = volumes[mounts[state_dir]]
        assert "medium" not in volume["emptyDir"]
        assert mounts["/tmp"] != mounts[state_dir]  # noqa: S108 - reads the manifest
        assert not state_dir.startswith("/tmp/")  # noqa: S108 - reads the manifest
        limit = volume["emptyDir"]["sizeLimit"]
        gib = int(limit.removesuffix("Gi"))
        assert gib * 2**30 >= 500_000 * 4096, "room for ~500,000 patients of ~4 KB"
        # the pod's ephemeral-storage limit (policies ask for one) leaves the state volume room
        container = manifest("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
        storage = container["resources"]["limits"]["ephemeral-storage"]
        assert int(storage.removesuffix("Gi")) > gib
        assert "ephemeral-storage" in container["resources"]["requests"]

    def test_configmap_holds_only_known_non_secret_settings(self) -> None:
        data = manifest("ConfigMap")["data"]
        assert set(data) <= ENV_NAMES, set(data) - ENV_NAMES
        assert not {"KAFKA_SASL_PASSWORD", "KAFKA_SASL_USERNAME"} & set(data)
        assert all(isinstance(value, str) for value in data.values())

    def test_sasl_password_comes_from_a_secret_file(self) -> None:
        """A mounted file of the Secret (KAFKA_SASL_PASSWORD_FILE), never a variable's value
        (security audit: CIS Kubernetes 5.4.1 prefers files)."""
        pod = manifest("StatefulSet")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert "KAFKA_SASL_PASSWORD" not in env
        assert set(env) <= ENV_NAMES
        path = Path(env["KAFKA_SASL_PASSWORD_FILE"]["value"])
        cafile = manifest("ConfigMap")["data"]["KAFKA_SSL_CAFILE"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert str(Path(cafile).parent) in mounts
        volume = {v["name"]: v for v in pod["volumes"]}[mounts[str(path.parent)]]
        items = {i["path"]: i for i in volume["secret"]["items"]}
        assert volume["secret"]["secretName"] == "her2-consumer-kafka"
        assert items[path.name]["key"] == "password"
        # readable by the pod's group only (fsGroup), not by every user
        assert items[path.name]["mode"] & 0o007 == 0
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]

    def test_pdb_and_podmonitor_select_the_pods(self) -> None:
        template = manifest("StatefulSet")["spec"]["template"]
        labels = template["metadata"]["labels"]
        for kind in ("PodDisruptionBudget", "PodMonitor"):
            selector = manifest(kind)["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), kind
        assert manifest("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
        endpoint = manifest("PodMonitor")["spec"]["podMetricsEndpoints"][0]
        ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
        # The rules and the dashboard select job="her2-consumer".
        assert labels[manifest("PodMonitor")["spec"]["jobLabel"]] == "her2-consumer"

    def test_networkpolicy_admits_only_prometheus_to_the_http_port(self) -> None:
        policy = manifest("NetworkPolicy")["spec"]
        assert policy["podSelector"]["matchLabels"] == POD_LABELS
        assert set(policy["policyTypes"]) == {"Ingress", "Egress"}  # both directions isolated
        [rule] = policy["ingress"]
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        pod_ports = manifest("StatefulSet")["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in pod_ports
        [source] = rule["from"]
        namespace = source["namespaceSelector"]["matchLabels"]
        assert namespace == {"kubernetes.io/metadata.name": "monitoring"}
        assert "ipBlock" not in source
        # every "from" names a namespace: an empty or pod-only peer would admit more
        for peer in rule["from"]:
            assert peer.get("namespaceSelector", {}).get("matchLabels")

    def test_networkpolicy_egress_reaches_dns_kafka_and_the_registry_only(self) -> None:
        egress = manifest("NetworkPolicy")["spec"]["egress"]
        allowed = {
            (
                peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                port["port"],
                port["protocol"],
            )
            for rule in egress
            for peer in rule["to"]
            for port in rule["ports"]
        }
        bootstrap = manifest("ConfigMap")["data"]["KAFKA_BOOTSTRAP_SERVERS"]
        host, _, kafka_port = bootstrap.partition(",")[0].rpartition(":")
        kafka_namespace = host.split(".")[1]  # <service>.<namespace>.svc
        assert allowed == {
            ("kube-system", 53, "UDP"),
            ("kube-system", 53, "TCP"),
            (kafka_namespace, int(kafka_port), "TCP"),
            ("schema-registry", 8081, "TCP"),
        }
        for rule in egress:
            assert rule["ports"], "an egress rule without ports opens every port"
            assert all("ipBlock" not in peer for peer in rule["to"])

    def test_scaledobject_scales_the_statefulset_on_lag(self) -> None:
        scaled = manifest("ScaledObject")["spec"]
        config = manifest("ConfigMap")["data"]
        assert scaled["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": "her2-consumer",
        }
        assert scaled["maxReplicaCount"] == INPUT_PARTITIONS
        assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
        [trigger] = scaled["triggers"]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert metadata["consumerGroup"] == config["HER2_GROUP_ID"]
        assert metadata["topic"] == config["HER2_INPUT_TOPIC"]
        assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
        assert int(metadata["lagThreshold"]) > 0
        assert metadata["allowIdleConsumers"] == "false"
        auth = manifest("TriggerAuthentication", trigger["authenticationRef"]["name"])
        params = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        assert {"username", "password", "ca"} <= params

    def test_prometheusrule_matches_alerts_file(self) -> None:
        rule = manifest("PrometheusRule")
        assert rule["spec"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
        check = subprocess.run(  # noqa: S603 - fixed argv
            [sys.executable, str(DEPLOY / "prometheus" / "sync_prometheusrule.py"), "--check"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr


class TestCompose:
    """deploy/compose.yaml parses, follows the Compose Specification, has the expected stack."""

    @pytest.fixture
    def compose(self) -> dict[str, Any]:
        [doc] = load_yaml_documents(DEPLOY / "compose.yaml")
        return doc

    def test_matches_the_compose_specification(self, compose: dict[str, Any]) -> None:
        pytest.importorskip("check_jsonschema")
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
        schema = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(compose))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]

    def test_expected_services(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        assert {"kafka", "kafka-init", "consumer", "prometheus", "grafana"} <= set(services)
        assert services["kafka"]["image"].startswith("apache/kafka:")
        assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert services["prometheus"]["image"].startswith("prom/prometheus:")
        assert services["grafana"]["image"].startswith("grafana/grafana:")

    def test_the_registry_is_apicurio_and_the_consumer_uses_its_confluent_api(
        self, compose: dict[str, Any]
    ) -> None:
        services = compose["services"]
        assert services["schema-registry"]["image"].startswith("apicurio/apicurio-registry:")
        assert "3.3.3" in services["schema-registry"]["image"]  # as the integration tests
        for name in ("consumer", "demo"):
            url = services[name]["environment"]["HER2_SCHEMA_REGISTRY_URL"]
            assert url == "http://schema-registry:8080/apis/ccompat/v7", name
        assert "schema-registry" in services["consumer"]["depends_on"]

    def test_consumer_is_built_from_the_dockerfile(self, compose: dict[str, Any]) -> None:
        consumer = compose["services"]["consumer"]
        context = (DEPLOY / consumer["build"]["context"]).resolve()
        assert context == REPO
        assert (context / consumer["build"]["dockerfile"]).is_file()
        assert set(consumer["environment"]) <= ENV_NAMES
        assert consumer["read_only"] is True
        assert consumer["cap_drop"] == ["ALL"]

    def test_the_state_dir_is_a_volume_not_the_tmpfs(self, compose: dict[str, Any]) -> None:
        consumer = compose["services"]["consumer"]
        state_dir = consumer["environment"]["HER2_STATE_DIR"]
        assert consumer["environment"]["HER2_HISTORY_STORE"] == "disk"
        mounts = dict(reversed(v.split(":")[:2]) for v in consumer["volumes"])
        assert mounts[state_dir] in compose["volumes"]  # a named volume
        assert all(not t.startswith(state_dir) for t in consumer.get("tmpfs", []))
        dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
        assert f"-o 10001 -g 10001 -m 0700 {state_dir}" in dockerfile  # the volume's owner

    def test_input_topic_has_the_documented_partitions(self, compose: dict[str, Any]) -> None:
        command = " ".join(compose["services"]["kafka-init"]["command"])
        assert "--topic lab.pathology.results.v1" in command
        assert f"--partitions {INPUT_PARTITIONS}" in command

    def test_mounted_files_exist(self, compose: dict[str, Any]) -> None:
        for name, service in compose["services"].items():
            for volume in service.get("volumes", []):
                source = volume.split(":", 1)[0]
                if source.startswith("."):
                    assert (DEPLOY / source).exists(), f"{name}: {source}"

    def test_prometheus_scrapes_the_consumer(self, compose: dict[str, Any]) -> None:
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text("utf-8"))
        [job] = [j for j in config["scrape_configs"] if j["job_name"] == "her2-consumer"]
        port = compose["services"]["consumer"]["environment"]["HER2_HTTP_PORT"]
        assert job["static_configs"][0]["targets"] == [f"consumer:{port}"]
        assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]


def _run_commands(stage: list[str]) -> list[str]:
    """The shell commands of a stage's RUN instructions: continuation lines joined, RUN and its
    --flags (--mount=...) dropped."""
    instructions = "\n".join(stage).replace("\\\n", " ").splitlines()
    commands = []
    for instruction in instructions:
        words = instruction.split(" ")
        if words[0].upper() == "RUN":
            words = words[1:]
            while words and (not words[0] or words[0].startswith("--")):
                words.pop(0)
            commands.append(" ".join(words))
    return commands


# a command of the Dockerfile's RUN instructions, standing in for it: one line per call, each
# argument followed by a tab
STUB = """#!/bin/sh
printf '%s\\t' "$(basename "$0")" "$@" >> "$STUB_LOG"
printf '\\n' >> "$STUB_LOG"
"""


class TestDockerfile:
    """deploy/Dockerfile: multi-stage, slim runtime with only the wheel, non-root."""

    @pytest.fixture
    def stages(self) -> list[list[str]]:
        lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
        instructions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        stages: list[list[str]] = []
        for line in instructions:
            if line.upper().startswith("FROM "):
                stages.append([])
            if stages:
                stages[-1].append(line)
        return stages

    def test_multi_stage_with_slim_runtime(self, stages: list[list[str]]) -> None:
        assert len(stages) == 2
        text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
        assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
        assert stages[0][0].endswith("AS builder")

    def test_runtime_stage_installs_only_wheels_and_runs_as_non_root(
        self, stages: list[list[str]]
    ) -> None:
        runtime = "\n".join(stages[-1])
        assert "--no-index" in runtime
        assert "from=builder" in runtime
        assert not re.search(r"apt-get|gcc|build-essential|COPY \.", runtime)
        [user] = [line for line in stages[-1] if line.startswith("USER ")]
        assert user.split()[1].split(":")[0] not in {"0", "root"}
        assert 'ENTRYPOINT ["her2-consumer"]' in runtime

    def test_extras_is_a_build_argument_of_both_stages(self, stages: list[list[str]]) -> None:
        """`--build-arg EXTRAS=confluent` (docs/operations.md: HER2_KAFKA_CLIENT=confluent needs
        the image built with the `confluent` extra). An ARG is scoped to the stage that declares
        it, so each stage declares it, and each stage's pip command uses it."""
        for stage in stages:
            assert 'ARG EXTRAS=""' in stage, stage[0]
        builder, runtime = ("\n".join(_run_commands(stage)) for stage in stages)
        assert '"$1${EXTRAS:+[$EXTRAS]}"' in builder
        assert '"her2-alert-consumer${EXTRAS:+[$EXTRAS]}"' in runtime

    @pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
    @pytest.mark.parametrize(
        ("extras", "suffix"),
        [("", ""), ("confluent", "[confluent]"), ("confluent,bench", "[confluent,bench]")],
    )
    def test_the_pip_commands_ask_for_the_extras(
        self, stages: list[list[str]], tmp_path: Path, extras: str, suffix: str
    ) -> None:
        """No Docker engine in the tests: each stage's pip RUN command runs in sh as the image
        would (ARGs are environment variables of RUN), with /wheels a folder here and pip a stub
        that records its arguments."""
        wheels, log = tmp_path / "wheels", tmp_path / "pip.log"
        wheels.mkdir()
        project = wheels / "her2_alert_consumer-0.1.0-py3-none-any.whl"
        project.touch()
        stubs = tmp_path / "bin"
        stubs.mkdir()
        for name in ("pip", "her2-consumer"):
            (stubs / name).write_text(STUB, encoding="utf-8")
            (stubs / name).chmod(0o755)
        calls = []
        for stage in stages:
            for command in _run_commands(stage):
                if "pip " not in command:
                    continue
                log.unlink(missing_ok=True)
                subprocess.run(  # noqa: S603 - the Dockerfile's own command, stubbed
                    ["sh", "-c", command.replace("/wheels", str(wheels))],  # noqa: S607
                    cwd=tmp_path,
                    env={"PATH": f"{stubs}:/usr/bin:/bin", "EXTRAS": extras, "STUB_LOG": str(log)},
                    check=True,
                    timeout=30,
                )
                calls.append([line.split("\t")[:-1] for line in log.read_text().splitlines()])
        [builder, runtime] = calls
        pinned = ["-c", "deploy/constraints.txt"]
        assert builder[-1] == [
            "pip",
            "wheel",
            "--wheel-dir",
            str(wheels),
            *pinned,
            f"{project}{suffix}",
        ]
        assert runtime[0][-1] == f"her2-alert-consumer{suffix}"
        assert runtime[0][:2] == ["pip", "install"]

    def test_the_image_pins_every_dependency_within_pyprojects_ranges(self) -> None:
        """Security audit: without pins an image build took whatever PyPI had that day
        (structlog and prometheus-client have no upper bound). Every dependency of the package
        and of its confluent extra is pinned exactly, inside pyproject's range."""
        from packaging.requirements import Requirement  # noqa: PLC0415

        pins = {}
        for line in (DEPLOY / "constraints.txt").read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, version = line.partition("==")
                pins[name.lower()] = version
        project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        wanted = [*project["dependencies"], *project["optional-dependencies"]["confluent"]]
        for text in wanted:
            requirement = Requirement(text)
            name = requirement.name.lower()
            assert name in pins, f"{name} is not pinned in deploy/constraints.txt"
            assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
            for extra in requirement.extras:  # kafka-python[crc32c]
                assert extra.lower() in pins, f"{extra} is not pinned"

    def test_dockerignore_keeps_the_context_small(self) -> None:
        ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        assert ignore[ignore.index("*")] == "*"  # everything excluded, then re-included
        copied = set(re.findall(r"^COPY (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M))
        for source in copied - {"--from=builder"}:
            assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, source


class TestAlertRules:
    """deploy/prometheus/alerts.yaml: complete annotations, real metric names, working exprs."""

    @pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
    def test_rule_has_severity_summary_description_and_runbook(self, rule: dict[str, Any]) -> None:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook", "runbook_url"} <= set(annotations)
        assert annotations["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}"

    @pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
    def test_rule_uses_existing_metrics(self, rule: dict[str, Any]) -> None:
        assert promql_metrics(rule["expr"]) <= metric_names()

    def test_required_alerts_exist(self) -> None:
        names = {rule["alert"] for rule in alert_rules()}
        assert {
            "Her2ConsumerLagGrowing",
            "Her2ConsumerPartitionStalled",
            "Her2ConsumerDeadLetterRate",
            "Her2ConsumerRebalanceStorm",
            "Her2ConsumerNotConsuming",
            "Her2ConsumerDown",
            "Her2ConsumerAbsent",
        } <= names

    def test_every_alert_has_a_runbook_section(self) -> None:
        # every rule's runbook_url points into docs/operations.md: a missing runbook fails
        assert OPERATIONS_DOC.is_file(), f"{OPERATIONS_DOC} (the alerts' runbook) is missing"
        headings = {
            re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in OPERATIONS_DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")
        }
        for rule in alert_rules():
            assert rule["alert"].lower() in headings, rule["alert"]

    @pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
    def test_promtool_check_rules(self) -> None:
        result = subprocess.run(  # noqa: S603 - fixed argv
            [str(PROMTOOL), "check", "rules", str(ALERTS)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_the_checked_in_alerts_test_yaml_is_generated_from_the_scenarios(self) -> None:
        """deploy/prometheus/alerts.test.yaml (what alerts.yaml tells operators to run) is
        ALERT_SCENARIOS below, with the rules' current expressions."""
        assert ALERTS_TEST.is_file(), f"missing; write it with: python3 {Path(__file__)}"
        checked_in = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
        assert checked_in == alerts_test_spec(), (
            f"{ALERTS_TEST} is stale; rewrite it with: python3 tests/deploy/test_deploy.py"
        )

    @pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
    def test_alert_expressions_fire_in_their_scenarios(self) -> None:
        """Each rule's expr against synthetic series: fires (with these labels) or stays quiet
        (`promtool test rules deploy/prometheus/alerts.test.yaml`, as operators run it)."""
        result = subprocess.run(  # noqa: S603 - fixed argv
            [str(PROMTOOL), "test", "rules", str(ALERTS_TEST)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def alerts_test_spec() -> dict[str, Any]:
    """The promtool unit-test file of the alert rules, from ALERT_SCENARIOS."""
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    tests = []
    for name, series, eval_time, expected in ALERT_SCENARIOS:
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [
                    {
                        "expr": f"({exprs[name]}) * 0 + 1",  # keep labels, ignore the value
                        "eval_time": eval_time,
                        "exp_samples": [{"labels": labels, "value": 1} for labels in expected],
                    }
                ],
            }
        )
    # rule_files is relative to the test file (promtool resolves it so)
    return {"rule_files": [ALERTS.name], "evaluation_interval": "1m", "tests": tests}


def write_alerts_test() -> None:
    """Write deploy/prometheus/alerts.test.yaml from the scenarios."""
    header = (
        "# Generated from ALERT_SCENARIOS in tests/deploy/test_deploy.py (rewrite it with\n"
        "# `python3 tests/deploy/test_deploy.py`; a test fails while it is stale).\n"
        "# Run: promtool test rules deploy/prometheus/alerts.test.yaml\n"
    )
    ALERTS_TEST.write_text(
        header + yaml.safe_dump(alerts_test_spec(), sort_keys=False, width=100),
        encoding="utf-8",
    )


_JOB = 'job="her2-consumer"'
_TP0 = f'{_JOB}, topic="in", partition="0"'


def _build(instance: str, version: str, ruleset: str) -> str:
    """A her2_consumer_build_info series of one instance."""
    labels = f'instance="{instance}", version="{version}", ruleset_version="{ruleset}"'
    return f"her2_consumer_build_info{{{_JOB}, {labels}}}"


# (alert, [(series, values)], eval time, expected label sets of the expression's result)
# a table, kept as written: one scenario per entry, its series and values aligned
# fmt: off
ALERT_SCENARIOS: list[tuple[str, list[tuple[str, str]], str, list[str]]] = [
    ("Her2ConsumerDown", [(f'up{{{_JOB}, instance="a"}}', "0x10")], "6m",
     [f'{{{_JOB}, instance="a"}}']),
    ("Her2ConsumerDown", [(f'up{{{_JOB}, instance="a"}}', "1x10")], "6m", []),
    ("Her2ConsumerAbsent", [('up{job="other"}', "1x10")], "6m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerAbsent", [(f'up{{{_JOB}, instance="a"}}', "0x10"),
                            (f'up{{{_JOB}, instance="b"}}', "0x10")], "6m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerAbsent", [(f'up{{{_JOB}, instance="a"}}', "0x10"),
                            (f'up{{{_JOB}, instance="b"}}', "1x10")], "6m", []),
    ("Her2ConsumerNoPartitionsAssigned",
     [(f'her2_consumer_assigned_partitions{{{_JOB}, instance="a"}}', "0x20")], "15m",
     [f"{{{_JOB}}}"]),
    # lag, and the events counter flat: nothing is being consumed
    ("Her2ConsumerNotConsuming",
     [(f"her2_consumer_lag_records{{{_TP0}}}", "10x20"),
      (f'her2_consumer_events_total{{{_JOB}, outcome="processed"}}', "100x20")], "15m",
     [f"{{{_JOB}}}"]),
    # lag but no events series at all (counter never incremented)
    ("Her2ConsumerNotConsuming", [(f"her2_consumer_lag_records{{{_TP0}}}", "10x20")], "15m",
     [f"{{{_JOB}}}"]),
    ("Her2ConsumerNotConsuming",
     [(f"her2_consumer_lag_records{{{_TP0}}}", "10x20"),
      (f'her2_consumer_events_total{{{_JOB}, outcome="processed"}}', "0+50x20")], "15m", []),
    ("Her2ConsumerNotConsuming",
     [(f"her2_consumer_lag_records{{{_TP0}}}", "0x20"),
      (f'her2_consumer_events_total{{{_JOB}, outcome="processed"}}', "100x20")], "15m", []),
    # no progress for 20 minutes on a partition with lag (time() is 0 at the start)
    ("Her2ConsumerPartitionStalled",
     [(f"her2_consumer_last_progress_timestamp_seconds{{{_TP0}}}", "0x20"),
      (f"her2_consumer_lag_records{{{_TP0}}}", "5x20")], "20m", [f"{{{_TP0}}}"]),
    ("Her2ConsumerPartitionStalled",
     [(f"her2_consumer_last_progress_timestamp_seconds{{{_TP0}}}", "0x20"),
      (f"her2_consumer_lag_records{{{_TP0}}}", "0x20")], "20m", []),
    ("Her2ConsumerPartitionStalled",
     [(f"her2_consumer_last_progress_timestamp_seconds{{{_TP0}}}", "0+60x20"),
      (f"her2_consumer_lag_records{{{_TP0}}}", "5x20")], "20m", []),
    # a partition owned but without a position (F1; the rule waits 10 minutes), then found
    ("Her2ConsumerPartitionPositionUnknown",
     [(f"her2_consumer_position_unknown{{{_TP0}}}", "1x20")], "15m", [f"{{{_TP0}}}"]),
    ("Her2ConsumerPartitionPositionUnknown",
     [(f"her2_consumer_position_unknown{{{_TP0}}}", "0x20")], "15m", []),
    ("Her2ConsumerPartitionPositionUnknown",
     [(f"her2_consumer_position_unknown{{{_TP0}}}", "1x10 0x10")], "15m", []),
    # a partition held back by an unreadable changelog, then released by a restart
    ("Her2ConsumerPartitionHeldBack",
     [(f'her2_consumer_held_back_partitions{{{_JOB}, instance="a"}}', "1x10")], "5m",
     [f'{{{_JOB}, instance="a"}}']),
    ("Her2ConsumerPartitionHeldBack",
     [(f'her2_consumer_held_back_partitions{{{_JOB}, instance="a"}}', "0x10")], "5m", []),
    ("Her2ConsumerPartitionHeldBack",
     [(f'her2_consumer_held_back_partitions{{{_JOB}, instance="a"}}', "1x2 0x8")], "5m", []),
    # the same partition reported by two pods around a rebalance counts once
    ("Her2ConsumerLagGrowing",
     [(f'her2_consumer_lag_records{{{_TP0}, instance="a"}}', "500+100x20"),
      (f'her2_consumer_lag_records{{{_TP0}, instance="b"}}', "500+100x20")], "20m",
     [f'{{{_JOB}, topic="in"}}']),
    ("Her2ConsumerLagGrowing",
     [(f"her2_consumer_lag_records{{{_TP0}}}", "5000x20")], "20m", []),
    ("Her2ConsumerLagGrowing",
     [(f"her2_consumer_lag_records{{{_TP0}}}", "0+10x20")], "20m", []),
    ("Her2ConsumerDeadLetterRate",
     [(f'her2_consumer_events_total{{{_JOB}, outcome="processed"}}', "0+90x20"),
      (f'her2_consumer_events_total{{{_JOB}, outcome="dead_lettered"}}', "0+10x20"),
      (f'her2_consumer_dlq_records_total{{{_JOB}, stage="decode", reason="avro-decode"}}',
       "0+10x20")], "15m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerDeadLetterRate",
     [(f'her2_consumer_events_total{{{_JOB}, outcome="processed"}}', "0+990x20"),
      (f'her2_consumer_events_total{{{_JOB}, outcome="dead_lettered"}}', "0+10x20"),
      (f'her2_consumer_dlq_records_total{{{_JOB}, stage="decode", reason="avro-decode"}}',
       "0+10x20")], "15m", []),
    ("Her2ConsumerProcessingErrors",
     [(f'her2_consumer_dlq_records_total{{{_JOB}, stage="process", reason="processing-error"}}',
       "0 0 0 1 1 1")], "5m", [f'{{{_JOB}, reason="processing-error"}}']),
    ("Her2ConsumerProcessingErrors",
     [(f'her2_consumer_dlq_records_total{{{_JOB}, stage="decode", reason="avro-decode"}}',
       "0 1 2 3 4 5")], "5m", []),
    # the first misrouted record fires it: the series is exported as 0 from start-up
    ("Her2ConsumerMisroutedRecords",
     [(f'her2_consumer_dlq_records_total{{{_JOB}, stage="validate", reason="misrouted"}}',
       "0 0 0 1 1 1")], "5m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerMisroutedRecords",
     [(f'her2_consumer_dlq_records_total{{{_JOB}, stage="validate", reason="misrouted"}}',
       "0x10"),
      (f'her2_consumer_dlq_records_total{{{_JOB}, stage="validate", reason="schema-validation"}}',
       "0+1x10")], "5m", []),
    ("Her2ConsumerRebalanceStorm",
     [(f'her2_consumer_rebalances_total{{{_JOB}, instance="a", kind="assigned"}}', "0+1x20"),
      (f'her2_consumer_rebalances_total{{{_JOB}, instance="a", kind="revoked"}}', "0+1x20")],
     "20m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerRebalanceStorm",
     [(f'her2_consumer_rebalances_total{{{_JOB}, instance="a", kind="assigned"}}', "0+0.1x20")],
     "20m", []),
    ("Her2ConsumerCommitFailures",
     [(f'her2_consumer_commit_failures_total{{{_JOB}, instance="a"}}', "0+1x20")], "20m",
     [f"{{{_JOB}}}"]),
    ("Her2ConsumerEventAgeHigh",
     [(f'her2_consumer_event_age_seconds_bucket{{{_JOB}, le="60"}}', "0x30"),
      (f'her2_consumer_event_age_seconds_bucket{{{_JOB}, le="3600"}}', "0+10x30"),
      (f'her2_consumer_event_age_seconds_bucket{{{_JOB}, le="+Inf"}}', "0+10x30")], "20m",
     [f"{{{_JOB}}}"]),
    ("Her2ConsumerEventAgeHigh",
     [(f'her2_consumer_event_age_seconds_bucket{{{_JOB}, le="60"}}', "0+10x30"),
      (f'her2_consumer_event_age_seconds_bucket{{{_JOB}, le="3600"}}', "0+10x30"),
      (f'her2_consumer_event_age_seconds_bucket{{{_JOB}, le="+Inf"}}', "0+10x30")], "20m", []),
    # outputs refused for good: their own alert, not a processing error
    ("Her2ConsumerOutputsRefused",
     [(f'her2_consumer_dlq_records_total{{{_JOB}, stage="process", reason="output-refused"}}',
       "0 0 0 1 1 1")], "5m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerOutputsRefused",
     [(f'her2_consumer_dlq_records_total{{{_JOB}, stage="process", reason="processing-error"}}',
       "0 0 0 1 1 1")], "5m", []),
    ("Her2ConsumerProcessingErrors",
     [(f'her2_consumer_dlq_records_total{{{_JOB}, stage="process", reason="output-refused"}}',
       "0 0 0 1 1 1")], "5m", []),
    # the first unreadable changelog record fires it (the counter is exported as 0)
    ("Her2ConsumerHistoryUnreadable",
     [(f'her2_consumer_history_unreadable_records_total{{{_JOB}, instance="a"}}',
       "0 0 0 2 2 2")], "5m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerHistoryUnreadable",
     [(f'her2_consumer_history_unreadable_records_total{{{_JOB}, instance="a"}}', "0x30")],
     "20m", []),
    # one unwritable state record fires it (the counter is exported as 0)
    ("Her2ConsumerStateUnwritable",
     [(f'her2_consumer_history_unwritable_records_total{{{_JOB}, instance="a"}}',
       "0 0 0 1 1 1")], "5m", [f"{{{_JOB}}}"]),
    ("Her2ConsumerStateUnwritable",
     [(f'her2_consumer_history_unwritable_records_total{{{_JOB}, instance="a"}}', "0x30")],
     "20m", []),
    # the threshold is each instance's HER2_CLOCK_SKEW_TOLERANCE_SECONDS (its gauge): a host
    # clock 2 hours fast (or slow) fires it at the default 60; 30 s off and an unmeasured 0 do
    # not; 120 s off fires at 60 and not at 300; a check turned off (0) never fires
    ("Her2ConsumerClockSkew",
     [(f'her2_consumer_clock_offset_seconds{{{_JOB}, instance="a"}}', "7200x10"),
      (f'her2_consumer_clock_skew_tolerance_seconds{{{_JOB}, instance="a"}}', "60x10")],
     "5m", [f'{{{_JOB}, instance="a"}}']),
    ("Her2ConsumerClockSkew",
     [(f'her2_consumer_clock_offset_seconds{{{_JOB}, instance="a"}}', "-7200x10"),
      (f'her2_consumer_clock_skew_tolerance_seconds{{{_JOB}, instance="a"}}', "60x10")],
     "5m", [f'{{{_JOB}, instance="a"}}']),
    ("Her2ConsumerClockSkew",
     [(f'her2_consumer_clock_offset_seconds{{{_JOB}, instance="a"}}', "-30x10"),
      (f'her2_consumer_clock_skew_tolerance_seconds{{{_JOB}, instance="a"}}', "60x10"),
      (f'her2_consumer_clock_offset_seconds{{{_JOB}, instance="b"}}', "0x10"),
      (f'her2_consumer_clock_skew_tolerance_seconds{{{_JOB}, instance="b"}}', "60x10")],
     "5m", []),
    ("Her2ConsumerClockSkew",
     [(f'her2_consumer_clock_offset_seconds{{{_JOB}, instance="a"}}', "120x10"),
      (f'her2_consumer_clock_skew_tolerance_seconds{{{_JOB}, instance="a"}}', "60x10"),
      (f'her2_consumer_clock_offset_seconds{{{_JOB}, instance="b"}}', "120x10"),
      (f'her2_consumer_clock_skew_tolerance_seconds{{{_JOB}, instance="b"}}', "300x10")],
     "5m", [f'{{{_JOB}, instance="a"}}']),
    ("Her2ConsumerClockSkew",
     [(f'her2_consumer_clock_offset_seconds{{{_JOB}, instance="a"}}', "7200x10"),
      (f'her2_consumer_clock_skew_tolerance_seconds{{{_JOB}, instance="a"}}', "0x10")],
     "5m", []),
    # three restarts of one instance within 30 minutes (start times 100, 400, 700, 1000 s)
    ("Her2ConsumerRestarting",
     [(f'process_start_time_seconds{{{_JOB}, instance="a"}}', "100x5 400x5 700x5 1000x10"),
      (f'process_start_time_seconds{{{_JOB}, instance="b"}}', "100x25")],
     "25m", [f'{{{_JOB}, instance="a"}}']),
    # two restarts (a rollout, a drain) are not a crash loop
    ("Her2ConsumerRestarting",
     [(f'process_start_time_seconds{{{_JOB}, instance="a"}}', "100x5 400x5 700x15")],
     "25m", []),
    # three restarts, but spread over more than 30 minutes
    ("Her2ConsumerRestarting",
     [(f'process_start_time_seconds{{{_JOB}, instance="a"}}', "100x15 400x15 700x15 1000x15")],
     "55m", []),
    ("Her2ConsumerMixedRuleSets",
     [(_build("a", "1", "2026.12-4"), "1x40"), (_build("b", "1", "2026.12-3"), "1x40")],
     "35m", [f'{{{_JOB}}}']),
    # after a rollout: b back on the new rule set, one rule set again (promql_expr_test does not
    # run the rule's `for: 30m`; only the expression is checked)
    ("Her2ConsumerMixedRuleSets",
     [(_build("a", "1", "2026.12-4"), "1x40"), (_build("b", "1", "2026.12-3"), "1x10 _x30"),
      (_build("b", "2", "2026.12-4"), "_x10 1x30")],
     "35m", []),
    # two builds of one rule set (a code-only release) are not mixed rule sets
    ("Her2ConsumerMixedRuleSets",
     [(_build("a", "1", "2026.12-4"), "1x40"), (_build("b", "2", "2026.12-4"), "1x40")],
     "35m", []),
]
# fmt: on


def test_every_alert_has_a_firing_scenario() -> None:
    firing = {name for name, _, _, expected in ALERT_SCENARIOS if expected}
    assert firing == {rule["alert"] for rule in alert_rules()}


class TestGrafanaDashboard:
    """deploy/grafana: the dashboard parses, every panel queries Prometheus, provisioning agrees."""

    @pytest.fixture
    def dashboard(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        return loaded

    def test_every_panel_has_a_promql_expr(self, dashboard: dict[str, Any]) -> None:
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), panel["title"]
            for target in panel["targets"]:
                assert target["expr"].strip(), panel["title"]
                assert target["datasource"]["uid"] == "${datasource}"

    def test_panel_ids_are_unique(self, dashboard: dict[str, Any]) -> None:
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))

    def test_queries_use_existing_metrics(self) -> None:
        names = metric_names()
        for title, target in dashboard_targets():
            assert promql_metrics(target["expr"]) <= names, title

    def test_required_views_are_present(self) -> None:
        used = {
            metric for _, target in dashboard_targets() for metric in promql_metrics(target["expr"])
        }
        assert {
            "her2_consumer_events_total",
            "her2_consumer_lag_records",
            "her2_consumer_processing_seconds_bucket",
            "her2_consumer_alerts_total",
            "her2_consumer_dlq_records_total",
            "her2_consumer_rebalances_total",
            "her2_consumer_history_patients",
            "her2_consumer_history_restore_seconds_bucket",
            "her2_consumer_history_bytes",
            "her2_consumer_codec_fallbacks_total",
        } <= used
        quantiles = {
            q
            for _, target in dashboard_targets()
            for q in re.findall(r"histogram_quantile\((0\.\d+)", target["expr"])
        }
        assert {"0.5", "0.95", "0.99"} <= quantiles

    def test_provisioning_points_at_the_dashboard_and_datasource(self) -> None:
        grafana = DEPLOY / "grafana" / "provisioning"
        [provider] = yaml.safe_load((grafana / "dashboards" / "her2.yaml").read_text())["providers"]
        [datasource] = yaml.safe_load((grafana / "datasources" / "prometheus.yaml").read_text())[
            "datasources"
        ]
        assert datasource["type"] == "prometheus"
        compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
        mounts = dict(reversed(v.split(":")[:2]) for v in compose["services"]["grafana"]["volumes"])
        assert (DEPLOY / mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()


class TestMetricsTable:
    """docs/operations.md: the metrics table lists every metric the service registers, and only
    those (docs drifted from code once: two metrics went unlisted)."""

    def test_every_metric_has_a_row(self) -> None:
        rows = {name for row in metrics_table() for name in row_names(row)}
        missing = sorted(service_metrics() - rows)
        assert not missing, f"metrics without a row in docs/operations.md: {missing}"

    def test_each_row_gives_its_metrics_type_and_labels(self) -> None:
        """The type cell, and the label names of the labels cell (backticked, outside the
        parentheses that list their values)."""
        kinds = service_metric_kinds()
        wrong = []
        for row in metrics_table():
            _, kind, labels = (cell.strip() for cell in row.split("|")[1:4])
            named = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", labels)))
            wrong += [
                (name, kind, sorted(named), kinds[name][0], sorted(kinds[name][1]))
                for name in row_names(row)
                if name in kinds and (kinds[name][0], kinds[name][1]) != (kind, named)
            ]
        assert not wrong, f"(metric, table type, table labels, type, labels): {wrong}"

    def test_every_name_in_the_table_is_a_metric(self) -> None:
        """Row names and the names a row's text cites: no stale or misspelt ones."""
        table = metrics_table()
        rows = {name for row in table for name in row_names(row)}
        cited = {name for row in table for name in re.findall(r"\bher2_consumer_\w+", row)}
        stale = sorted((rows | cited) - service_metrics())
        assert not stale, (
            f"names in the docs/operations.md metrics table that are no metric: {stale}"
        )


class TestSettingsTable:
    """docs/operations.md lists every setting with its default, generated from ENV_VARS (the
    README's configuration table is a selection, and once pointed at the code for the rest)."""

    def test_the_table_is_generated_from_env_vars(self) -> None:
        assert documented_settings_table() == settings_table(), (
            "the settings table of docs/operations.md is stale; rewrite it with: "
            "python3 tests/deploy/test_deploy.py"
        )

    @pytest.mark.parametrize(
        "doc", ["README.md", "docs/operations.md", "docs/fault-report.md", "docs/benchmarks.md"]
    )
    def test_every_variable_a_doc_names_is_a_setting(self, doc: str) -> None:
        """No stale or misspelt variable names: each is declared, or the test harness's."""
        named = variables_named((REPO / doc).read_text(encoding="utf-8"))
        unknown = sorted(named - ENV_NAMES - HARNESS_VARIABLES)
        assert not unknown, f"variables named in {doc} that the service does not read: {unknown}"

    def test_the_readme_configuration_points_at_the_table(self) -> None:
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
        assert "docs/operations.md#settings" in section


if __name__ == "__main__":
    write_alerts_test()
    write_settings_table()
