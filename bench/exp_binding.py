"""Binding experiments behind chapter 04's runs M1-Q2: does LXMERT's masked cross-modality LM, a sinusoidal start for
the position table, or a single caption wording make the toy model learn *binding* (rejecting swapped attributes and
reversed relations) sooner?

Trains chapter 04's ITMModel (hidden 128, 4 heads, 2/2/2 layers, init 0.1, no dropout, lr 5e-4, batch 128, warmup
10 % then linear decay, 3 epochs of random negatives then half compositional) with, optionally, its masked-LM head
(`ITMModel(..., mlm=True)`, words masked by `mask_tokens`, loss on matched pairs only, on the same forward pass) and
the sinusoidal start (`init_sinusoid_positions`). Every `--eval-every` steps it prints validation accuracy on random
and compositional negatives, the accuracy by compositional kind, and how often the masked colour, shape and relation
words are predicted right. (The table's runs were made before these pieces moved into chapter 04, with the script's
own copies of them: the same computation, another random stream for the masks.)

    python bench/exp_binding.py --tag M2 --mlm 1 --sin-pos 0.1 --steps 2000 --minutes 13
    python bench/exp_binding.py --tag W2 --fixed-wording --data /tmp/toyfixed --mlm 1 --sin-pos 0.1 --steps 2000

The fourth round (relations; chapter 04's fourth table) added `--box-bias` (start the box projection's bias away from 0: with a zero bias,
LayerNorm(W_P p) sees only the direction of the box vector p), `--kinds` (training negatives of the given kinds only)
and `--relation-prob` (mask the relation words more often):

    python bench/exp_binding.py --tag bias-0.3 --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1500 --box-bias 0.3
    python bench/exp_binding.py --tag rel-neg --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1500 --kinds swap_relation

and `--absolute N` (N captions per training image that place one object: "The red circle is on the left."), with
`--position-first S` (S steps on those captions alone before the rest):

    python bench/exp_binding.py --tag one-object --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1500 --absolute 2
    python bench/exp_binding.py --tag position-first --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1800 --absolute 4 --position-first 300 --relation-prob 0.4

The fifth round added `--box-fourier N` (the box fed as [x1, y1, x2, y2] plus sin and cos of k*pi*c for its centre
and size c, k = 1..N: `visual_pos_dim` 4 + 8N, the encoding done inside the model's forward so that evaluation sees
it too) and `--obj W` / `--obj-prob P` (LXMERT's masked object prediction, RoI-feature regression: a share P of the
real boxes of every pair zeroed, their standardized features regressed from the box stream's output by a transform
+ linear head, smooth L1, on matched pairs only, weight W):

    python bench/exp_binding.py --tag fourier4 --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1500 --box-fourier 4
    python bench/exp_binding.py --tag obj-0.15 --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1500 --obj 1 --obj-prob 0.15
    python bench/exp_binding.py --tag combined --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 3000 --minutes 45 --box-fourier 4 --absolute 2 --obj 1 --obj-prob 0.3

and `--flip` (the one-object captions of `--absolute` paired with their flipped twins, "... is on the right.", as
negatives, in the `--position-first` phase; validation on such pairs of the validation images, `flip_acc`),
`--position-lr` (that phase at its own learning rate, warmed up over its first quarter, without the masked LM; the
main schedule runs over the remaining steps) and `--flip-mix` (the pairs stay in the training set afterwards; this
is the shipped recipe's first lesson, now `simplelxmert_train --position-captions 4 --position-steps 400 --position-lr 3e-4`,
with the same training captions: the one-object captions are made by chapter 01's `position_records` here too):

    python bench/exp_binding.py --tag flip-only --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1500 --absolute 4 --flip --position-first 1500
    python bench/exp_binding.py --tag flip-no-mlm-lr3e-4 --sin-pos 0.1 --lr 3e-4 --steps 1500 --absolute 4 --flip --position-first 1500
    python bench/exp_binding.py --tag flip-first --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1900 --absolute 4 --flip --position-first 400 --position-lr 3e-4
    python bench/exp_binding.py --tag flip-mix --mlm 1 --sin-pos 0.1 --lr 1e-3 --steps 1900 --absolute 4 --flip --flip-mix --position-first 400 --position-lr 3e-4
"""
import argparse, json, time
import numpy as np, torch, torch.nn as nn
from torch.utils.data import DataLoader
import simplelxmert.dataset as D
from simplelxmert.features import COLORS, SHAPES, SIZES
from simplelxmert.encoders import LXMERTConfig
from simplelxmert.training import (ITMModel, toy_itm_data, seed_everything, feature_norm, make_optimizer, make_scheduler,
                                   itm_loss, evaluate, predict_logits, trim_padding, model_inputs, mask_tokens,
                                   init_sinusoid_positions)

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--data", default="/tmp/exp_binding_toy", help="toy data folder (made when absent)")
p.add_argument("--steps", type=int, default=1000); p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--lr", type=float, default=5e-4); p.add_argument("--hidden", type=int, default=128)
p.add_argument("--init", type=float, default=0.1)
p.add_argument("--layers", default="2,2,2", help="language, object and cross-modality layers")
p.add_argument("--hard", type=float, default=0.5, help="share of negatives that are compositional after the curriculum")
p.add_argument("--random-neg-epochs", type=int, default=3)
p.add_argument("--mlm", type=float, default=0.0, help="weight of the masked-LM loss (0: ITM only)")
p.add_argument("--mask-prob", type=float, default=0.15)
p.add_argument("--content-prob", type=float, default=None, help="mask probability of colour/shape/size/relation words")
p.add_argument("--relation-prob", type=float, default=None, help="mask probability of the relation words (after --content-prob)")
p.add_argument("--sin-pos", type=float, default=0.0, help="start the position table from sinusoids times this")
p.add_argument("--box-bias", type=float, default=0.0, help="start the box projection's bias from N(0, this) instead of 0")
p.add_argument("--box-fourier", type=int, default=0, help="feed the box as [x1,y1,x2,y2] + sin/cos of its centre and size at this many frequencies")
p.add_argument("--obj", type=float, default=0.0, help="weight of LXMERT's masked object prediction (RoI-feature regression of zeroed boxes, matched pairs only)")
p.add_argument("--obj-prob", type=float, default=0.15, help="masked objects: probability that a real box is zeroed")
p.add_argument("--kinds", default=None, help="comma-separated compositional kinds the training negatives are drawn from (default: all)")
p.add_argument("--absolute", type=int, default=0, help="add this many captions per training image that place one object in the image (left/right/above/below)")
p.add_argument("--position-first", type=int, default=0, help="train this many steps on the --absolute captions alone first")
p.add_argument("--flip", action="store_true", help="the --position-first phase trains on one-object captions against their flipped twins (not random negatives)")
p.add_argument("--flip-mix", action="store_true", help="with --flip: keep the one-object pairs (true and flipped) in the training set after the --position-first phase")
p.add_argument("--position-lr", type=float, default=None, help="with --flip: this learning rate (warmed up over the first quarter, then constant) and no masked LM in the --position-first phase; the schedule then runs over the remaining steps")
p.add_argument("--fixed-wording", action="store_true", help="one template, no synonyms (regenerates nothing: use a new --data)")
p.add_argument("--threads", type=int, default=1); p.add_argument("--minutes", type=float, default=10)
p.add_argument("--eval-every", type=int, default=100); p.add_argument("--tag", default="run")
a = p.parse_args()
if a.fixed_wording:   # captions, rewordings and evaluation pairs all go through dataset.describe
    D.TEMPLATES = ("{a} is {r} {b}.",)
    D.RELATION_WORDS = {r: (r,) for r in D.RELATION_WORDS}
    D.SHAPE_WORDS = {s: (s,) for s in D.SHAPE_WORDS}
torch.set_num_threads(a.threads)
def absolute_captions(td, per_image, seed=0, split="train", flipped=False):
    "Captions such as 'The red circle is on the left.' (chapter 01's `position_records`; with `flipped`: `flip_pairs`)."
    records = D.position_records(td.records(split), td.scenes(), per_image, seed)
    return D.flip_pairs(records) if flipped else records
if a.absolute:
    from simplelxmert.training import make_toy_data, itm_data
    td = make_toy_data(a.data, 2000, 0)
    extra = absolute_captions(td, a.absolute)
    print(len(extra), "absolute captions, e.g.", extra[0].caption, "|", extra[1].caption)
    data = itm_data(td.records("train") + extra, td.records("val"), td.store(), td.tokenizer(), scenes=td.scenes(),
                    hard_neg_prob=a.hard, seed=0, random_neg_epochs=a.random_neg_epochs, max_val_pairs=1000)
    if a.position_first and not a.flip:   # the position-only phase: one-object captions, random negatives
        data_pos = itm_data(extra, td.records("val"), td.store(), td.tokenizer(), seed=0, max_val_pairs=10)
    if a.flip:   # the position-only phase: each one-object caption and its flipped twin ("on the right" for "on the left")
        from types import SimpleNamespace
        data_pos = SimpleNamespace(train=D.ITMPairDataset(absolute_captions(td, a.absolute, flipped=True), td.store(), td.tokenizer(), 32))
        if a.flip_mix:   # after the phase, the flip pairs stay in the training set beside the ITM pairs
            class Mixed(torch.utils.data.ConcatDataset):
                def set_epoch(self, e): self.datasets[0].set_epoch(e)
                records = property(lambda self: self.datasets[0].records)
            data.train = Mixed([data.train, data_pos.train])
        flip_val = D.ITMPairDataset(absolute_captions(td, 2, seed=1, split="val", flipped=True), td.store(), td.tokenizer(), 32)
else: data = toy_itm_data(a.data, 2000, 0, hard_neg_prob=a.hard, seed=0, random_neg_epochs=a.random_neg_epochs, max_val_pairs=1000)
tok = data.tokenizer
if a.kinds:   # training negatives of these kinds only, patched in after the fixed validation pairs are made
              # (ITMDataset draws them through dataset.sample_hard_negative)
    _kinds = set(a.kinds.split(","))
    def _only(scene, spec, rng, keep_signature=True):
        negs = [n for n in D.hard_negatives(scene, spec, rng, keep_signature) if n[0] in _kinds]
        return rng.choice(negs) if negs else None
    D.sample_hard_negative = _only
seed_everything(0)
norm = feature_norm(data.store, [r.image_id for r in data.train.records])
n_l, n_r, n_x = map(int, a.layers.split(","))
cfg = LXMERTConfig(vocab_size=len(tok), hidden_size=a.hidden, visual_pos_dim=4 + 8 * a.box_fourier, num_attention_heads=4, intermediate_size=4 * a.hidden,
                   l_layers=n_l, r_layers=n_r, x_layers=n_x, visual_feat_dim=data.store.dim, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, initializer_range=a.init)
model = ITMModel(cfg, feature_norm=norm, mlm=a.mlm > 0)     # chapter 04's model, with its tied masked-LM head
if a.mlm > 0:                                                  # as the table's runs started the head's dense layer
    nn.init.normal_(model.mlm_head.transform.dense.weight, std=a.init); nn.init.zeros_(model.mlm_head.transform.dense.bias)
if a.sin_pos: init_sinusoid_positions(model.lxmert, a.sin_pos)
if a.box_fourier:   # the box encoding happens inside the model's forward, so training and evaluate() both see it
    def fourier_boxes(p, n=a.box_fourier):
        c = torch.stack([(p[..., 0] + p[..., 2]) / 2, (p[..., 1] + p[..., 3]) / 2, p[..., 2] - p[..., 0], p[..., 3] - p[..., 1]], -1)
        ang = c[..., None] * torch.pi * torch.arange(1, n + 1, dtype=p.dtype)      # [B,K,4,n]
        return torch.cat([p, ang.sin().flatten(-2), ang.cos().flatten(-2)], -1)
    _fwd = model.forward
    model.forward = lambda *args, visual_pos=None, **kw: _fwd(*args, visual_pos=fourier_boxes(visual_pos), **kw)
if a.box_bias: nn.init.normal_(model.lxmert.encoder.visn_fc.box_fc.bias, std=a.box_bias)
if a.obj > 0:   # LXMERT's masked object prediction, "feat" variant: transform + Linear(D_hidden, D_feat), smooth L1
    from simplelxmert.training import MLMTransform
    model.obj_head = nn.Sequential(MLMTransform(cfg), nn.Linear(cfg.hidden_size, cfg.visual_feat_dim))
    for m in model.obj_head.modules():
        if isinstance(m, nn.Linear): nn.init.normal_(m.weight, std=a.init); nn.init.zeros_(m.bias)
    vision = {}
    model.lxmert.register_forward_hook(lambda m, i, o: vision.update(out=o.vision_output))
opt = make_optimizer(model, a.lr, 0.01)
own_phase = a.position_lr is not None and a.position_first > 0     # the position phase outside the main schedule
sched = make_scheduler(opt, a.steps - (a.position_first if own_phase else 0), 0.1)
if own_phase:
    position_warmup = max(1, a.position_first // 4)            # warm up over the phase's first quarter, then constant
    for g in opt.param_groups: g["lr"] = a.position_lr / position_warmup
ids = lambda words: torch.tensor(tok.convert_tokens_to_ids(list(words)))
cats = {"colour": ids(COLORS), "shape": ids(SHAPES + ("disc",)),
        "relation": ids(("left", "right", "above", "below", "over", "under", "beneath"))}
content = torch.cat([*cats.values(), ids(SIZES)])
masking = dict(mask_id=tok.mask_token_id, special_ids=tok.all_special_ids, vocab_size=len(tok))
scores = {}                                                    # the masked-LM head's last output, for the word statistics
if a.mlm > 0: model.mlm_head.register_forward_hook(lambda m, i, o: scores.update(last=o.detach()))

comp_kinds = np.array([p.kind for p in data.val["compositional"].pairs])
val = {k: DataLoader(v, batch_size=256, collate_fn=D.collate_itm) for k, v in data.val.items()}
if a.flip: val["flip"] = DataLoader(flip_val, batch_size=256, collate_fn=D.collate_itm)
mlm_hits = {k: [0, 0] for k in cats}
obj_hist = []
step, t0, history = 0, time.time(), []
out_of_time = lambda: time.time() - t0 > 60 * a.minutes
model.train()
while step < a.steps and not out_of_time():
    position_phase = step < a.position_first
    ds, start = (data_pos.train, 0) if position_phase else (data.train, a.position_first)
    epoch = (step - start) // (len(ds) // a.batch_size); getattr(ds, "set_epoch", lambda e: None)(epoch)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch)).tolist()
    for batch in DataLoader(ds, batch_size=a.batch_size, sampler=order, collate_fn=D.collate_itm, drop_last=True):
        b = trim_padding(batch); x = model_inputs(b)
        if a.obj > 0:   # zero some real boxes of every pair (LXMERT's masked objects; a zeroed box must not hint at the label)
            zeroed = (torch.rand(b["visual_mask"].shape) < a.obj_prob) & b["visual_mask"].bool()
            obj_mask = zeroed & (b["label"] == 1)[:, None]        # regressed on matched pairs only, like the masked words
            obj_target = ((x["visual_feats"] - model.feat_mean) / model.feat_std)[obj_mask]
            x["visual_feats"] = x["visual_feats"].masked_fill(zeroed[..., None], 0.0)
        use_mlm = a.mlm > 0 and not (own_phase and position_phase)
        if use_mlm:
            prob = torch.full(b["input_ids"].shape, a.mask_prob)           # one probability per position
            if a.content_prob is not None: prob[torch.isin(b["input_ids"], content)] = a.content_prob
            if a.relation_prob is not None: prob[torch.isin(b["input_ids"], cats["relation"])] = a.relation_prob
            x["input_ids"], labels = mask_tokens(b["input_ids"], prob=prob, **masking)
            labels[b["label"] == 0] = -100                       # masked LM on matched pairs only, as LXMERT
            logits, mlm_loss = model(**x, mlm_labels=labels)
            if "last" in scores:
                words, pred = labels[labels != -100], scores.pop("last").argmax(-1)
                for k, c in cats.items():
                    m = torch.isin(words, c); mlm_hits[k][0] += int((pred[m] == words[m]).sum()); mlm_hits[k][1] += int(m.sum())
        else: logits, mlm_loss = model(**x, pooled_only=not a.obj), torch.zeros(())   # the object loss reads the vision output
        obj_loss = torch.zeros(())
        if a.obj > 0 and obj_mask.any():
            obj_loss = nn.functional.smooth_l1_loss(model.obj_head(vision["out"][obj_mask]), obj_target); obj_hist.append(obj_loss.item())
        loss = itm_loss(logits, b["label"]) + a.mlm * mlm_loss + a.obj * obj_loss
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); step += 1
        if own_phase and step < a.position_first:
            for g in opt.param_groups: g["lr"] = a.position_lr * min(1.0, (step + 1) / position_warmup)
        if own_phase and step == a.position_first:             # the main schedule starts where it would have started
            for g, lr in zip(opt.param_groups, sched.get_last_lr()): g["lr"] = lr
        if not (own_phase and step <= a.position_first): sched.step()
        if step % a.eval_every == 0 or step == a.steps or out_of_time():
            model.eval()
            rec = dict(step=step, minutes=(time.time() - t0) / 60, **evaluate(model, val))
            lg, lb = predict_logits(model, val["compositional"])
            for k in np.unique(comp_kinds):
                m = comp_kinds == k; rec[k] = float(((lg[m] > 0) == (lb[m] == 1)).mean())
            for k, (hit, n) in mlm_hits.items(): rec[f"mlm_{k}"] = hit / max(n, 1)
            mlm_hits = {k: [0, 0] for k in cats}
            if obj_hist: rec["obj_err"] = float(np.mean(obj_hist)); obj_hist = []
            model.train(); history.append(rec)
            print(a.tag, " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                                  if not k.endswith("loss")), flush=True)
        if step >= a.steps or out_of_time() or (position_phase and step >= a.position_first): break
json.dump(history, open(f"{a.tag}.json", "w"))
