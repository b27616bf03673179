"""The EMA arithmetic: a hand-computed two-step example, decay 0 = the weights exactly, fp32 from any dtype; the
shard format assembles full parameters from fragments; the swap for an evaluation restores the weights bit for
bit."""

from __future__ import annotations

import torch

from rewarm.averaging.ema import init_average, update_average
from rewarm.averaging.sources import ParamSource
from rewarm.averaging.state import FORMAT, assemble, fill_from


def test_two_steps_by_hand() -> None:
    theta1, theta2 = torch.tensor([1.0, 2.0, -4.0]), torch.tensor([3.0, -2.0, 0.5])
    avg = init_average([theta1], "same")  # the first update: avg = weights
    assert torch.equal(avg[0], theta1) and avg[0].data_ptr() != theta1.data_ptr()
    update_average(avg, [theta2], 0.25)  # 0.25 * theta1 + 0.75 * theta2
    assert torch.allclose(avg[0], torch.tensor([2.5, -1.0, -0.625]), rtol=0, atol=1e-7)


def test_decay_zero_is_the_weights_and_bf16_sources_average_in_fp32() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    avg = init_average([a], "cpu")
    update_average(avg, [b], 0.0)
    assert torch.equal(avg[0], b)
    low = b.to(torch.bfloat16)
    avg = init_average([low], "same")
    assert avg[0].dtype == torch.float32
    update_average(avg, [a.to(torch.bfloat16)], 0.5)
    expected = 0.5 * low.float() + 0.5 * a.to(torch.bfloat16).float()
    assert torch.allclose(avg[0], expected, rtol=0, atol=1e-6)


def test_shards_assemble_full_parameters() -> None:
    full = torch.arange(10, dtype=torch.float32)
    flat0, flat1 = torch.cat([full[:6], torch.zeros(1)]), torch.cat([full[6:], torch.zeros(3)])  # padded partitions
    frag = {"shape": [2, 5], "buffer": 0}
    shards = [{"format": FORMAT, "buffers": [flat0], "fragments": {"w": {**frag, "start": 0, "offset": 0, "numel": 6}}},
              {"format": FORMAT, "buffers": [flat1], "fragments": {"w": {**frag, "start": 6, "offset": 0, "numel": 4}}}]
    assert torch.equal(assemble(shards)["w"], full.view(2, 5))


def test_swap_in_and_restore_is_exact() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = ParamSource(model, world_size=1, rank=0, device="same")
    avg = [torch.full_like(t, 0.5) for t in source.tensors()]
    source.swap_in(avg)
    assert all(torch.equal(p, torch.full_like(p, 0.5)) for p in model.parameters())
    source.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    names = [n for n, _ in model.named_parameters()]
    assert sorted(source.fragments()) == sorted(names)


def test_reshard_from_another_world_size() -> None:
    """Two ranks' padded ZeRO-like partitions of a (2, 5) and a (3,) parameter, read into three ranks' DDP-like
    full buffers and into one rank's FSDP-like row shard, one saved shard at a time."""
    w, b = torch.arange(10, dtype=torch.float32), torch.tensor([10.0, 11.0, 12.0])
    flat = torch.cat([w, b, torch.zeros(1)])  # 13 elements + 1 padding, partitions of 7
    frag = {"w": {"shape": [2, 5], "buffer": 0}, "b": {"shape": [3], "buffer": 0}}
    old = [{"format": FORMAT, "buffers": [flat[:7].clone()],
            "fragments": {"w": {**frag["w"], "start": 0, "offset": 0, "numel": 7}}},
           {"format": FORMAT, "buffers": [flat[7:].clone()],
            "fragments": {"w": {**frag["w"], "start": 7, "offset": 0, "numel": 3},
                          "b": {**frag["b"], "start": 0, "offset": 3, "numel": 3}}}]
    full = {"w": {**frag["w"], "buffer": 0, "start": 0, "offset": 0, "numel": 10},
            "b": {**frag["b"], "buffer": 1, "start": 0, "offset": 0, "numel": 3}}
    buffers = [torch.zeros(2, 5), torch.zeros(3)]
    assert sum(fill_from(buffers, full, shard) for shard in old) == 13
    assert torch.equal(buffers[0], w.view(2, 5)) and torch.equal(buffers[1], b)
    second_row = {"w": {**frag["w"], "buffer": 0, "start": 5, "offset": 0, "numel": 5}}  # rank 1 of 2, Shard(0)
    row = [torch.zeros(1, 5)]
    assert sum(fill_from(row, second_row, shard) for shard in old) == 5
    assert torch.equal(row[0], w[5:].view(1, 5))
