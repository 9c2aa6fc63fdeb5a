"""Does the ITM data pipeline keep up with the model? Loader time per batch next to one LXMERT training step.

Same ShapesWorld captions and batches, one run; prints milliseconds per batch and the ratio loader / step, for
the toy store (K=3, D=48) and a Flickr30k-shaped store (K=36, D=1024, random features for the same images).
    python bench/bench_dataset.py [--n-images 500] [--batch-size 64] [--batches 20] [--workers 0 2] [--hard-neg-prob 0.5]
With workers 0 the loader's time adds to every step; with workers it overlaps with the step, and the model only
waits if the loader is slower than the step (ratio > 1 / workers).
"""
import argparse, os, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from simplelxmert.dataset import ITMDataset, collate_itm, make_toy_data
from simplelxmert.encoders import LXMERT, LXMERTConfig
from simplelxmert.features import FeatureStoreWriter


def flickr_shaped_store(path, ids, k=36, dim=1024, seed=0):
    "Random features of Flickr30k's shape for `ids` (what a detector store holds), so reading costs the same."
    rng = np.random.default_rng(seed)
    with FeatureStoreWriter(path, k, dim, {"extractor": "random-bench", "k": k}) as w:
        for i in ids:
            w.add(i, rng.standard_normal((k, dim), dtype=np.float32), rng.random((k, 4), dtype=np.float32), np.ones(k, bool))
    return path


def loader_ms_per_batch(ds, batch_size, workers, batches):
    dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_itm,
                    generator=torch.Generator().manual_seed(0))
    it = iter(dl); next(it)                       # start-up (worker launch) is not per batch
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try: next(it); n += 1
        except StopIteration: break
    return 1000 * (time.perf_counter() - t0) / max(n, 1)


def step_ms(batch, vocab_size, dim, steps):
    torch.manual_seed(0)
    model = LXMERT(LXMERTConfig(vocab_size=vocab_size, visual_feat_dim=dim))
    head = torch.nn.Linear(model.config.hidden_size, 1)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    def step():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["visual_feats"],
                    batch["visual_pos"], batch["visual_mask"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(out.pooled_output).squeeze(-1), batch["label"])
        opt.zero_grad(); loss.backward(); opt.step()
    step()                                         # warm-up
    t0 = time.perf_counter()
    for _ in range(steps): step()
    return 1000 * (time.perf_counter() - t0) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--hard-neg-prob", type=float, default=0.5)
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    toy = make_toy_data(tmp/"toy", n_images=a.n_images, seed=0)
    recs, scenes, tok = toy.records("train"), toy.scenes(), toy.tokenizer()
    stores = {"toy K=3 D=48": (toy.store_path, 48),
              "flickr-shaped K=36 D=1024": (flickr_shaped_store(tmp/"flickr", [s.image_id for s in scenes]), 1024)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, batch {a.batch_size}, "
          f"{len(recs)} training captions, hard_neg_prob {a.hard_neg_prob}")
    for name, (store, dim) in stores.items():
        t0 = time.perf_counter()
        ds = ITMDataset(recs, store, tok, hard_neg_prob=a.hard_neg_prob, scenes=scenes, seed=0)
        t_init = time.perf_counter() - t0
        t0 = time.perf_counter(); ds.set_epoch(1); t_epoch = time.perf_counter() - t0
        batch = collate_itm([ds[i] for i in range(a.batch_size)])
        model_ms = step_ms(batch, len(tok), dim, steps=5)
        print(f"\n{name}: dataset init {t_init * 1000:.0f} ms, set_epoch {t_epoch * 1000:.0f} ms; "
              f"LXMERT (seed config) train step {model_ms:.1f} ms/batch")
        for w in a.workers:
            ms = loader_ms_per_batch(ds, a.batch_size, w, a.batches)
            print(f"  workers {w}: loader {ms:.2f} ms/batch = {ms / model_ms:.3f} x the training step")


if __name__ == "__main__":
    main()
