"""Reading region features through a DataLoader: one memory-mapped FeatureStore vs one .pt file per image (the seed's layout).

Same records (random, K x D like Flickr30k's 36 x 1024), same DataLoader settings, one run; prints samples/s and the ratio.
    python bench/bench_features.py [--n 2000] [--k 36] [--dim 1024] [--batch-size 32] [--workers 0 2] [--epochs 2]
With the store a batch is one memory-mapped gather, so DataLoader workers are not needed (workers 0); with workers,
both layouts also pay the DataLoader's inter-process transfer of each batch.
"""
import argparse, os, shutil, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simplelxmert.store import FeatureStore, FeatureStoreWriter


class StoreDataset(Dataset):
    "The store: a batch of indices is one memory-mapped gather (`__getitems__`), already batched."
    def __init__(self, path): self.store = FeatureStore(path)
    def __len__(self): return len(self.store)
    def __getitem__(self, i): return self.__getitems__([i])
    def __getitems__(self, idx):
        return tuple(torch.from_numpy(a) for a in self.store.get_batch([self.store.ids[i] for i in idx]))
    @staticmethod
    def collate(batch): return batch


class PtDataset(Dataset):
    "The seed's layout: features/<image_id>.pt holding a dict of tensors."
    def __init__(self, folder): self.files = sorted(Path(folder).glob("*.pt"))
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        d = torch.load(self.files[i], weights_only=True)
        return d["feats"], d["boxes"], d["mask"]


def samples_per_second(ds, batch_size, workers, epochs, seed=0):
    g = torch.Generator().manual_seed(seed)
    dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, generator=g, persistent_workers=workers > 0,
                    collate_fn=getattr(ds, "collate", None))
    n, checksum = 0, 0.0
    for epoch in range(epochs + 1):          # epoch 0 warms up (worker start, page cache); not timed
        if epoch == 1: t0 = time.perf_counter()
        for feats, boxes, mask in dl:
            if epoch >= 1: n += len(feats); checksum += float(feats[:, 0, 0].sum())
    return n / (time.perf_counter() - t0), checksum


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="images")
    p.add_argument("--k", type=int, default=36); p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32); p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers settings to measure")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--dir", default=None, help="scratch folder (default: a temp dir, removed at the end)")
    a = p.parse_args(argv)
    root = Path(a.dir or tempfile.mkdtemp(prefix="bench_features_"))
    try:
        rng = np.random.default_rng(0)
        (root/"pt").mkdir(parents=True, exist_ok=True)
        with FeatureStoreWriter(root/"store", a.k, a.dim, {"extractor": "bench"}) as w:
            for i in range(a.n):
                n_real = int(rng.integers(10, a.k + 1)); mask = np.arange(a.k) < n_real
                feats = rng.standard_normal((a.k, a.dim), dtype=np.float32) * mask[:, None]
                xy = rng.uniform(0, .5, (a.k, 2)).astype(np.float32); boxes = np.concatenate([xy, xy + .4], 1) * mask[:, None]
                w.add(f"img{i:06d}", feats, boxes, mask)
                torch.save({"feats": torch.from_numpy(feats), "boxes": torch.from_numpy(boxes), "mask": torch.from_numpy(mask)}, root/"pt"/f"img{i:06d}.pt")
        print(f"{a.n} images, K={a.k}, D={a.dim} float32; DataLoader batch {a.batch_size}, shuffled, {a.epochs} timed epochs after a warm-up epoch")
        print(f"{'workers':>7} {'.pt per image':>16} {'FeatureStore':>16} {'ratio':>8}")
        for workers in a.workers:
            pt, c1 = samples_per_second(PtDataset(root/"pt"), a.batch_size, workers, a.epochs)
            st, c2 = samples_per_second(StoreDataset(root/"store"), a.batch_size, workers, a.epochs)
            assert abs(c1 - c2) < 1e-3 * max(1.0, abs(c1)), "the two layouts did not read the same data"
            print(f"{workers:7d} {pt:12.1f} s/s {st:12.1f} s/s {st / pt:7.1f}x")
    finally:
        if a.dir is None: shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__": main()
