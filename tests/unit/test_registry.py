"""Unit tests of consumer.avro.registry beyond test_codec's: schema references (as Apicurio's and
Confluent's Java serializers register them), TLS and basic auth, the error hook, the probe, and
the HER2_SCHEMA_REGISTRY_* settings. The registry is test_codec's in-test fake."""

from __future__ import annotations

import base64
import io
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
import trustme
from prometheus_client import CollectorRegistry
from test_codec import PREFIX, FakeRegistry

from consumer.avro.codec import Decoder
from consumer.avro.registry import ERROR_KINDS, OPERATIONS, RegistryAccess, SchemaRegistryClient
from consumer.avro.wire import frame_confluent
from consumer.config import Settings
from consumer.errors import ConfigError, DecodeError, RegistryError
from consumer.ops.metrics import Metrics

SECRET = "s3cret-PASSWORD"  # noqa: S105 - a planted value that must never be echoed

CODE = {"type": "enum", "name": "health.lab.Code", "symbols": ["A", "B"], "default": "A"}
PART = {
    "type": "record",
    "name": "health.lab.Part",
    "fields": [{"name": "code", "type": "health.lab.Code"}, {"name": "n", "type": "int"}],
}
WHOLE = {
    "type": "record",
    "name": "health.lab.Whole",
    "fields": [
        {"name": "first", "type": "health.lab.Part"},
        {"name": "code", "type": "health.lab.Code"},  # the same nested type, reached twice
        {"name": "rest", "type": {"type": "array", "items": "health.lab.Part"}},
    ],
}
INLINE = {  # the same schema without references: what the service's reader looks like
    "type": "record",
    "name": "health.lab.Whole",
    "fields": [
        {
            "name": "first",
            "type": {
                **PART,
                "fields": [
                    {"name": "code", "type": CODE},
                    {"name": "n", "type": "int"},
                ],
            },
        },
        {"name": "code", "type": "health.lab.Code"},
        {"name": "rest", "type": {"type": "array", "items": "health.lab.Part"}},
    ],
}
DATUM = {"first": {"code": "B", "n": 1}, "code": "A", "rest": [{"code": "A", "n": 2}]}


def ref(name: str, subject: str | None = None, version: int = 1) -> dict[str, Any]:
    """One entry of `references` (subject = the type's full name, as Apicurio's serializer)."""
    return {"name": name, "subject": subject or name, "version": version}


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    """A fake registry holding WHOLE as id 5 with references Part -> Code, Code."""
    with FakeRegistry(PREFIX) as fake:
        fake.add_version("health.lab.Code", 1, CODE)
        fake.add_version("health.lab.Part", 1, PART, [ref("health.lab.Code")])
        fake.add(5, WHOLE, references=[ref("health.lab.Part"), ref("health.lab.Code")])
        yield fake


def framed(schema_id: int, schema: Any, datum: dict[str, Any]) -> bytes:
    """A Confluent-framed Avro record of `datum` written with `schema`."""
    fo = io.BytesIO()
    fastavro.schemaless_writer(fo, fastavro.parse_schema(schema), datum)
    return frame_confluent(schema_id, fo.getvalue())


class Errors:
    """Records what the error hook hears."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, operation: str, kind: str) -> None:
        assert operation in OPERATIONS
        assert kind in ERROR_KINDS
        self.seen.append((operation, kind))


class TestReferences:
    def test_a_schema_with_references_is_resolved_and_decodes(self, registry: FakeRegistry) -> None:
        client = SchemaRegistryClient(registry.url)
        decoder = Decoder("confluent", INLINE, registry=client)
        value = framed(5, INLINE, DATUM)
        assert decoder.decode(value) == DATUM
        assert decoder.decode(value) == DATUM
        fetched = [path for method, path, _, _ in registry.requests if method == "GET"]
        # the id once; each referenced version once, though Code is reached twice
        assert sorted(fetched) == sorted(
            [
                f"{PREFIX}/schemas/ids/5",
                f"{PREFIX}/subjects/health.lab.Part/versions/1",
                f"{PREFIX}/subjects/health.lab.Code/versions/1",
            ]
        )

    def test_referenced_versions_are_cached_across_schema_ids(self, registry: FakeRegistry) -> None:
        registry.add(6, WHOLE, references=[ref("health.lab.Part")])
        client = SchemaRegistryClient(registry.url)
        client.get_schema(5)
        client.get_schema(6)
        gets = [p for m, p, _, _ in registry.requests if m == "GET" and "/subjects/" in p]
        assert len(gets) == 2

    def test_a_missing_referenced_version_is_an_unknown_schema_that_may_appear_later(
        self, registry: FakeRegistry
    ) -> None:
        registry.add(
            7, WHOLE, references=[ref("health.lab.Part", version=2), ref("health.lab.Code")]
        )
        decoder = Decoder("confluent", INLINE, registry=SchemaRegistryClient(registry.url))
        with pytest.raises(DecodeError) as caught:
            decoder.decode(framed(7, INLINE, DATUM))
        assert caught.value.reason == "unknown-schema-id"
        assert "health.lab.Part" in caught.value.message
        registry.add_version("health.lab.Part", 2, PART, [ref("health.lab.Code")])
        assert decoder.decode(framed(7, INLINE, DATUM)) == DATUM  # not remembered as refused

    @pytest.mark.parametrize(
        ("references", "versions"),
        [
            pytest.param(
                [ref("health.lab.Part", "loop-a")],
                {
                    "loop-a": (PART, [ref("health.lab.Code", "loop-b")]),
                    "loop-b": (CODE, [ref("health.lab.Part", "loop-a")]),
                },
                id="circular",
            ),
            pytest.param(
                [ref("health.lab.Part", "wrong")],
                {"wrong": (CODE, None)},
                id="subject-does-not-define-the-name",
            ),
            pytest.param([{"name": "health.lab.Part"}], {}, id="malformed-reference"),
            pytest.param(
                [ref("health.lab.Part", "bad-text")],
                {"bad-text": ("{not json", None)},
                id="unparsable-referenced-schema",
            ),
        ],
    )
    def test_unusable_references_are_a_schema_resolution_failure(
        self,
        registry: FakeRegistry,
        references: list[dict[str, Any]],
        versions: dict[str, tuple[Any, list[dict[str, Any]] | None]],
    ) -> None:
        for subject, (schema, refs) in versions.items():
            registry.add_version(subject, 1, schema, refs)
        registry.add(8, WHOLE, references=references)
        with pytest.raises(DecodeError) as caught:
            SchemaRegistryClient(registry.url).get_schema(8)
        assert caught.value.reason == "schema-resolution"
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    def test_without_references_resolution_the_record_would_be_unreadable(self) -> None:
        # the guarantee above, seen from the other side: WHOLE alone names types it does not
        # define, which is why every Java-serialized record used to be dead-lettered
        with pytest.raises(fastavro.schema.UnknownType):
            fastavro.parse_schema(WHOLE)

    def test_a_registry_outage_while_fetching_a_reference_is_retried_not_dead_lettered(
        self, registry: FakeRegistry
    ) -> None:
        errors = Errors()
        decoder = Decoder(
            "confluent", INLINE, registry=SchemaRegistryClient(registry.url, on_error=errors)
        )
        registry.fail_prefix = "/subjects/"
        with pytest.raises(RegistryError):
            decoder.decode(framed(5, INLINE, DATUM))
        assert errors.seen == [("get-reference", "server-error")]
        registry.fail_prefix = None
        assert decoder.decode(framed(5, INLINE, DATUM)) == DATUM


class TestErrorHookAndProbe:
    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            pytest.param(503, "server-error", id="5xx"),
            pytest.param(401, "auth", id="401"),
            pytest.param(403, "auth", id="403"),
            pytest.param(302, "http-error", id="redirect"),
        ],
    )
    def test_failures_are_reported_by_kind(
        self, registry: FakeRegistry, status: int, kind: str
    ) -> None:
        errors = Errors()
        registry.status_override = status
        with pytest.raises(RegistryError) as raised:
            SchemaRegistryClient(registry.url, on_error=errors).get_schema(5)
        assert errors.seen == [("get-schema", kind)]
        assert raised.value.kind == kind  # the retry warnings' `reason`

    def test_unreachable_and_refused_registration(self, registry: FakeRegistry) -> None:
        errors = Errors()
        with socket_closed() as url, pytest.raises(RegistryError) as raised:
            SchemaRegistryClient(url, on_error=errors).probe()
        assert raised.value.kind == "unreachable"
        registry.status_override = 409
        with pytest.raises(Exception, match="refused"):
            SchemaRegistryClient(registry.url, on_error=errors).register("s", {"type": "string"})
        assert errors.seen == [("probe", "unreachable"), ("register", "refused")]

    def test_the_metrics_container_counts_them(self, registry: FakeRegistry) -> None:
        metrics = Metrics(CollectorRegistry())
        registry.status_override = 503
        client = SchemaRegistryClient(registry.url, on_error=metrics.registry_error)
        for _ in range(2):
            with pytest.raises(RegistryError):
                client.get_schema(5)
        value = metrics.registry.get_sample_value(
            "her2_consumer_schema_registry_errors_total",
            {"operation": "get-schema", "kind": "server-error"},
        )
        assert value == 2

    def test_a_failing_hook_does_not_hide_the_registry_error(self, registry: FakeRegistry) -> None:
        def broken(operation: str, kind: str) -> None:
            raise ValueError("hook")

        registry.status_override = 503
        with pytest.raises(RegistryError):
            SchemaRegistryClient(registry.url, on_error=broken).get_schema(5)

    def test_probe(self, registry: FakeRegistry) -> None:
        SchemaRegistryClient(registry.url).probe()
        assert registry.requests[-1][1] == f"{PREFIX}/config"
        registry.status_override = 503
        with pytest.raises(RegistryError, match="503"):
            SchemaRegistryClient(registry.url).probe()


class socket_closed:  # used as a context manager like a function
    """The URL of a local port nothing listens on."""

    def __enter__(self) -> str:
        import socket  # noqa: PLC0415

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        pass


# -- TLS and basic auth ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    """CA file, client certificate and key files (a key encrypted with SECRET too)."""
    client = ca.issue_cert("her2-consumer")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "key_enc")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    paths["key_enc"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(SECRET.encode()),
        )
    )
    return paths


def tls_registry(ca: trustme.CA, *, require_client_cert: bool) -> FakeRegistry:
    """A fake registry over TLS with a certificate for 127.0.0.1, mTLS if asked."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if require_client_cert:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    fake = FakeRegistry(PREFIX, ssl_context=context)
    fake.add(1, {"type": "string"})
    return fake


class TestTlsAndAuth:
    def test_the_ca_file_verifies_the_registry(self, ca: trustme.CA, pki: dict[str, Path]) -> None:
        with tls_registry(ca, require_client_cert=False) as fake:
            SchemaRegistryClient(fake.url, access=RegistryAccess(ca_file=str(pki["ca"]))).probe()
            errors = Errors()
            with pytest.raises(RegistryError):  # the system CAs do not know the test CA
                SchemaRegistryClient(fake.url, on_error=errors).probe()
            assert errors.seen == [("probe", "tls")]

    @pytest.mark.parametrize("encrypted", [False, True], ids=["plain-key", "encrypted-key"])
    def test_a_client_certificate_for_mutual_tls(
        self, ca: trustme.CA, pki: dict[str, Path], encrypted: bool
    ) -> None:
        with tls_registry(ca, require_client_cert=True) as fake:
            access = RegistryAccess(
                ca_file=str(pki["ca"]),
                cert_file=str(pki["cert"]),
                key_file=str(pki["key_enc" if encrypted else "key"]),
                key_password=SECRET if encrypted else None,
            )
            schema = SchemaRegistryClient(fake.url, access=access).get_schema(1)
            assert schema == {"type": "string"}
            with pytest.raises(RegistryError):
                SchemaRegistryClient(
                    fake.url, access=RegistryAccess(ca_file=str(pki["ca"]))
                ).get_schema(1)

    def test_basic_auth_from_settings(self, registry: FakeRegistry) -> None:
        access = RegistryAccess(username="api-key", password=SECRET)
        client = SchemaRegistryClient(registry.url, access=access)
        client.probe()
        expected = base64.b64encode(f"api-key:{SECRET}".encode()).decode()
        assert registry.requests[-1][2]["Authorization"] == f"Basic {expected}"
        assert SECRET not in repr(client)
        assert SECRET not in repr(access)


# -- settings ----------------------------------------------------------------------------------


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


class TestRegistrySettings:
    def test_tls_and_auth_reach_the_client(self, ca: trustme.CA, pki: dict[str, Path]) -> None:
        with tls_registry(ca, require_client_cert=True) as fake:
            s = settings(
                HER2_SCHEMA_REGISTRY_URL=fake.url,
                HER2_SCHEMA_REGISTRY_CA_FILE=str(pki["ca"]),
                HER2_SCHEMA_REGISTRY_CERT_FILE=str(pki["cert"]),
                HER2_SCHEMA_REGISTRY_KEY_FILE=str(pki["key_enc"]),
                HER2_SCHEMA_REGISTRY_KEY_PASSWORD=SECRET,
                HER2_SCHEMA_REGISTRY_USERNAME="svc",
                HER2_SCHEMA_REGISTRY_PASSWORD=SECRET,
            )
            client = s.registry_client()
            assert client is not None
            client.probe()
            assert fake.requests[-1][2]["Authorization"].startswith("Basic ")
        assert SECRET not in repr(s)
        assert SECRET not in str(s.summary())

    def test_no_url_no_client(self) -> None:
        assert Settings.from_env({}).registry_client() is None

    @pytest.mark.parametrize(
        ("env", "names"),
        [
            pytest.param(
                {"HER2_SCHEMA_REGISTRY_USERNAME": "u", "HER2_SCHEMA_REGISTRY_PASSWORD": SECRET},
                "HER2_SCHEMA_REGISTRY_USERNAME",
                id="credentials-without-url",
            ),
            pytest.param(
                {"HER2_SCHEMA_REGISTRY_URL": "https://r", "HER2_SCHEMA_REGISTRY_PASSWORD": SECRET},
                "HER2_SCHEMA_REGISTRY_USERNAME",
                id="password-without-user",
            ),
            pytest.param(
                {
                    "HER2_SCHEMA_REGISTRY_URL": f"https://u:{SECRET}@r",
                    "HER2_SCHEMA_REGISTRY_USERNAME": "u",
                    "HER2_SCHEMA_REGISTRY_PASSWORD": SECRET,
                },
                "credentials too",
                id="credentials-twice",
            ),
            pytest.param(
                {"HER2_SCHEMA_REGISTRY_URL": "http://r", "HER2_SCHEMA_REGISTRY_CA_FILE": "{ca}"},
                "not https",
                id="tls-file-with-http",
            ),
            pytest.param(
                {"HER2_SCHEMA_REGISTRY_URL": "https://r", "HER2_SCHEMA_REGISTRY_CA_FILE": "/no"},
                "HER2_SCHEMA_REGISTRY_CA_FILE: no such file",
                id="missing-ca-file",
            ),
            pytest.param(
                {
                    "HER2_SCHEMA_REGISTRY_URL": "https://r",
                    "HER2_SCHEMA_REGISTRY_CERT_FILE": "{cert}",
                },
                "HER2_SCHEMA_REGISTRY_KEY_FILE must be set too",
                id="cert-without-key",
            ),
            pytest.param(
                {
                    "HER2_SCHEMA_REGISTRY_URL": "https://r",
                    "HER2_SCHEMA_REGISTRY_KEY_PASSWORD": SECRET,
                },
                "HER2_SCHEMA_REGISTRY_KEY_FILE is not",
                id="key-password-without-key",
            ),
            pytest.param(
                {"HER2_SCHEMA_REGISTRY_URL": "https://r", "HER2_SCHEMA_REGISTRY_CA_FILE": "{key}"},
                "HER2_SCHEMA_REGISTRY_CA_FILE cannot be used",
                id="ca-file-not-a-certificate",
            ),
            pytest.param(
                {
                    "HER2_SCHEMA_REGISTRY_URL": "https://r",
                    "HER2_SCHEMA_REGISTRY_CERT_FILE": "{cert}",
                    "HER2_SCHEMA_REGISTRY_KEY_FILE": "{key_enc}",
                    "HER2_SCHEMA_REGISTRY_KEY_PASSWORD": "wrong-" + SECRET,
                },
                "cannot be used",
                id="wrong-key-password",
            ),
        ],
    )
    def test_inconsistent_settings_name_the_variable_never_the_secret(
        self, pki: dict[str, Path], env: dict[str, str], names: str
    ) -> None:
        resolved = {k: v.format(**{n: str(p) for n, p in pki.items()}) for k, v in env.items()}
        with pytest.raises(ConfigError, match=names) as caught:
            Settings.from_env(resolved)
        assert SECRET not in str(caught.value)
        assert caught.value.__cause__ is None


# -- redirects ---------------------------------------------------------------------------------


class _Recorder:
    """Two local HTTP servers: `redirect_url` answers every request with `status` and a Location
    on `target`; `target` records the Authorization header of what reaches it."""

    def __init__(self, status: int) -> None:
        import http.server  # noqa: PLC0415
        import threading  # noqa: PLC0415

        self.reached: list[str | None] = []
        reached = self.reached

        class Target(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                reached.append(self.headers.get("Authorization"))
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
        where = f"http://127.0.0.1:{self.target.server_port}/elsewhere"

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.redirect = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        self.redirect_url = f"http://127.0.0.1:{self.redirect.server_port}"
        for server in (self.target, self.redirect):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in (self.target, self.redirect):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("credentials", ["settings", "url"])
def test_a_redirect_is_refused_and_the_credentials_stay_home(status: int, credentials: str) -> None:
    """Security audit: urllib's default handler followed a registry's redirect with the
    Authorization header, to any host and from https to plain http, and took the schemas it
    found there. A redirect is now an error that says so; nothing reaches the other address."""
    servers = _Recorder(status)
    try:
        if credentials == "url":
            user_url = servers.redirect_url.replace("http://", f"http://reader:{SECRET}@")
            client = SchemaRegistryClient(user_url)
        else:
            access = RegistryAccess(username="reader", password=SECRET)
            client = SchemaRegistryClient(servers.redirect_url, access=access)
        with pytest.raises(RegistryError, match=f"HTTP {status} .*a redirect, not followed"):
            client.probe()
        with pytest.raises(RegistryError, match="a redirect, not followed"):
            client.get_schema(7)
        with pytest.raises(Exception, match="a redirect, not followed") as refused:
            client.register("her2-alerts-value", {"type": "string"})
        assert SECRET not in str(refused.value)
        assert servers.reached == [], "a request reached the redirect's target"
    finally:
        servers.close()
