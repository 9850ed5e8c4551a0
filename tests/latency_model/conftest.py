"""Session fixtures of the latency_model tests (the synthetic data is in `latency_cases`)."""

from __future__ import annotations

import pytest

from latency_cases import make_record, toy_description
from latency_model.predictor import Predictor, train_predictor
from latency_model.records import MeasurementRecord
from latency_model.sampling import layer_configs, sample_kept


@pytest.fixture(scope="session")
def synthetic_records() -> list[MeasurementRecord]:
    desc = toy_description()
    return [make_record(c) for c in layer_configs(desc, sample_kept(desc, 120, seed=0))]


@pytest.fixture(scope="session")
def trained_predictor(synthetic_records, tmp_path_factory) -> Predictor:
    return train_predictor(synthetic_records, tmp_path_factory.mktemp("predictor"), seed=0)
