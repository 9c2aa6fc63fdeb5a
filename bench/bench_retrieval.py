"""Exhaustive image-text retrieval scoring: the cached path against the naive full forward, side by side in one run.

naive        : the whole ITM model on every (image, caption) pair
cached, full : each caption / image encoded once (encode_language / encode_vision), `lxmert.cross` per pair
cached, [CLS]: the same, with the last cross layer computing only what the pooled [CLS] output needs (match_pooled)

Two settings: the shipped toy checkpoint on fresh ShapesWorld scenes (3 boxes, ~12 tokens), and a random-weight
model at the seed configuration (hidden 256, 1024-d features, 36 boxes, 20 tokens). Every path is checked equal to
the naive one (max |difference| printed). Timings are the best of --repeats alternating runs, both wall-clock and CPU
time of this process (with 1 torch thread, CPU time leaves out the time other programs hold the CPU: the steadier
figure on a shared machine).

    .venv/bin/python bench/bench_retrieval.py [--images 20] [--captions-per-image 5] [--repeats 5] [--threads 1]
"""
import argparse, platform, tempfile, time
from pathlib import Path
import numpy as np, torch
from simplelxmert.inference import (Predictor, caption_batch, region_batch, encode_texts, encode_images, cached_scores,
                                    naive_scores, TOY_CHECKPOINT)
from simplelxmert.dataset import make_toy_data, image_id
from simplelxmert.encoders import LXMERTConfig
from simplelxmert.training import ITMModel


def toy_setting(n_images, per_image, checkpoint="toy"):
    toy = make_toy_data(Path(tempfile.mkdtemp())/"toy", n_images=max(n_images, 10), seed=1)
    store, recs = toy.store(), toy.records()
    if checkpoint != "toy" or (TOY_CHECKPOINT/"model.safetensors").exists():
        pred = Predictor.from_pretrained(checkpoint, device="cpu"); model, tok, max_len = pred.model, pred.tokenizer, pred.max_len
    else:                                           # no shipped checkpoint: random weights of the toy size time the same
        print("(no shipped toy checkpoint: random weights at the toy size, hidden 128, 2/2/2 layers)")
        tok, max_len = toy.tokenizer(), 32
        model = ITMModel(LXMERTConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=512, visual_feat_dim=store.dim)).eval()
    images = sorted({r.image for r in recs})[:n_images]
    caps = [r.caption for im in images for r in [x for x in recs if x.image == im][:per_image]]
    return model, caption_batch(tok, caps, max_len), region_batch([store[image_id(im)] for im in images])


def seed_setting(n_images, per_image, T=20, K=36, seed=0):
    g = torch.Generator().manual_seed(seed); cfg = LXMERTConfig()
    model = ITMModel(cfg).eval()
    N = n_images * per_image
    ids = torch.randint(5, cfg.vocab_size, (N, T), generator=g); lens = torch.randint(8, T + 1, (N,), generator=g)
    am = (torch.arange(T)[None] < lens[:, None]).long(); ids = ids * am
    nb = torch.randint(10, K + 1, (n_images,), generator=g); vm = (torch.arange(K)[None] < nb[:, None]).long()
    xy = torch.rand(n_images, K, 2, generator=g) * 0.5
    vis = {"visual_feats": torch.rand(n_images, K, cfg.visual_feat_dim, generator=g) * vm[..., None],
           "visual_pos": torch.cat([xy, xy + 0.3], -1) * vm[..., None], "visual_mask": vm}
    return model, {"input_ids": ids, "attention_mask": am, "token_type_ids": torch.zeros_like(ids)}, vis


def run(name, model, text, vis, repeats, batch_size):
    M, N = len(vis["visual_feats"]), len(text["input_ids"])
    paths = {"naive": lambda: naive_scores(model, text, vis, batch_size),
             "cached, full cross": lambda: cached_scores(model, encode_texts(model, text), encode_images(model, vis), batch_size, cls_only=False),
             "cached, [CLS]-only last layer": lambda: cached_scores(model, encode_texts(model, text), encode_images(model, vis), batch_size)}
    best, cpu, out = {k: float("inf") for k in paths}, {k: float("inf") for k in paths}, {}
    for _ in range(repeats):                          # alternate the paths so that load changes hit them alike
        for k, f in paths.items():
            t0, c0 = time.perf_counter(), time.process_time(); out[k] = f()
            best[k], cpu[k] = min(best[k], time.perf_counter() - t0), min(cpu[k], time.process_time() - c0)
    print(f"\n{name}: {M} images x {N} captions = {M * N} pairs, hidden {model.config.hidden_size}, "
          f"{model.config.x_layers} cross layers, T={text['input_ids'].shape[1]}, K={vis['visual_feats'].shape[1]}")
    for k in paths:
        diff = np.abs(out[k] - out["naive"]).max()
        print(f"  {k:<30} wall {best[k]:6.2f} s {M * N / best[k]:7.0f} pairs/s x{best['naive'] / best[k]:.2f} | "
              f"CPU {cpu[k]:6.2f} s {M * N / cpu[k]:7.0f} pairs/s x{cpu['naive'] / cpu[k]:.2f} | max|diff| {diff:.1e}")
    worst = max(np.abs(out[k] - out["naive"]).max() for k in paths)
    if worst > 1e-4: raise SystemExit(f"bench_retrieval: a cached path differs from the naive one by {worst:.1e} (> 1e-4)")
    k = "cached, [CLS]-only last layer"
    return best["naive"] / best[k], cpu["naive"] / cpu[k]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=20); p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5); p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--checkpoint", default="toy", help="checkpoint of the first setting (default: the shipped toy one)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: these matrices are small)")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"bench_retrieval on {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    with torch.no_grad():
        r1 = run("toy model, fresh ShapesWorld scenes", *toy_setting(a.images, a.captions_per_image, a.checkpoint), a.repeats, a.batch_size)
        r2 = run("seed config (random weights)", *seed_setting(max(a.images // 2, 2), a.captions_per_image), a.repeats, a.batch_size)
    print(f"\ncached ([CLS]-only) vs naive, wall-clock: x{r1[0]:.2f} (toy), x{r2[0]:.2f} (seed config); "
          f"CPU time: x{r1[1]:.2f} (toy), x{r2[1]:.2f} (seed config)")


if __name__ == "__main__": main()
