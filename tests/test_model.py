import pytest
import torch
from conftest import balance_gates, make_net

from cephalon_edge.toolchain.model import CephalonNet
from cephalon_edge.toolchain.segments import build_segments
from cephalon_edge.toolchain.zoo import resnet50_exits_spec
from cephalon_edge.errors import UsageError


def test_threshold_zero_exits_first_for_every_sample(tiny_net):
    out = tiny_net.dynamic_forward(torch.randn(7, 1, 12, 12), thresholds=0.0)
    assert out.exit_index.tolist() == [0] * 7
    assert (out.experts == -1).all() and (out.gates == -1).all()  # nothing after exit0 ran
    static = tiny_net(torch.randn(1, 1, 12, 12))  # smoke the static view too
    assert len(static.exit_logits) == 4


def test_threshold_above_one_equals_static_full_depth(tiny_net):
    x = torch.randn(9, 1, 12, 12)
    balance_gates(tiny_net, x)
    out = tiny_net.dynamic_forward(x, thresholds=1.01, tasks=["aux"])
    static = tiny_net(x)
    assert out.exit_index.tolist() == [3] * 9
    torch.testing.assert_close(out.logits, static.exit_logits[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.tasks["aux"], static.tasks["aux"], atol=1e-5, rtol=1e-5)


def test_decisions_are_per_sample_in_a_batch(tiny_net):
    x = torch.randn(16, 1, 12, 12)
    balance_gates(tiny_net, x)
    batch = tiny_net.dynamic_forward(x, thresholds=1.01)
    gates = batch.gates[:, 0].tolist()
    assert 0 < sum(gates) < len(gates), "the gate should split this batch"
    assert len(set(batch.experts[:, 0].tolist())) > 1, "experts should differ across the batch"
    for i in range(len(x)):
        one = tiny_net.dynamic_forward(x[i:i + 1], thresholds=1.01)
        assert torch.equal(one.gates[0], batch.gates[i])
        assert torch.equal(one.experts[0], batch.experts[i])
        torch.testing.assert_close(one.logits[0], batch.logits[i], atol=1e-5, rtol=1e-5)


def test_mixed_exits_in_one_batch(tiny_net):
    x = torch.randn(32, 1, 12, 12)
    full = tiny_net.dynamic_forward(x, thresholds=1.01)
    with torch.no_grad():
        first = tiny_net(x).exit_logits[0].softmax(-1).amax(-1)
    thr = float(first.median())
    out = tiny_net.dynamic_forward(x, thresholds={"exit0": thr, "exit1": 1.01, "exit2": 1.01})
    early = first >= thr
    assert out.exit_index[early].tolist() == [0] * int(early.sum())
    assert out.exit_index[~early].tolist() == [3] * int((~early).sum())
    torch.testing.assert_close(out.logits[~early], full.logits[~early])
    with pytest.raises(UsageError, match="unknown exit 'exit9'"):
        tiny_net.dynamic_forward(x, thresholds={"exit9": 0.5})
    with pytest.raises(UsageError, match="unknown task"):
        tiny_net.dynamic_forward(x, tasks=["nope"])


def test_resnet50_exits_final_path_matches_published_macs():
    segs = build_segments(CephalonNet(resnet50_exits_spec()))
    final = segs.exit_paths()[-1]
    assert abs(final["cumulative_macs"] - 4.1e9) / 4.1e9 < 0.05
    assert final["cumulative_flops"] == 2 * final["cumulative_macs"]
    assert 25e6 < final["params"] < 28e6  # ResNet-50's 25.6M plus three linear exit heads


def test_macs_of_a_known_layer():
    net = make_net()
    segs = build_segments(net).parts
    adapter = segs["adapter.image"]
    # conv 3x3, 1 -> 8 channels, 12x12 output: 8*12*12*1*9 MACs
    assert adapter.macs == 8 * 12 * 12 * 9
    assert adapter.output_shapes == [(8, 12, 12)]
    gate = segs["gate1.1"]
    assert gate.macs == 12 and gate.output_shapes == [()]
    assert segs["moe2.gate"].output_shapes == [(3,)]


def test_one_dimensional_backbone():
    net = make_net(modalities=[{"name": "signal", "kind": "signal", "shape": [2, 40]}])
    x = torch.randn(5, 2, 40)
    out = net.dynamic_forward({"signal": x}, thresholds=1.01)
    assert out.logits.shape == (5, 5)
    torch.testing.assert_close(out.logits, net(x).exit_logits[-1], atol=1e-5, rtol=1e-5)
    with pytest.raises(UsageError, match="unknown modality 'image'"):
        net.dynamic_forward({"image": x})


def test_fused_segments_compute_what_their_parts_do():
    from cephalon_edge.toolchain.segments import part_feeds

    net = make_net()
    segs = build_segments(net)
    feeds = part_feeds(segs, {"image": torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(2))})
    fused = [seg for seg in segs if len(seg.parts) > 1]
    assert [s.name for s in fused] == ["adapter.image+stage0+exit0", "stage1+gate1.1", "stage2+moe2.gate",
                                       "stage3+head.class"]
    with torch.no_grad():
        for seg in fused:
            h = feeds[seg.parts[0].name]
            got = seg.module(h)
            for part in seg.parts[:-1]:
                h = part.module(h)
            decision = seg.parts[-1].module(h)
            want = (h, *(decision if isinstance(decision, tuple) else (decision,)))
            assert len(got) == len(want) == len(seg.outputs)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, atol=0, rtol=0)
    # what a conditional part needs stays a segment of its own
    assert {"block1.1", "block1.2", "moe2.expert0", "moe2.expert1", "moe2.expert2", "head.aux"} <= set(segs.segments)


def test_the_static_model_is_the_plain_network():
    from cephalon_edge.toolchain.segments import StaticModel

    net = make_net()
    x = torch.randn(3, 1, 12, 12)
    static = StaticModel(net)
    with torch.no_grad():
        out = static(x)
        full = net(x)
    assert static.output_names == ["class", "aux"] and len(out) == 2  # no exit heads
    torch.testing.assert_close(out[0], full.exit_logits[-1])
    torch.testing.assert_close(out[1], full.tasks["aux"])
    calls = []
    hooks = [head.register_forward_hook(lambda *a: calls.append(1)) for head in net.exits.values()]
    with torch.no_grad():
        static(x)
    for h in hooks:
        h.remove()
    assert calls == []  # not computed and dropped: not in the graph at all
