"""A small client of a Confluent-compatible Schema Registry (REST, stdlib only).

Only the two calls the service needs: fetch a writer schema by id (for Confluent-framed input)
and register an output schema (for Confluent-framed output). Answers are cached for the life
of the process: a schema id never changes meaning.

Failures are split by whose fault they are:
- the registry answers that the id does not exist -> DecodeError `unknown-schema-id` (the
  record is at fault: dead-letter it);
- the registry cannot be reached, answers 5xx, or answers something that is not a registry
  error -> RegistryError (transient: retry or stop, never dead-letter);
- the registry refuses to register an output schema -> SchemaError (fatal).
Messages name the schema id or subject, never schema contents or credentials.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

import fastavro

from consumer.errors import ConfigError, DecodeError, RegistryError, SchemaError

CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
HTTP_NOT_FOUND: Final = 404
HTTP_OK_RANGE: Final = range(200, 300)
HTTP_SERVER_ERRORS: Final = range(500, 600)


class SchemaRegistryClient:
    """Fetch writer schemas by id and register output schemas, caching both."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        """Build a client for the registry at `url` (may carry a path prefix and user:password)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("HER2_SCHEMA_REGISTRY_URL must be an http(s) URL with a host")
        if timeout <= 0:
            raise ConfigError("the schema registry timeout must be positive")
        netloc = parts.netloc.rpartition("@")[2]
        self._base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._headers = {"Accept": CONTENT_TYPE}
        if parts.username is not None:
            userinfo = (
                f"{urllib.parse.unquote(parts.username)}:"
                f"{urllib.parse.unquote(parts.password or '')}"
            )
            token = base64.b64encode(userinfo.encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._timeout = timeout
        self._lock = threading.Lock()
        self._schemas: dict[int, Any] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        """Show the registry address without credentials."""
        return f"SchemaRegistryClient({self._base!r})"

    def get_schema(self, schema_id: int) -> Any:
        """Return the parsed Avro writer schema registered under `schema_id`."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        status, body = self._request("GET", f"/schemas/ids/{int(schema_id)}")
        if status == HTTP_NOT_FOUND and _error_code(body) is not None:
            raise DecodeError("unknown-schema-id", f"schema id {schema_id} is not registered")
        self._expect_ok(status, f"fetching schema id {schema_id}")
        parsed = _parse_registered(schema_id, body)
        with self._lock:
            return self._schemas.setdefault(schema_id, parsed)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register `schema` (JSON, not parsed) under `subject` and return its id."""
        text = json.dumps(schema, separators=(",", ":"))
        key = (subject, text)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        payload = json.dumps({"schema": text}).encode("utf-8")
        status, body = self._request("POST", path, payload)
        if status not in HTTP_OK_RANGE and status not in HTTP_SERVER_ERRORS:
            raise SchemaError(
                f"the schema registry refused the schema for subject {subject!r}: "
                f"HTTP {status}, error_code {_error_code(body)}"
            )
        self._expect_ok(status, f"registering subject {subject!r}")
        schema_id = _json_object(body).get("id")
        if not isinstance(schema_id, int) or isinstance(schema_id, bool):
            raise RegistryError(f"the schema registry answered no id for subject {subject!r}")
        with self._lock:
            return self._ids.setdefault(key, schema_id)

    def _request(self, method: str, path: str, payload: bytes | None = None) -> tuple[int, bytes]:
        """Send one request; return (status, body) for any HTTP answer, else RegistryError."""
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = CONTENT_TYPE
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self._base + path, data=payload, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                return response.status, response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(MAX_RESPONSE_BYTES)
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, str) else type(exc.reason).__name__
            raise RegistryError(f"schema registry {self._base} unreachable: {reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(
                f"schema registry {self._base} failed: {type(exc).__name__}"
            ) from None

    def _expect_ok(self, status: int, doing: str) -> None:
        """Raise RegistryError unless `status` is a 2xx."""
        if status not in HTTP_OK_RANGE:
            raise RegistryError(f"schema registry {self._base} answered HTTP {status} {doing}")


def _json_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object answer, or raise RegistryError."""
    try:
        loaded = json.loads(body)
    except ValueError:
        raise RegistryError("the schema registry answered something that is not JSON") from None
    if not isinstance(loaded, dict):
        raise RegistryError("the schema registry answered JSON that is not an object")
    return loaded


def _error_code(body: bytes) -> int | None:
    """Return the registry's `error_code` if `body` is a registry error answer."""
    try:
        loaded = json.loads(body)
    except ValueError:
        return None
    code = loaded.get("error_code") if isinstance(loaded, dict) else None
    return code if isinstance(code, int) else None


def _parse_registered(schema_id: int, body: bytes) -> Any:
    """Parse the answer of GET /schemas/ids/{id} into a fastavro schema."""
    answer = _json_object(body)
    if answer.get("schemaType", "AVRO") != "AVRO":
        raise DecodeError("unsupported-framing", f"schema id {schema_id} is not an Avro schema")
    text = answer.get("schema")
    if not isinstance(text, str):
        raise RegistryError(f"the schema registry answered no schema for id {schema_id}")
    try:
        parsed = fastavro.parse_schema(json.loads(text))
    except Exception:  # fastavro raises several types; each means "unusable"
        parsed = None
    if parsed is None:
        # raised outside the handler so that no chained exception carries the schema text
        raise DecodeError("schema-resolution", f"writer schema id {schema_id} cannot be parsed")
    return parsed
