"""The old import paths (kept for one release, issue 16) still give the same objects as the new
modules: tests, bench/, deploy scripts and users import them."""

from __future__ import annotations

import importlib

import pytest

SHIMS = {
    "model": "clinical.model",
    "classify": "clinical.classify",
    "therapies": "clinical.therapies",
    "facts": "clinical.facts",
    "rules": "clinical.rules",
    "alerts": "clinical.alerts",
    "pipeline": "clinical.pipeline",
    "validate": "clinical.validate",
    "patient": "clinical.patient",
    "wire": "avro.wire",
    "registry": "avro.registry",
    "codec": "avro.codec",
    "history": "state.store",
    "statestore": "state.backends",
    "metrics": "ops.metrics",
    "http": "ops.http",
    "logs": "ops.logs",
    "evaluate": "tools.evaluate",
    "jsonout": "tools.jsonout",
    "demo": "tools.demo",
    "synthetic": "tools.synthetic",
    "publish": "tools.publish",
    "downstream": "tools.downstream",
    "routing": "runtime.routing",
    "instance": "runtime.instance",
}


@pytest.mark.parametrize(("old", "new"), SHIMS.items(), ids=list(SHIMS))
def test_old_path_re_exports_the_new_module(old: str, new: str) -> None:
    shim = importlib.import_module(f"consumer.{old}")
    module = importlib.import_module(f"consumer.{new}")
    public = {n for n in vars(module) if not n.startswith("_")}
    assert public
    for name in public:
        assert getattr(shim, name) is getattr(module, name), name
    assert "kept for one release" in (shim.__doc__ or "").lower()
