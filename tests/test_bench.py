"The accounting bench/bench_model.py prints: FLOPs by operation, the profiled time split of a step, and its report."
import json, sys
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


def fake_results():
    "What `bench_model.run` returns, with round numbers."
    names = ("hf", "ours pooled_only", "ours full")
    t = dict(zip(names, (0.9, 0.6, 0.85)))
    parts = [*dict.fromkeys(bench_model.CATEGORIES.values()), *bench_model.SUBTREES.values(), "everything else"]
    split = {k: {**{c: 10.0 for c in parts}, "total (profiled)": 10.0 * len(parts)} for k in names}
    return dict(command="python bench/bench_model.py --threads 1", cpus=2, threads=1, device="cpu", torch="2.x", transformers="5.x",
                batch=32, tokens=50, real_words=1089, boxes=36, repeats=3, parameters=15_100_000,
                step={"fused": t}, step_cpu={"fused": t}, step_rounds={"fused": {k: [v, v, v] for k, v in t.items()}},
                eval=t, eval_cpu=t, flops={k: 5e10 for k in names}, category_flops={k: {"dense layers (mm, addmm)": 4e10} for k in names},
                matmul_gflops=90.0, dropout={"ours": 0.5, "torch.rand": 1.0, "F.dropout": 2.0}, breakdown_adamw="fused", breakdown=split)


def test_report_renders_the_saved_results():
    "The tables appendix A2 shows come from the JSON file `--save` writes: the command, the machine in one phrase, the ratios."
    r = json.loads(json.dumps(fake_results()))          # what --save writes and A2 reads back
    md = bench_model.report(r)
    assert md.startswith("`python bench/bench_model.py --threads 1`: on a 2-core CPU (cpu, 1 thread;")
    assert ("| training step, fused AdamW (chapter 04's) | 0.90 s | 0.60 s: **1.50×** (per round: median 1.50×, "
            "middle half 1.50–1.50×) | 0.85 s: 1.06× |") in md
    assert "| … its CPU time (the process's; no waiting for a core) | 0.90 s | 0.60 s: **1.50×** | 0.85 s: 1.06× |" in md
    assert "| dense layers (mm, addmm) | 10 (40.0 GFLOP at 4000.0 GFLOP/s) |" in md
    assert "`torch.rand` mask 1.00 (2.0×), `F.dropout` 2.00 (4.0×)" in md
    assert bench_model.per_round(r, "fused") == pytest.approx((1.5, 1.5, 1.5))
