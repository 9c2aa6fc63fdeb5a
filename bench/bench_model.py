"""Training step and eval forward: simplelxmert's LXMERT vs transformers.LxmertModel, side by side in one run.

Both models hold the same weights (LXMERT.from_hf) and see the same batch: the seed configuration (hidden 256,
4 heads, 2/2/2 layers, vocab 30,522), B=32 pairs of 50 tokens (caption lengths drawn from 8..50, padded) and
36 boxes. A training step is forward + an image-text-matching loss on the pooled output (a Linear(D, 1) head and
BCE, as in chapter 04) + backward + AdamW. Timings alternate between the models (ABBA order) and the medians
are reported, so that load from other processes hits both alike. The step's achieved GFLOP/s (FLOPs counted
by torch.utils.flop_counter) is printed next to a large float32 matmul's on the same machine.

    python bench/bench_model.py [--batch 32] [--tokens 50] [--boxes 36] [--repeats 9] [--threads N] [--device cpu]
"""
import argparse, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
import transformers
from simplelxmert.encoders import LXMERT, LXMERTConfig


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


def hf_inputs(batch):
    "Hugging Face names the visual mask `visual_attention_mask`."
    b = dict(batch); b["visual_attention_mask"] = b.pop("visual_mask"); return b


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def make_step(model, head, inputs, labels):
    "One training step: forward, ITM loss on the pooled output, backward, AdamW."
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    def step():
        model.train()
        logits = head(model(**inputs).pooled_output).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss
    return step


def make_eval(model, inputs):
    def forward():
        model.eval()
        with torch.inference_mode(): return model(**inputs).pooled_output
    return forward


def timed(fn, device):
    sync(device); t = time.perf_counter(); fn(); sync(device)
    return time.perf_counter() - t


def interleaved_medians(fns, repeats, device):
    "Alternate the functions (A B, then B A, ...) and return each one's median time."
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]): times[k].append(timed(fns[k], device))
    return {k: statistics.median(v) for k, v in times.items()}, times


def step_flops(step):
    with FlopCounterMode(display=False) as fc: step()
    return fc.get_total_flops()


def matmul_gflops(device, n=2048, repeats=5):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32); p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--boxes", type=int, default=36); p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = LXMERTConfig()
    torch.manual_seed(0)
    hf = transformers.LxmertModel(config.to_hf()).to(device)
    ours = LXMERT.from_hf(hf).to(device)
    head_hf = nn.Linear(config.hidden_size, 1).to(device)
    head_ours = nn.Linear(config.hidden_size, 1).to(device); head_ours.load_state_dict(head_hf.state_dict())
    batch, labels = make_batch(config, args.batch, args.tokens, args.boxes, device)
    steps = {"ours": make_step(ours, head_ours, batch, labels), "hf": make_step(hf, head_hf, hf_inputs(batch), labels)}
    evals = {"ours": make_eval(ours, batch), "hf": make_eval(hf, hf_inputs(batch))}
    print(f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"batch {args.batch} x {args.tokens} tokens (lengths 8..{args.tokens}) x {args.boxes} boxes, "
          f"{sum(p.numel() for p in ours.parameters()) / 1e6:.1f}M parameters; HF attention: "
          f"{getattr(hf.config, '_attn_implementation', None)!r} (LXMERT's modeling code has no SDPA path)")
    for fns in (steps, evals):                       # warm up
        for f in fns.values(): f(); f()
    step_t, step_all = interleaved_medians(steps, args.repeats, device)
    eval_t, eval_all = interleaved_medians(evals, args.repeats, device)
    flops = step_flops(steps["ours"])
    mm = matmul_gflops(device)
    print(f"{'':14s}{'ours':>10s}{'HF':>10s}{'HF/ours':>10s}")
    print(f"{'train step':14s}{step_t['ours']*1e3:8.0f}ms{step_t['hf']*1e3:8.0f}ms{step_t['hf']/step_t['ours']:9.2f}x")
    print(f"{'eval forward':14s}{eval_t['ours']*1e3:8.0f}ms{eval_t['hf']*1e3:8.0f}ms{eval_t['hf']/eval_t['ours']:9.2f}x")
    print(f"train step: {flops/1e9:.1f} GFLOP -> ours {flops/step_t['ours']/1e9:.1f} GFLOP/s, HF {flops/step_t['hf']/1e9:.1f} GFLOP/s; "
          f"{2048}^3 float32 matmul: {mm:.1f} GFLOP/s")
    print("all step times (s):", {k: [round(t, 3) for t in v] for k, v in step_all.items()})
    return step_t, eval_t


if __name__ == "__main__":
    main()
