"""Training step and eval forward: simplelxmert's LXMERT vs transformers.LxmertModel, side by side in one run.

Both models hold the same weights (LXMERT.from_hf) and see the same batch: the seed configuration (hidden 256,
4 heads, 2/2/2 layers, vocab 30,522), B=32 pairs of 50 tokens (caption lengths drawn from 8..50, padded) and
36 boxes. A training step is forward + an image-text-matching loss on the pooled output (a Linear(D, 1) head and
BCE, as in chapter 04) + backward + AdamW, timed with both AdamW implementations (`--adamw both`, the default):
`fused` (`fused=True`, one kernel over all parameters, what chapter 04's trainer uses wherever it is supported: the
same update, and much less time over the 7.8M-number word-embedding table) and `plain`, the for-loop implementation
`torch.optim.AdamW` uses on a CPU by default. Each model always gets the same optimizer as the other.

Our model is timed on two paths:
- `ours pooled_only`: `model(..., pooled_only=True)`, the path for a loss that reads only the pooled output
  (real rows only, last cross layer for [CLS] alone; tested equal to the full forward's pooled output);
- `ours full`: `model(...)`, every output computed (language, vision, pooled), as Hugging Face's forward does.
Timings alternate between the contenders (the order reversed every round) and the medians are reported, so that
load from other processes hits all alike; the ratio to Hugging Face is also taken within each round (its median and
spread printed), where slow drifts of the machine's speed cancel. Both wall-clock time and the process's CPU time
are measured: on a shared machine with --threads 1, CPU time does not count the time the process waited for a core,
so it is the steadier figure of the work each step costs. The step's achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter,
per path) is printed next to a large float32 matmul's on the same machine, and chapter 02's dropout (its mask made of
15-bit random integers, four to a 64-bit draw: appendix A2) is timed against the same dropout with a mask drawn by torch.rand (a
32-bit draw per number) and against F.dropout (PyTorch's Bernoulli sampler) on one [real words, hidden] tensor.
Last, torch.profiler splits five more steps of each contender (the last AdamW timed; alternating again) into where
the time goes: the dense layers' matrix products (with their GFLOP/s, from the FLOP count of those products alone),
attention's batched products, the dropout masks' random numbers, AdamW, the embedding table's dense gradient, the rest.

    python bench/bench_model.py --threads 1 [--batch 32] [--tokens 50] [--boxes 36] [--repeats 9] [--adamw both|plain|fused] [--device cpu] [--save FILE.json]

It prints its tables (Markdown) and, with --save, writes every figure to a JSON file; appendix A2 shows the tables of
bench/results/bench_model.json, written by the command recorded in it (`report` renders them).
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path
from collections import Counter
import torch, torch.profiler
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
import transformers
from simplelxmert.attention import dropout
from simplelxmert.encoders import LXMERT, LXMERTConfig, hf_inputs


def make_batch(config, B, T, K, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, T + 1, (B,), generator=g); lengths[0] = T
    attention_mask = (torch.arange(T)[None] < lengths[:, None]).long()
    xy = torch.rand(B, K, 2, generator=g) * 0.5
    batch = dict(input_ids=torch.randint(1, config.vocab_size, (B, T), generator=g) * attention_mask,
                 attention_mask=attention_mask, token_type_ids=torch.zeros(B, T, dtype=torch.long),
                 visual_feats=torch.randn(B, K, config.visual_feat_dim, generator=g),
                 visual_pos=torch.cat([xy, xy + 0.5 * torch.rand(B, K, 2, generator=g)], -1),
                 visual_mask=torch.ones(B, K, dtype=torch.long))
    labels = torch.randint(0, 2, (B,), generator=g).float()
    return {k: v.to(device) for k, v in batch.items()}, labels.to(device)


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def make_step(model, head, pooled, labels, fused_adamw=False):
    "One training step: forward (`pooled()` → pooled output), ITM loss, backward, AdamW."
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=fused_adamw or None)
    def step():
        model.train()
        logits = head(pooled()).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss
    return step


def make_eval(model, pooled):
    def forward():
        model.eval()
        with torch.inference_mode(): return pooled()
    return forward


def timed(fn, device):
    "Wall-clock and CPU seconds of one call."
    sync(device); t, c = time.perf_counter(), time.process_time(); fn(); sync(device)
    return time.perf_counter() - t, time.process_time() - c


def interleaved_medians(fns, repeats, device):
    "Alternate the functions (A B C, then C B A, ...); return each one's median wall time, median CPU time, all wall times."
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]): times[k].append(timed(fns[k], device))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    return wall, cpu, {k: [w for w, _ in v] for k, v in times.items()}


def flop_counts(step):
    "FLOPs of one call of `step`, by aten op: `mm` and `addmm` (the dense layers), `bmm` (attention's products), ..."
    with FlopCounterMode(display=False) as fc: step()
    return {str(op).split(".")[-1]: n for op, n in fc.get_flop_counts()["Global"].items()}


def matmul_gflops(device, n=2048, repeats=5):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = min(timed(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def dropout_ms(shape, p, repeats, device, calls=20):
    "Milliseconds per call of chapter 02's `dropout` (15-bit integers, four to a 64-bit draw), of the same inverted dropout with a `torch.rand` mask, and of `F.dropout`, interleaved."
    x = torch.randn(*shape, device=device)
    fns = {"ours": lambda: [dropout(x, p) for _ in range(calls)],
           "torch.rand": lambda: [x * torch.rand_like(x).ge_(p).div_(1 - p) for _ in range(calls)],
           "F.dropout": lambda: [F.dropout(x, p, training=True) for _ in range(calls)]}
    for f in fns.values(): f()
    wall, _, _ = interleaved_medians(fns, repeats, device)
    return {k: t / calls * 1e3 for k, t in wall.items()}


CATEGORIES = {"aten::mm": "dense layers (mm, addmm)", "aten::addmm": "dense layers (mm, addmm)",
              "aten::bmm": "attention products (bmm)",
              "aten::random_": "dropout random numbers", "aten::uniform_": "dropout random numbers",
              "aten::bernoulli_": "dropout random numbers"}   # self time
SUBTREES = {"Optimizer.step#AdamW.step": "AdamW", "aten::embedding_dense_backward": "embedding-table gradient"}   # with children


def time_breakdown(step):
    "Profiled CPU milliseconds of one call of `step`, by category: `CATEGORIES` (ops' own time), `SUBTREES` (with their children), the rest."
    with torch.profiler.profile() as prof: step()
    events = prof.key_averages()
    us = {c: 0.0 for c in [*dict.fromkeys(CATEGORIES.values()), *SUBTREES.values()]}
    for e in events:
        if e.key in CATEGORIES: us[CATEGORIES[e.key]] += e.self_cpu_time_total
        if e.key in SUBTREES: us[SUBTREES[e.key]] += e.cpu_time_total
    total = sum(e.self_cpu_time_total for e in events)
    us["everything else"] = total - sum(us.values())
    us["total (profiled)"] = total
    return {k: v / 1e3 for k, v in us.items()}


def category_flops(counts):
    "FLOPs by op (`flop_counts`) → FLOPs by the `CATEGORIES` of `time_breakdown` that have any (dense layers, attention)."
    out = {}
    for op, n in counts.items():
        c = CATEGORIES.get(f"aten::{op}")
        if c: out[c] = out.get(c, 0) + n
    return out


def interleaved_breakdowns(fns, rounds):
    "Each function's `time_breakdown`, alternating between them as the timings do; the mean over rounds (it keeps the sum)."
    sums, names = {k: Counter() for k in fns}, list(fns)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]): sums[k].update(time_breakdown(fns[k]))
    return {k: {c: v / rounds for c, v in s.items()} for k, s in sums.items()}


NAMES = {"hf": "Hugging Face", "ours pooled_only": "ours, `pooled_only`", "ours full": "ours, full outputs"}
ADAMW = {"fused": "fused AdamW (chapter 04's)", "plain": "for-loop AdamW (a CPU's default)"}


def run(args, command):
    "Time, count and profile every contender → a dict of plain numbers (JSON-ready); `report` renders it."
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = LXMERTConfig()
    torch.manual_seed(0)
    hf = transformers.LxmertModel(config.to_hf()).to(device)
    ours = LXMERT.from_hf(hf).to(device)
    heads = {k: nn.Linear(config.hidden_size, 1).to(device) for k in NAMES}
    for h in heads.values(): h.load_state_dict(heads["hf"].state_dict())
    batch, labels = make_batch(config, args.batch, args.tokens, args.boxes, device)
    pooled = {"hf": lambda: hf(**hf_inputs(batch)).pooled_output,
              "ours pooled_only": lambda: ours(**batch, pooled_only=True).pooled_output,
              "ours full": lambda: ours(**batch).pooled_output}
    models = {"hf": hf, "ours pooled_only": ours, "ours full": ours}
    adamws = ["fused", "plain"] if args.adamw == "both" else [args.adamw]
    steps = {(k, a): make_step(models[k], heads[k], pooled[k], labels, a == "fused") for a in adamws for k in pooled}
    evals = {k: make_eval(models[k], pooled[k]) for k in pooled}
    for fns in (steps, evals):                       # warm up
        for f in fns.values(): f(); f()
    step_t, step_cpu, step_all = interleaved_medians(steps, args.repeats, device)
    eval_t, eval_cpu, _ = interleaved_medians(evals, args.repeats, device)
    counts = {k: flop_counts(steps[k, adamws[0]]) for k in pooled}        # the same whichever AdamW
    n_real = int(batch["attention_mask"].sum())
    per_adamw = lambda d: {a: {k: d[k, a] for k in pooled} for a in adamws}
    return dict(command=command, cpus=os.cpu_count(), threads=torch.get_num_threads(), device=str(device),
                torch=torch.__version__, transformers=transformers.__version__, batch=args.batch, tokens=args.tokens,
                real_words=n_real, boxes=args.boxes, repeats=args.repeats,
                parameters=sum(p.numel() for p in ours.parameters()),
                step=per_adamw(step_t), step_cpu=per_adamw(step_cpu), step_rounds=per_adamw(step_all),
                eval=eval_t, eval_cpu=eval_cpu, flops={k: sum(c.values()) for k, c in counts.items()},
                category_flops={k: category_flops(c) for k, c in counts.items()}, matmul_gflops=matmul_gflops(device),
                dropout=dropout_ms((n_real, config.hidden_size), config.hidden_dropout_prob, args.repeats, device),
                breakdown_adamw=adamws[0], breakdown=interleaved_breakdowns({k: steps[k, adamws[0]] for k in pooled}, rounds=5))


def per_round(r, adamw):
    "The ratio HF / ours pooled_only within each round of `r['step_rounds']`: (median, middle half low, high)."
    rounds = r["step_rounds"][adamw]
    x = sorted(h / o for h, o in zip(rounds["hf"], rounds["ours pooled_only"]))
    return statistics.median(x), x[len(x) // 4], x[(3 * len(x)) // 4]


def report(r):
    "The results of `run` as Markdown: what ran where, the timing table, the time split, dropout's cost."
    ours, threads = ("ours pooled_only", "ours full"), f"{r['threads']} thread" + ("s" if r["threads"] > 1 else "")
    lines = [f"`{r['command']}`: on a {r['cpus']}-core CPU ({r['device']}, {threads}; torch {r['torch']}, transformers "
             f"{r['transformers']}), the seed configuration ({r['parameters'] / 1e6:.1f}M parameters), medians of "
             f"{r['repeats']} rounds that alternate the contenders.", "",
             f"| {r['batch']} pairs × {r['tokens']} tokens ({r['real_words']:,} real) × {r['boxes']} boxes | "
             + " | ".join(NAMES.values()) + " |", "|---|---|---|---|"]
    def cells(t):
        return [f"{t['ours pooled_only']:.2f} s: **{t['hf'] / t['ours pooled_only']:.2f}×**", f"{t['ours full']:.2f} s: {t['hf'] / t['ours full']:.2f}×"]
    cpu = "| … its CPU time (the process's; no waiting for a core) | {:.2f} s | {} |"
    for a, t in r["step"].items():
        (med, lo, hi), c = per_round(r, a), cells(t)
        c[0] += f" (per round: median {med:.2f}×, middle half {lo:.2f}–{hi:.2f}×)"
        lines.append(f"| training step, {ADAMW[a]} | {t['hf']:.2f} s | " + " | ".join(c) + " |")
        lines.append(cpu.format(r["step_cpu"][a]["hf"], " | ".join(cells(r["step_cpu"][a]))))
    lines += [f"| eval forward | {r['eval']['hf']:.2f} s | " + " | ".join(cells(r["eval"])) + " |",
              cpu.format(r["eval_cpu"]["hf"], " | ".join(cells(r["eval_cpu"]))), ""]
    lines += [f"| where a training step's time goes, ms ({r['breakdown_adamw']} AdamW; profiler overhead included) | "
              + " | ".join(NAMES.values()) + " | HF / `pooled_only` |", "|---|---|---|---|---|"]
    split, cf = r["breakdown"], r["category_flops"]
    for c in split["hf"]:
        row = []
        for k in NAMES:
            t, g = split[k][c], cf[k].get(c)
            row.append(f"{t:.0f}" + (f" ({g / 1e9:.1f} GFLOP at {g / t / 1e6:.1f} GFLOP/s)" if g else ""))
        ratio = split["hf"][c] / split["ours pooled_only"][c] if split["ours pooled_only"][c] > 0 else float("nan")
        lines.append(f"| {c} | " + " | ".join(row) + f" | {ratio:.2f}× |")
    d = r["dropout"]
    lines += ["", "A training step's FLOPs: " + "; ".join(f"{NAMES[k]} {v / 1e9:.1f} GFLOP" for k, v in r["flops"].items())
              + f". A 2048³ float32 matmul: {r['matmul_gflops']:.0f} GFLOP/s. Dropout (p = 0.1) on a [{r['real_words']:,}, 256] tensor, "
              f"ms per call: 15-bit mask {d['ours']:.2f}, `torch.rand` mask {d['torch.rand']:.2f} ({d['torch.rand'] / d['ours']:.1f}×), "
              f"`F.dropout` {d['F.dropout']:.2f} ({d['F.dropout'] / d['ours']:.1f}×)."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32); p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--boxes", type=int, default=36); p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--adamw", choices=["both", "plain", "fused"], default="both",
                   help="AdamW implementation(s) to time, the same for every model (fused: chapter 04's; plain: torch's CPU default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--save", default=None, metavar="FILE.json", help="also write every figure to this JSON file")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    results = run(args, " ".join(["python bench/bench_model.py", *argv]))
    print(report(results))
    print("all step times (s):", {f"{k} / {a}": [round(t, 2) for t in v] for a, d in results["step_rounds"].items() for k, v in d.items()})
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
