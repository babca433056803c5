"""A small client of a Confluent-compatible Schema Registry (REST, stdlib only).

The calls the service needs: fetch a writer schema by id (Confluent-framed input), with its
schema references resolved; register an output schema (Confluent-framed output); and a cheap
probe for readiness. Answers are cached for the life of the process: a schema id, and a
subject's version, never change meaning.

Schema references (what Apicurio's and Confluent's Java serializers register for nested named
types): `GET /schemas/ids/{id}` answers `references: [{name, subject, version}]`; each is fetched
with `GET /subjects/{subject}/versions/{version}` (which may have references of its own, resolved
first) and parsed into the same fastavro named-schema table before the schema that uses it.

Failures are split by whose fault they are:
- the registry answers that the id (or a version it references) does not exist -> DecodeError
  `unknown-schema-id` (the record is at fault: dead-letter it);
- a schema or its references cannot be parsed, loop, or go too deep -> DecodeError
  `schema-resolution`;
- the registry cannot be reached, fails TLS, refuses the credentials, answers 5xx, or answers
  something that is not a registry answer -> RegistryError (transient: retry or stop, never
  dead-letter);
- the registry refuses to register an output schema -> SchemaError (fatal).
Each failure of the registry itself is reported to `on_error(operation, kind)` (labels from
OPERATIONS and ERROR_KINDS: the service counts them). Messages name the schema id or subject,
never schema contents or credentials.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import fastavro

from consumer.errors import ConfigError, DecodeError, RegistryError, SchemaError

CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
HTTP_NOT_FOUND: Final = 404
HTTP_AUTH: Final = frozenset({401, 403})
HTTP_OK_RANGE: Final = range(200, 300)
HTTP_REDIRECTS: Final = range(300, 400)
_REDIRECTED: Final = (
    " (a redirect, not followed: credentials go only to HER2_SCHEMA_REGISTRY_URL; point it at "
    "the registry's own address)"
)
HTTP_SERVER_ERRORS: Final = range(500, 600)
MAX_REFERENCE_DEPTH: Final = 16
MAX_REFERENCES: Final = 256

OPERATIONS: Final = ("get-schema", "get-reference", "register", "probe")
ERROR_KINDS: Final = (
    "unreachable",  # connection refused, DNS, timeout
    "tls",  # handshake or certificate verification failed
    "auth",  # 401 / 403: credentials missing or refused
    "server-error",  # 5xx
    "http-error",  # another unexpected status (e.g. a 404 from a wrong path prefix)
    "bad-answer",  # not JSON, or JSON without what a registry answers
    "refused",  # the registry refused to register an output schema (fatal)
)
MASK: Final = "***"

ErrorHook = Callable[[str, str], None]


@dataclass(frozen=True)
class RegistryAccess:
    """TLS and credentials for the registry; the secrets never appear in repr."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        """Fields, with the key password and the password masked."""
        key_password = MASK if self.key_password else None
        password = MASK if self.password else None
        return (
            f"RegistryAccess(ca_file={self.ca_file!r}, cert_file={self.cert_file!r}, "
            f"key_file={self.key_file!r}, key_password={key_password!r}, "
            f"username={self.username!r}, password={password!r})"
        )

    @property
    def has_tls_files(self) -> bool:
        """Whether a CA file or a client certificate is configured."""
        return any((self.ca_file, self.cert_file, self.key_file))

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context with the CA file and client certificate (ConfigError if a
        file cannot be used; the message names the variable, never the key password)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"HER2_SCHEMA_REGISTRY_CA_FILE cannot be used ({type(exc).__name__})"
            ) from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=self.key_password)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    "HER2_SCHEMA_REGISTRY_CERT_FILE / HER2_SCHEMA_REGISTRY_KEY_FILE cannot be "
                    f"used ({type(exc).__name__})"
                ) from None
        return context


class SchemaRegistryClient:
    """Fetch writer schemas by id (references resolved) and register output schemas."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        access: RegistryAccess | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        """Build a client for the registry at `url` (may carry a path prefix, and user:password
        unless `access` names a user). `on_error(operation, kind)` hears of registry failures."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("HER2_SCHEMA_REGISTRY_URL must be an http(s) URL with a host")
        if timeout <= 0:
            raise ConfigError("the schema registry timeout must be positive")
        access = access or RegistryAccess()
        netloc = parts.netloc.rpartition("@")[2]
        self._base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._headers = {"Accept": CONTENT_TYPE}
        username, password = access.username, access.password
        if parts.username is not None:
            if username is not None:
                raise ConfigError(
                    "HER2_SCHEMA_REGISTRY_USERNAME is set and HER2_SCHEMA_REGISTRY_URL carries "
                    "credentials too: use one"
                )
            username = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        if access.has_tls_files and parts.scheme != "https":
            raise ConfigError(
                "HER2_SCHEMA_REGISTRY_CA_FILE / _CERT_FILE / _KEY_FILE need an https "
                "HER2_SCHEMA_REGISTRY_URL"
            )
        # a registry answers where it is asked: a redirect is refused (urllib's default handler
        # follows it with the Authorization header, to any host, https to plain http too)
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if parts.scheme == "https":
            handlers.append(urllib.request.HTTPSHandler(context=access.ssl_context()))
        self._opener = urllib.request.build_opener(*handlers)
        self._timeout = timeout
        self._on_error = on_error
        self._lock = threading.Lock()
        self._schemas: dict[int, Any] = {}
        self._versions: dict[tuple[str, int], dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        """Show the registry address without credentials."""
        return f"SchemaRegistryClient({self._base!r})"

    def get_schema(self, schema_id: int) -> Any:
        """Return the parsed Avro writer schema registered under `schema_id`, references
        resolved (DecodeError if the record is at fault, RegistryError if the registry is)."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        status, body = self._request("GET", f"/schemas/ids/{int(schema_id)}", "get-schema")
        if status == HTTP_NOT_FOUND and _error_code(body) is not None:
            raise DecodeError(
                "unknown-schema-id", f"schema id {schema_id} is not registered in {self._base}"
            )
        self._expect_ok(status, f"fetching schema id {schema_id}", "get-schema")
        answer = self._json_object(body, "get-schema")
        label = f"schema id {schema_id}"
        text = _schema_text(answer, label, self._bad_answer("get-schema"))
        named: dict[str, Any] = {}
        self._parse_references(answer.get("references"), named, label, (), [0])
        parsed = _parse(text, named, label)
        with self._lock:
            return self._schemas.setdefault(schema_id, parsed)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register `schema` (JSON, not parsed) under `subject` and return its id."""
        text = json.dumps(schema, separators=(",", ":"))
        key = (subject, text)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        path = f"/subjects/{_quote(subject)}/versions"
        payload = json.dumps({"schema": text}).encode("utf-8")
        status, body = self._request("POST", path, "register", payload)
        if (
            status not in HTTP_OK_RANGE
            and status not in HTTP_SERVER_ERRORS
            and status not in HTTP_AUTH
        ):
            self._report("register", "refused")
            raise SchemaError(
                f"the schema registry refused the schema for subject {subject!r}: "
                f"HTTP {status}, error_code {_error_code(body)}"
                + (_REDIRECTED if status in HTTP_REDIRECTS else "")
            )
        self._expect_ok(status, f"registering subject {subject!r}", "register")
        schema_id = self._json_object(body, "register").get("id")
        if not isinstance(schema_id, int) or isinstance(schema_id, bool):
            self._report("register", "bad-answer")
            raise RegistryError(
                f"the schema registry answered no id for subject {subject!r}", "bad-answer"
            )
        with self._lock:
            return self._ids.setdefault(key, schema_id)

    def probe(self) -> None:
        """Raise RegistryError unless the registry answers an authenticated request (for
        readiness: `GET /config`, which Confluent and Apicurio's ccompat API both serve)."""
        status, body = self._request("GET", "/config", "probe")
        self._expect_ok(status, "answering GET /config", "probe")
        self._json_object(body, "probe")

    # -- references --------------------------------------------------------------------------

    def _parse_references(
        self,
        references: Any,
        named: dict[str, Any],
        label: str,
        visiting: tuple[tuple[str, int], ...],
        count: list[int],
    ) -> None:
        """Parse every referenced schema into `named`, each one's own references first."""
        if references in (None, []):
            return
        if not isinstance(references, list):
            raise DecodeError("schema-resolution", f"{label} has malformed references")
        if len(visiting) >= MAX_REFERENCE_DEPTH:
            raise DecodeError("schema-resolution", f"{label} has references nested too deeply")
        for reference in references:
            name, subject, version = _reference(reference, label)
            if name in named:  # already parsed through another path (a shared nested type)
                continue
            if (subject, version) in visiting:
                raise DecodeError("schema-resolution", f"{label} has circular references")
            count[0] += 1
            if count[0] > MAX_REFERENCES:
                raise DecodeError("schema-resolution", f"{label} has too many references")
            answer = self._version(subject, version, label)
            ref_label = f"subject {subject!r} version {version} (referenced by {label})"
            self._parse_references(
                answer.get("references"), named, ref_label, (*visiting, (subject, version)), count
            )
            text = _schema_text(answer, ref_label, self._bad_answer("get-reference"))
            _parse(text, named, ref_label)
            if name not in named:
                raise DecodeError(
                    "schema-resolution", f"{ref_label} does not define the referenced type"
                )

    def _version(self, subject: str, version: int, label: str) -> dict[str, Any]:
        """GET /subjects/{subject}/versions/{version}, cached."""
        cached = self._versions.get((subject, version))
        if cached is not None:
            return cached
        path = f"/subjects/{_quote(subject)}/versions/{version}"
        status, body = self._request("GET", path, "get-reference")
        if status == HTTP_NOT_FOUND and _error_code(body) is not None:
            raise DecodeError(
                "unknown-schema-id",
                f"{label} references subject {subject!r} version {version}, which is not "
                "registered",
            )
        self._expect_ok(status, f"fetching subject {subject!r} version {version}", "get-reference")
        answer = self._json_object(body, "get-reference")
        with self._lock:
            return self._versions.setdefault((subject, version), answer)

    # -- HTTP --------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, operation: str, payload: bytes | None = None
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body) for any HTTP answer, else RegistryError."""
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = CONTENT_TYPE
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self._base + path, data=payload, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return response.status, response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(MAX_RESPONSE_BYTES)
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, str) else type(exc.reason).__name__
            kind = "tls" if isinstance(exc.reason, ssl.SSLError) else "unreachable"
            self._report(operation, kind)
            raise RegistryError(
                f"schema registry {self._base} unreachable: {reason}", kind
            ) from None
        except ssl.SSLError as exc:
            self._report(operation, "tls")
            raise RegistryError(
                f"schema registry {self._base} failed TLS: {type(exc).__name__}", "tls"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            self._report(operation, "unreachable")
            raise RegistryError(
                f"schema registry {self._base} failed: {type(exc).__name__}"
            ) from None

    def _expect_ok(self, status: int, doing: str, operation: str) -> None:
        """Raise RegistryError unless `status` is a 2xx."""
        if status in HTTP_OK_RANGE:
            return
        if status in HTTP_REDIRECTS:
            self._report(operation, "http-error")
            raise RegistryError(
                f"schema registry {self._base} answered HTTP {status} {doing}{_REDIRECTED}",
                "http-error",
            )
        if status in HTTP_AUTH:
            kind = "auth"
        elif status in HTTP_SERVER_ERRORS:
            kind = "server-error"
        else:
            kind = "http-error"
        self._report(operation, kind)
        raise RegistryError(f"schema registry {self._base} answered HTTP {status} {doing}", kind)

    def _json_object(self, body: bytes, operation: str) -> dict[str, Any]:
        """Decode a JSON object answer, or raise RegistryError."""
        try:
            loaded = json.loads(body)
        except ValueError:
            self._report(operation, "bad-answer")
            raise RegistryError(
                "the schema registry answered something that is not JSON", "bad-answer"
            ) from None
        if not isinstance(loaded, dict):
            self._report(operation, "bad-answer")
            raise RegistryError(
                "the schema registry answered JSON that is not an object", "bad-answer"
            )
        return loaded

    def _bad_answer(self, operation: str) -> Callable[[], None]:
        return lambda: self._report(operation, "bad-answer")

    def _report(self, operation: str, kind: str) -> None:
        """Tell the error hook (a failing hook must not hide the registry error)."""
        if self._on_error is not None:
            with contextlib.suppress(Exception):  # counting is best effort; the error is raised
                self._on_error(operation, kind)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: the 3xx answer reaches the caller as it is (an HTTPError)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Never a new request."""
        return None


def _quote(subject: str) -> str:
    """A subject as one URL path segment."""
    return urllib.parse.quote(subject, safe="")


def _error_code(body: bytes) -> int | None:
    """Return the registry's `error_code` if `body` is a registry error answer."""
    try:
        loaded = json.loads(body)
    except ValueError:
        return None
    code = loaded.get("error_code") if isinstance(loaded, dict) else None
    return code if isinstance(code, int) else None


def _reference(reference: Any, label: str) -> tuple[str, str, int]:
    """(name, subject, version) of one entry of `references`."""
    if isinstance(reference, dict):
        name, subject, version = (reference.get(k) for k in ("name", "subject", "version"))
        if (
            isinstance(name, str)
            and name
            and isinstance(subject, str)
            and subject
            and isinstance(version, int)
            and not isinstance(version, bool)
            and version >= 1
        ):
            return name, subject, version
    raise DecodeError("schema-resolution", f"{label} has a malformed reference")


def _schema_text(answer: dict[str, Any], label: str, bad_answer: Callable[[], None]) -> str:
    """The Avro schema text of a registry answer (schemas/ids or subjects/versions)."""
    if answer.get("schemaType", "AVRO") != "AVRO":
        raise DecodeError("unsupported-framing", f"{label} is not an Avro schema")
    text = answer.get("schema")
    if not isinstance(text, str):
        bad_answer()
        raise RegistryError(f"the schema registry answered no schema for {label}", "bad-answer")
    return text


def _parse(text: str, named: dict[str, Any], label: str) -> Any:
    """Parse schema `text` into a fastavro schema, adding its named types to `named`."""
    try:
        parsed = fastavro.parse_schema(json.loads(text), named_schemas=named)
    except Exception:  # fastavro raises several types; each means "unusable"
        parsed = None
    if parsed is None:
        # raised outside the handler so that no chained exception carries the schema text
        raise DecodeError("schema-resolution", f"{label} cannot be parsed")
    return parsed
