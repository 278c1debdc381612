import json

import pytest
from conftest import tiny_spec_dict

from cephalon_edge.toolchain.spec import ModelSpec
from cephalon_edge.errors import SpecError


def test_spec_json_round_trip():
    spec = ModelSpec.from_dict(tiny_spec_dict())
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert spec.exit_names == ["exit0", "exit1", "exit2", "final"]
    assert spec.gate_names == ["gate1.1", "gate1.2"]
    assert spec.moe_names == ["moe2"]


@pytest.mark.parametrize("path, value, field", [
    (("stages", 1, "channels"), -3, "spec.stages[1].channels"),
    (("stages", 0, "block"), "dense", "spec.stages[0].block"),
    (("stages", 2, "experts"), 1, "spec.stages[2].experts"),
    (("stages", 3, "exit"), True, "spec.stages[3].exit"),
    (("modalities", 0, "shape"), [1, 12], "spec.modalities[0].shape"),
    (("modalities", 0, "kind"), "video", "spec.modalities[0].kind"),
    (("tasks", 0, "kind"), "regression", "spec.tasks[0].kind"),
    (("labels",), ["a"], "spec.labels"),
    (("version",), 9, "spec.version"),
])
def test_bad_fields_are_named(path, value, field):
    data = tiny_spec_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(data)
    assert err.value.message.startswith(field + ":"), err.value.message


def test_unknown_and_missing_fields():
    data = tiny_spec_dict()
    data["stages"][0]["chanels"] = 3
    with pytest.raises(SpecError, match=r"spec.stages\[0\].chanels: unknown field"):
        ModelSpec.from_dict(data)
    data = tiny_spec_dict()
    del data["stages"][0]["channels"]
    with pytest.raises(SpecError, match=r"spec.stages\[0\].channels: required field is missing"):
        ModelSpec.from_dict(data)
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{nope")
    with pytest.raises(SpecError, match="spec: expected an object"):
        ModelSpec.from_json(json.dumps([1, 2]))
