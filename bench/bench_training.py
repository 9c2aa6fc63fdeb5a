"""Training throughput of simplelxmert.training (samples/s), measured side by side in one run.

For each configuration it times the full training step of `train` (forward, BCE, backward, clipping, AdamW,
schedule) on the same batches in three ways: the batch as collated (padded to max_len), the batch after
`trim_padding` (what `train` does), and the same step with `transformers.LxmertModel` + a linear head.

    .venv/bin/python bench/bench_training.py [--steps 20] [--threads N]
"""
import argparse, time
import torch, torch.nn as nn
from transformers import LxmertModel

from simplelxmert.encoders import LXMERTConfig
from simplelxmert.training import ITMModel, itm_loss, make_optimizer, make_scheduler, trim_padding, model_inputs


def make_batch(B, max_len, lengths, K, real_boxes, D, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.randint(lengths[0], lengths[1] + 1, (B,), generator=g)
    am = (torch.arange(max_len)[None] < L[:, None]).long()
    vm = (torch.arange(K)[None] < torch.randint(real_boxes[0], real_boxes[1] + 1, (B, 1), generator=g)).long()
    return dict(input_ids=torch.randint(5, vocab, (B, max_len), generator=g) * am, attention_mask=am,
                token_type_ids=torch.zeros(B, max_len, dtype=torch.long), visual_feats=torch.randn(B, K, D, generator=g),
                visual_pos=torch.rand(B, K, 4, generator=g), visual_mask=vm, label=(torch.arange(B) % 2).float())


class HFITM(nn.Module):
    def __init__(self, config):
        super().__init__(); self.lx = LxmertModel(config.to_hf()); self.head = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, attention_mask, token_type_ids, visual_feats, visual_pos, visual_mask):
        o = self.lx(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                    visual_feats=visual_feats, visual_pos=visual_pos, visual_attention_mask=visual_mask)
        return self.head(o.pooled_output)[:, 0]


def time_steps(model, batch, steps, trim):
    opt = make_optimizer(model, 1e-4); sch = make_scheduler(opt, 10 * steps)
    model.train()
    def step():
        b = trim_padding(batch) if trim else batch
        loss = itm_loss(model(**model_inputs(b)), b["label"])
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sch.step()
    for _ in range(3): step()                                  # warm-up
    t = time.perf_counter()
    for _ in range(steps): step()
    return steps * batch["input_ids"].shape[0] / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20); p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    setups = {
        "toy (hidden 128, 2/2/2, K=3, D=48, captions 10-18 of max_len 32, B=32)":
            (LXMERTConfig(vocab_size=1000, hidden_size=128, num_attention_heads=4, intermediate_size=512, visual_feat_dim=48),
             dict(B=32, max_len=32, lengths=(10, 18), K=3, real_boxes=(2, 3), D=48, vocab=1000)),
        "seed (hidden 256, 2/2/2, K=36, D=1024, captions 12-30 of max_len 50, B=32)":
            (LXMERTConfig(vocab_size=30522, hidden_size=256, num_attention_heads=4, intermediate_size=1024, visual_feat_dim=1024),
             dict(B=32, max_len=50, lengths=(12, 30), K=36, real_boxes=(36, 36), D=1024, vocab=30522)),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.steps} timed steps each")
    for name, (cfg, bk) in setups.items():
        batch = make_batch(**bk)
        torch.manual_seed(0); ours = ITMModel(cfg)
        torch.manual_seed(0); hf = HFITM(cfg)
        padded = time_steps(ours, batch, a.steps, trim=False)
        trimmed = time_steps(ours, batch, a.steps, trim=True)
        hf_trimmed = time_steps(hf, batch, a.steps, trim=True)
        print(f"{name}\n  ITMModel, padded batch : {padded:8.1f} samples/s"
              f"\n  ITMModel, trim_padding : {trimmed:8.1f} samples/s  ({trimmed / padded:.2f}x padded)"
              f"\n  HF LxmertModel, trimmed: {hf_trimmed:8.1f} samples/s  (ours {trimmed / hf_trimmed:.2f}x HF)")


if __name__ == "__main__":
    main()
