import json
import pickle

import pytest
import torch
from conftest import make_net, tiny_spec_dict
from safetensors.torch import load_file, save_file

from cephalon_edge.toolchain import checkpoint
from cephalon_edge.toolchain.state_import import import_state_dict
from cephalon_edge.errors import CheckpointError


def test_round_trip_is_bit_exact(tmp_path):
    net = make_net()
    path = tmp_path / "m.cephalon"
    checkpoint.save(net, path, {"creator": "test"})
    loaded, meta = checkpoint.load_with_metadata(path)
    assert meta["provenance"] == {"creator": "test"}
    assert loaded.spec == net.spec
    a, b = net.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x = torch.randn(3, 1, 12, 12)
    assert torch.equal(net(x).exit_logits[-1], loaded(x).exit_logits[-1])


def test_mismatched_tensor_is_refused_by_name(tmp_path):
    net = make_net()
    path = tmp_path / "m.cephalon"
    checkpoint.save(net, path)
    tensors = load_file(str(path))
    meta = checkpoint.read_metadata(path)
    name = "stages.1.plain.0.branch.0.weight"
    tensors[name] = torch.zeros(5, 8, 3, 3)
    save_file(tensors, str(path), metadata={"cephalon": json.dumps(meta)})
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert name in err.value.message and "[5, 8, 3, 3]" in err.value.message and "[12, 8, 3, 3]" in err.value.message


def test_missing_tensor_and_garbage_files(tmp_path):
    net = make_net()
    path = tmp_path / "m.cephalon"
    checkpoint.save(net, path)
    tensors = load_file(str(path))
    del tensors["heads.task_aux.fc.bias"]
    save_file(tensors, str(path), metadata={"cephalon": json.dumps(checkpoint.read_metadata(path))})
    with pytest.raises(CheckpointError, match=r"1 missing: heads.task_aux.fc.bias \[2\]"):
        checkpoint.load(path)
    junk = tmp_path / "junk.cephalon"
    junk.write_bytes(b"\x05\x00")
    with pytest.raises(CheckpointError, match="too short"):
        checkpoint.load(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without cephalon metadata"):
        checkpoint.load(plain)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil(marker)}, f)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    with pytest.raises(CheckpointError, match="refused to load"):
        import_state_dict(evil, spec)
    assert not marker.exists()


def test_import_state_dict_round_trip(tmp_path):
    net = make_net(seed=3)
    sd = tmp_path / "w.pt"
    torch.save({"state_dict": net.state_dict()}, sd)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    imported, _ = import_state_dict(sd, spec)
    for k, v in net.state_dict().items():
        assert torch.equal(v, imported.state_dict()[k])
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(tiny_spec_dict(tasks=[{"name": "class", "outputs": 7}], labels=[])))
    with pytest.raises(CheckpointError, match=r"exits.0.fc.weight \[5, 8\] \(spec \[7, 8\]\)"):
        import_state_dict(sd, wrong)


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat
    path = tmp_path / "m.cephalon"
    checkpoint.save(make_net(), path)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
