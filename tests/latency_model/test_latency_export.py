"""Every layer type exports as ONNX that TVM imports and fuses into tuning tasks."""

from __future__ import annotations

import pytest

from compile.build import lower
from compile.frontend import load_model
from compile.targets import resolve_target
from compile.tuning import ms
from latency_cases import ONE_OF_EACH
from latency_model.export import export_layer


@pytest.mark.parametrize("config", ONE_OF_EACH, ids=lambda c: c.kind)
def test_layer_imports_into_tvm(config, tmp_path):
    path, shape = export_layer(config, tmp_path / "layer.onnx")
    assert shape[0] == 1 and path.stat().st_size > 0
    preset = resolve_target("host")
    lowered = lower(load_model(path, None, tmp_path).mod, preset)
    assert len(ms.relax_integration.extract_tasks(lowered, preset.target())) >= 1
