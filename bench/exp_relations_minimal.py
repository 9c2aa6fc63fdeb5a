"""Relations in a minimal world: can chapter 04's ITMModel learn "A is left of B" from matching alone, and does
learning "A is on the left" first help? (Chapter 04, "Relations in a minimal world".)

Each image has 3 boxes of distinct colours (colour c: feature dimension c raised by 2, plus N(0, 0.3) noise on all
8 dimensions; boxes 0.2 wide at random places). A caption is 3-5 tokens of a 20-word vocabulary:
`[CLS] colourA left|right [SEP]` (absolute: is box A's centre in the left half?) or
`[CLS] colourA left-of|right-of colourB [SEP]` (relation: is A's centre left of B's?); the side word is drawn at
random, so half the captions are true. Every batch is fresh (no epochs, nothing to memorize). The model is
ITMModel at hidden 128, 4 heads, 2/2/2 layers, init 0.1, no dropout, AdamW lr 1e-3 (10 % warmup then linear decay),
batch 128, one thread; accuracy on 1,000 fresh captions of each task every 100 steps.

    python bench/exp_relations_minimal.py --task relation --steps 1500
    python bench/exp_relations_minimal.py --task absolute --steps 1500
    python bench/exp_relations_minimal.py --task curriculum --steps 2000 --absolute-first 500   # then half relations
"""
import argparse, json
import torch, torch.nn as nn
from simplelxmert.encoders import LXMERTConfig
from simplelxmert.training import ITMModel, itm_loss, make_optimizer, make_scheduler

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--task", choices=("absolute", "relation", "curriculum"), default="curriculum")
p.add_argument("--steps", type=int, default=2000); p.add_argument("--absolute-first", type=int, default=500)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default=None, help="write the accuracy history as json here")
a = p.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(1)
K, C, PAD, CLS, SEP = 3, 6, 0, 1, 2
LEFT, RIGHT, LEFT_OF, RIGHT_OF, COLOUR0 = 5, 6, 7, 8, 10


def batch(B, p_relation):
    "B fresh images and captions; a share `p_relation` of the captions are relations, the rest absolute."
    xy = torch.rand(B, K, 2) * 0.8; boxes = torch.cat([xy, xy + 0.2], -1)              # [B,K,4] normalized xyxy
    colours = torch.stack([torch.randperm(C)[:K] for _ in range(B)])                     # [B,K] distinct per image
    feats = 0.3 * torch.randn(B, K, 8) + 2 * nn.functional.one_hot(colours, 8).float()   # [B,K,8]
    r, ab = torch.arange(B), torch.stack([torch.randperm(K)[:2] for _ in range(B)])      # A, B: two of the boxes
    cx = boxes[..., [0, 2]].mean(-1)                                                      # [B,K] box centres
    says_left, relation = torch.randint(0, 2, (B,)).bool(), torch.rand(B) < p_relation
    word_a, word_b = COLOUR0 + colours[r, ab[:, 0]], COLOUR0 + colours[r, ab[:, 1]]
    side = torch.where(relation, torch.where(says_left, LEFT_OF, RIGHT_OF), torch.where(says_left, LEFT, RIGHT))
    ids = torch.stack([torch.full((B,), CLS), word_a, side, torch.where(relation, word_b, SEP),
                       torch.where(relation, SEP, PAD)], 1)                               # [B,5]
    is_left = torch.where(relation, cx[r, ab[:, 0]] < cx[r, ab[:, 1]], cx[r, ab[:, 0]] < 0.5)
    return dict(input_ids=ids, attention_mask=(ids != PAD).long(), visual_feats=feats, visual_pos=boxes), (says_left == is_left).float()


cfg = LXMERTConfig(vocab_size=20, hidden_size=128, num_attention_heads=4, intermediate_size=512, l_layers=2, r_layers=2,
                   x_layers=2, visual_feat_dim=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.1)
model = ITMModel(cfg)
opt = make_optimizer(model, a.lr, 0.01); sched = make_scheduler(opt, a.steps, 0.1)
share = {"absolute": lambda s: 0.0, "relation": lambda s: 1.0, "curriculum": lambda s: 0.0 if s <= a.absolute_first else 0.5}[a.task]
tests = {"absolute": batch(1000, 0.0), "relation": batch(1000, 1.0)}
history = []
for step in range(1, a.steps + 1):
    x, y = batch(128, share(step))
    loss = itm_loss(model(**x), y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
    if step % 100 == 0:
        with torch.no_grad():
            acc = {k: ((model(**x) > 0).float() == y).float().mean().item() for k, (x, y) in tests.items()}
        history.append(dict(step=step, loss=loss.item(), **acc))
        print(a.task, f"step {step:5d}  train loss {loss.item():.3f}  absolute {acc['absolute']:.3f}  relation {acc['relation']:.3f}", flush=True)
if a.out: json.dump(history, open(a.out, "w"))
