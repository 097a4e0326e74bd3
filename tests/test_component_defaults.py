"""The component declares every default a second time: each must equal the runtime spec's."""

import dataclasses
import inspect

from batchpredict.spec import BatchPredictionJobSpec
from components.model_batch_predict import ModelBatchPredictOp

# Component inputs that are artifacts, not spec fields (component_entry resolves them).
ARTIFACT_INPUTS = ("model", "unmanaged_container_model")
# Spec fields the component does not take: set from its artifacts, or meaningless in a pipeline.
NOT_COMPONENT_INPUTS = (
    "model_uri",
    "model_resource_name",
    "container_image_uri",
    "model_metadata",
    "progress",
)


def _spec_defaults() -> dict:
    out = {}
    for f in dataclasses.fields(BatchPredictionJobSpec):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = inspect.Parameter.empty
    return out


def test_every_component_default_equals_the_spec_default():
    spec = _spec_defaults()
    params = inspect.signature(ModelBatchPredictOp.python_func).parameters
    inputs = {n: p for n, p in params.items() if n in spec}
    assert len(inputs) == len(spec) - len(NOT_COMPONENT_INPUTS)
    for name, p in inputs.items():
        assert p.default == spec[name], f"{name}: component {p.default!r} != spec {spec[name]!r}"
        if p.default is not inspect.Parameter.empty:
            assert type(p.default) is type(spec[name]), name


def test_every_spec_field_is_a_component_input_or_listed_as_not_one():
    params = inspect.signature(ModelBatchPredictOp.python_func).parameters
    missing = [n for n in _spec_defaults() if n not in params and n not in NOT_COMPONENT_INPUTS]
    assert not missing, f"spec fields the component does not take: {missing}"
    outputs = ModelBatchPredictOp.component_spec.outputs
    others = [n for n in params if n not in _spec_defaults() and n not in ARTIFACT_INPUTS]
    assert set(others) <= set(outputs), others
