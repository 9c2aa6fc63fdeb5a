"The accounting bench/bench_model.py prints: FLOPs by operation and the profiled time split of a step."
import sys
from pathlib import Path
import pytest, torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_model


def tiny_step(attention=False, fused=False):
    "Embedding → Linear(8, 4) → dropout (→ q kᵀ when `attention`) → loss; backward; AdamW."
    torch.manual_seed(0)
    emb, lin = nn.Embedding(10, 8), nn.Linear(8, 4)
    ids = torch.randint(0, 10, (5,))
    opt = torch.optim.AdamW([*emb.parameters(), *lin.parameters()], fused=fused or None)
    def step():
        h = F.dropout(lin(emb(ids)), 0.1, training=True)                       # [5, 4]
        if attention: h = torch.bmm(h[None], h[None].transpose(1, 2))         # [1, 5, 5]
        opt.zero_grad(); h.square().sum().backward(); opt.step()
    return step


def dense(counts): return bench_model.category_flops(counts)["dense layers (mm, addmm)"]


def test_flop_counts_by_op():
    counts = bench_model.flop_counts(tiny_step())
    assert dense(counts) == 3 * (2 * 5 * 8 * 4)   # forward x Wᵀ; backward dW = dyᵀ x and, for the embedding's gradient, dx = dy W
    assert "bmm" not in counts and set(bench_model.category_flops(counts)) == {"dense layers (mm, addmm)"}
    counts = bench_model.flop_counts(tiny_step(attention=True))
    assert counts["bmm"] == 3 * (2 * 5 * 4 * 5)    # forward h hᵀ and its two gradients


def test_flop_counts_dx_only_where_needed():
    "No input gradient for a leaf input without requires_grad: only forward and dW."
    lin = nn.Linear(8, 4); x = torch.randn(5, 8)
    assert dense(bench_model.flop_counts(lambda: lin(x).sum().backward())) == 2 * (2 * 5 * 8 * 4)


@pytest.mark.parametrize("fused", [False, True])
def test_time_breakdown_splits_the_whole_profile(fused):
    split = bench_model.time_breakdown(tiny_step(attention=True, fused=fused))
    parts = {k: v for k, v in split.items() if k != "total (profiled)"}
    assert set(parts) == {*bench_model.CATEGORIES.values(), *bench_model.SUBTREES.values(), "everything else"}
    assert all(v > 0 for v in parts.values()), split   # each category was seen, and nothing was counted twice
    assert sum(parts.values()) == pytest.approx(split["total (profiled)"])


def test_interleaved_breakdowns_average_each_function_alone():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    split = bench_model.interleaved_breakdowns(fns, rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert set(split) == {"a", "b"} and all(v["total (profiled)"] >= 0 for v in split.values())
