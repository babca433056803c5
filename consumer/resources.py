"""Locate the Avro schemas and rule files shipped with the package (or the source tree)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

_PACKAGE_DATA = Path(__file__).parent / "_data"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent

PATHOLOGY_RESULT = "pathology_result"
HER2_CLASSIFICATION = "her2_classification"
HER2_ALERT = "her2_alert"
PATIENT_HISTORY = "patient_history"


def data_dir(name: str) -> Path:
    """Return the folder `schemas` or `rules`: inside the wheel, else in the source tree."""
    packaged = _PACKAGE_DATA / name
    if packaged.is_dir():
        return packaged
    return _SOURCE_ROOT / name


def schema_path(name: str) -> Path:
    """Return the path of the `.avsc` file called `name`."""
    return data_dir("schemas") / f"{name}.avsc"


@cache
def raw_schema(name: str) -> dict[str, Any]:
    """Return the schema `name` as JSON (not parsed)."""
    with schema_path(name).open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


def previous_schemas(name: str) -> tuple[dict[str, Any], ...]:
    """The earlier shipped versions of the schema `name` (`schemas/previous/<name>.<commit>.avsc`,
    copied byte for byte when a release changed it), oldest commit name first: single-object
    input written with any of them is still read (its fingerprint is known)."""
    folder = data_dir("schemas") / "previous"
    paths = sorted(folder.glob(f"{name}.*.avsc")) if folder.is_dir() else []
    return tuple(json.loads(path.read_text(encoding="utf-8")) for path in paths)


@cache
def parsed_schema(name: str) -> Any:
    """Return the schema `name` parsed by fastavro (cached; treat as read-only)."""
    return fastavro.parse_schema(raw_schema(name))
