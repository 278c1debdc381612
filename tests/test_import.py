"""`import`: a plain PyTorch early-exit model's weights into a Cephalon checkpoint, through the
CLI, with prefix maps, wrapper stripping and casting; every mismatch named at once."""

import json

import pytest
import torch
from conftest import run_cli_in_process
from torch import nn

from cephalon_edge.toolchain import checkpoint

SPEC = {"name": "users-net",
        "modalities": [{"name": "image", "kind": "image", "shape": [1, 16, 16],
                        "adapter": {"kind": "conv_stem", "channels": 8}}],
        "stages": [{"channels": 8, "blocks": 1, "exit": True}, {"channels": 16, "blocks": 1, "stride": 2}],
        "tasks": [{"name": "class", "outputs": 4}]}
MAP = ["stem.=adapters.image.body.", "layer1.body.=stages.0.plain.0.branch.",
       "layer2.body.=stages.1.plain.0.branch.", "layer2.down.=stages.1.plain.0.shortcut.",
       "early.=exits.0.fc.", "classifier.=heads.task_class.fc."]


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


class UsersEarlyExitNet(nn.Module):
    """How a user writes an early-exit CNN in plain PyTorch, with their own names."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1, self.layer2 = Block(8, 8, 1), Block(8, 16, 2)
        self.early, self.classifier = nn.Linear(8, 4), nn.Linear(16, 4)

    def forward(self, x):
        h1 = self.layer1(self.stem(x))
        h2 = self.layer2(h1)
        return self.early(h1.mean((2, 3))), self.classifier(h2.mean((2, 3)))


def _trained_users_net() -> UsersEarlyExitNet:
    torch.manual_seed(0)
    net = UsersEarlyExitNet()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_a_plain_pytorch_model_imports_with_a_map_and_matches_its_outputs(tmp_path):
    users = _trained_users_net()
    state = {f"module.{k}": v.double() for k, v in users.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # DataParallel names, fp64, no BN counters
    torch.save({"epoch": 12, "state_dict": state}, tmp_path / "users.pt")
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))

    args = ["import", str(tmp_path / "users.pt"), "--spec", str(tmp_path / "spec.json"), "-o", str(tmp_path / "m.cephalon")]
    r = run_cli_in_process(*args, *[a for m in MAP for a in ("--map", m)])
    assert r.returncode == 0, r.stderr
    assert "note:" in r.stderr and "float64 weights cast to float32" in r.stderr

    net = checkpoint.load(tmp_path / "m.cephalon")
    x = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = users(x)
        got = net(x).exit_logits
    for w, g in zip(want, got):
        assert torch.allclose(w, g, atol=1e-5), (w - g).abs().max()

    again = run_cli_in_process(*args, *[a for m in MAP for a in ("--map", m)])
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr
    assert run_cli_in_process(*args, "--force", *[a for m in MAP for a in ("--map", m)]).returncode == 0


def test_every_mismatch_is_named_at_once_with_shapes(tmp_path):
    users = _trained_users_net()
    torch.save(users.state_dict(), tmp_path / "users.pt")
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    partial = [m for m in MAP if not m.startswith("classifier.")] + ["early.=exits.0.fc."]
    r = run_cli_in_process("import", str(tmp_path / "users.pt"), "--spec", str(tmp_path / "spec.json"), "-o",
                           str(tmp_path / "m.cephalon"), *[a for m in partial for a in ("--map", m)])
    assert r.returncode == 2
    error = r.stderr.splitlines()[0]
    assert "2 missing: heads.task_class.fc.weight [4, 16], heads.task_class.fc.bias [4]" in error
    assert "2 not in the spec: classifier.weight [4, 16], classifier.bias [4]" in error
    assert "--expected" in r.stderr and not (tmp_path / "m.cephalon").exists()


def test_expected_lists_the_names_and_shapes(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    r = run_cli_in_process("import", "--expected", "--spec", str(tmp_path / "spec.json"), "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    tensors = {t["name"]: t for t in json.loads((tmp_path / "e.json").read_text())["tensors"]}
    assert tensors["exits.0.fc.weight"]["shape"] == [4, 8]
    assert tensors["stages.1.plain.0.shortcut.0.weight"]["shape"] == [16, 8, 1, 1]
    assert tensors["adapters.image.body.1.num_batches_tracked"]["optional"] is True
    assert "heads.task_class.fc.weight" in r.stdout


@pytest.mark.parametrize("bad", ["module", "rule"])
def test_a_pickled_module_or_a_bad_rule_is_one_clean_line(tmp_path, bad):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    torch.save(_trained_users_net(), tmp_path / "whole.pt")  # the module, not its state_dict
    extra = ["--map", "no-equals-sign"] if bad == "rule" else []
    r = run_cli_in_process("import", str(tmp_path / "whole.pt"), "--spec", str(tmp_path / "spec.json"), "-o",
                           str(tmp_path / "m.cephalon"), *extra)
    assert r.returncode == 2 and "\x1b" not in r.stderr and "Traceback" not in r.stderr
    if bad == "module":
        assert "it pickles" in r.stderr and "UsersEarlyExitNet" in r.stderr
        assert "torch.save(model.state_dict(), PATH)" in r.stderr
    else:
        assert "expected OLD=NEW" in r.stderr
