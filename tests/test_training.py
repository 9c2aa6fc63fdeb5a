"Tests of simplelxmert.training: schedule, weight-decay groups, checkpoints, exact resume, NaN stop, 2-process DDP."
import json, math, os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset, default_collate

from conftest import free_port, refusal
from simplelxmert.encoders import LXMERTConfig
from simplelxmert.training import (ITMModel, STATE_NAME, load_state_file, TrainConfig, NonFiniteLossError, train, warmup_linear, make_optimizer,
                                   make_scheduler, param_groups, roc_auc, itm_loss, trim_padding, read_config, mask_tokens,
                                   load_optimizer_state)

torch.set_num_threads(1)
TINY = dict(vocab_size=40, hidden_size=32, num_attention_heads=2, intermediate_size=64, l_layers=1, r_layers=1,
            x_layers=1, visual_feat_dim=8)


def tiny_config(**kw): return LXMERTConfig(**{**TINY, **kw})


class PairSet(Dataset):
    "Deterministic synthetic ITM pairs: label = whether token 5 appears iff feature 0 of box 0 is positive; padded rows."
    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(6, 40, (n, 7), generator=g); self.feats = torch.randn(n, 5, 8, generator=g)
        self.pos = torch.rand(n, 5, 4, generator=g); self.len = torch.randint(3, 8, (n,), generator=g)
        self.nbox = torch.randint(2, 6, (n,), generator=g); self.y = (torch.arange(n) % 2).float()
        self.ids[:, 0] = 1; self.ids[:, 1] = torch.where(self.y.bool() == (self.feats[:, 0, 0] > 0), 5, 6)
        self.epoch = 0

    def set_epoch(self, e): self.epoch = e
    def __len__(self): return len(self.y)

    def __getitem__(self, i):
        am = (torch.arange(7) < self.len[i]).long(); vm = (torch.arange(5) < self.nbox[i]).long()
        return dict(input_ids=self.ids[i] * am, attention_mask=am, token_type_ids=torch.zeros(7, dtype=torch.long),
                    visual_feats=self.feats[i], visual_pos=self.pos[i], visual_mask=vm, label=self.y[i])


def batch_of(ds, n=6): return default_collate([ds[i] for i in range(n)])



def test_warmup_then_linear_decay():
    total = 100
    lrs = [warmup_linear(s, total, 0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)        # 10 warmup steps up to the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))                         # rising
    assert all(a > b for a, b in zip(lrs[10:-1], lrs[11:]))                      # then falling
    assert lrs[-1] == pytest.approx(1 / 90) and warmup_linear(total, total) == 0.0
    m = torch.nn.Linear(2, 2); opt = make_optimizer(m, lr=0.5); sch = make_scheduler(opt, total, 0.1)
    seen = []
    for _ in range(total): seen.append(opt.param_groups[0]["lr"]); opt.step(); sch.step()
    np.testing.assert_allclose(seen, [0.5 * x for x in lrs])


def test_no_weight_decay_on_biases_and_layernorm():
    model = ITMModel(tiny_config())
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}; d = {names[id(p)] for p in decay["params"]}
    assert len(nd) + len(d) == len(names) and not nd & d
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.LayerNorm):
            assert {f"{mod_name}.weight", f"{mod_name}.bias"} <= nd, mod_name
    assert all(n.endswith("bias") or "norm" in n.lower() for n in nd)
    assert all(names_p.endswith("weight") for names_p in d) and "head.weight" in d


def test_resume_keeps_this_optimizers_fused_update():
    "A state saved by the for-loop AdamW loads into the fused one, which then steps under a GradScaler (fp16 on a GPU)."
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2); old = make_optimizer(m, fused=False)
    m(torch.ones(2, 3)).sum().backward(); old.step()
    m2 = torch.nn.Linear(3, 2); m2.load_state_dict(m.state_dict()); new = make_optimizer(m2)
    load_optimizer_state(new, old.state_dict())
    assert [g["fused"] for g in new.param_groups] == [True, True]
    torch.testing.assert_close(new.state[m2.weight]["exp_avg"], old.state[m.weight]["exp_avg"])
    scaler = torch.amp.GradScaler("cpu")          # the scaler hands the optimizer its inf check, as on CUDA with fp16
    scaler.scale(m2(torch.ones(2, 3)).sum()).backward(); scaler.unscale_(new); scaler.step(new); scaler.update()
    assert new.state[m2.weight]["step"].item() == 2


def test_ce2_head_loss_is_two_way_cross_entropy():
    torch.manual_seed(0)
    model = ITMModel(tiny_config(), head="ce2").eval()
    b = batch_of(PairSet())
    inputs = {k: v for k, v in b.items() if k != "label"}
    margin = model(**inputs)
    two = model.head(model.lxmert(**inputs).pooled_output)  # [B,2]; no feature normalization set
    torch.testing.assert_close(margin, two[:, 1] - two[:, 0])
    torch.testing.assert_close(itm_loss(margin, b["label"]), torch.nn.functional.cross_entropy(two, b["label"].long()))


def test_trim_padding_keeps_logits():
    torch.manual_seed(0)
    model = ITMModel(tiny_config()).eval()
    b = batch_of(PairSet(), 8); b["input_ids"] = torch.nn.functional.pad(b["input_ids"], (0, 5))
    for k in ("attention_mask", "token_type_ids"): b[k] = torch.nn.functional.pad(b[k], (0, 5))
    b["visual_feats"] = torch.nn.functional.pad(b["visual_feats"], (0, 0, 0, 4)); b["visual_pos"] = torch.nn.functional.pad(b["visual_pos"], (0, 0, 0, 4))
    b["visual_mask"] = torch.nn.functional.pad(b["visual_mask"], (0, 4))
    t = trim_padding(b)
    assert t["input_ids"].shape[1] == 7 and t["visual_feats"].shape[1] == 5
    full = model(**{k: v for k, v in b.items() if k != "label"}); trimmed = model(**{k: v for k, v in t.items() if k != "label"})
    torch.testing.assert_close(full, trimmed, atol=1e-5, rtol=1e-5)


def test_roc_auc_against_pair_counting():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float); y = rng.integers(0, 2, 200)
    pos, neg = s[y == 1], s[y == 0]
    expected = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(s, y) == pytest.approx(expected)
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0 and roc_auc([0.9, 0.1], [0, 1]) == 0.0


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    norm = dict(mean=list(np.linspace(-1, 1, 8)), std=list(np.linspace(0.5, 2, 8)))
    model = ITMModel(tiny_config(), head="ce2", feature_norm=norm).eval()
    model.save_pretrained(tmp_path, extra=dict(feature_store_meta={"extractor": "toy", "k": 5}))
    assert {"model.safetensors", "config.json"} <= set(os.listdir(tmp_path))
    cfg = read_config(tmp_path)
    assert cfg["head"] == "ce2" and cfg["feature_store_meta"]["extractor"] == "toy" and cfg["lxmert"]["hidden_size"] == 32
    back = ITMModel.from_pretrained(tmp_path)
    b = batch_of(PairSet()); inputs = {k: v for k, v in b.items() if k != "label"}
    torch.testing.assert_close(back(**inputs), model(**inputs), atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="not a simplelxmert checkpoint"): ITMModel.from_pretrained(tmp_path / "nope")


class StubTokenizer:
    "What training needs of a tokenizer for the masked LM: [MASK], the special ids, the size; saving writes a file."
    mask_token_id, all_special_ids = 4, [0, 1, 2, 3, 4]
    def __len__(self): return 40
    def save_pretrained(self, path): (Path(path) / "vocab.txt").write_text("stub")


def run(out_dir, steps=12, mlm_weight=0.0, **kw):
    torch.manual_seed(0)
    model = ITMModel(tiny_config(), mlm=mlm_weight > 0)
    cfg = TrainConfig(steps=steps, batch_size=8, eval_every=4, save_every=4, lr=3e-3, seed=1, mlm_weight=mlm_weight)
    hist = train(model, PairSet(), cfg, val_sets={"random": PairSet(16, seed=9)}, collate_fn=default_collate,
                 out_dir=out_dir, progress=False, tokenizer=StubTokenizer() if mlm_weight else None, **kw)
    return model, hist


def test_training_learns_and_writes_history(tmp_path):
    model, hist = run(tmp_path, steps=60)
    assert hist[-1]["step"] == 60 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert {"random_loss", "random_acc", "random_auc", "lr", "epoch"} <= set(hist[-1])
    assert json.loads((tmp_path / "history.json").read_text())[-1]["step"] == 60


def test_exact_resume(tmp_path):
    "Interrupted at step 7 (mid-epoch: 8 batches per epoch) and resumed == one uninterrupted run, to the bit."
    full, _ = run(tmp_path / "a", steps=20)
    run(tmp_path / "b", steps=20, stop_after=7)
    assert load_state_file(tmp_path / "b" / STATE_NAME)["step"] == 7
    resumed, hist = run(tmp_path / "b", steps=20, resume=True)
    assert hist[-1]["step"] == 20
    for (k, v), (k2, v2) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_resume_after_a_crash_between_two_checkpoint_files(tmp_path, monkeypatch):
    "Killed at step 8's save after the new weights file but before the trainer state: resuming from step 4 is exact."
    import simplelxmert.at_scale as T                                     # appendix A3 writes the trainer state
    full, _ = run(tmp_path / "a", steps=20)
    real_write, saves = T.atomic_write, []
    def crashing_write(path, write):
        if Path(path).name == T.STATE_NAME:
            saves.append(path)
            if len(saves) == 2: raise KeyboardInterrupt("killed")
        return real_write(path, write)
    monkeypatch.setattr(T, "atomic_write", crashing_write)
    with pytest.raises(KeyboardInterrupt): run(tmp_path / "b", steps=20)
    monkeypatch.setattr(T, "atomic_write", real_write)
    assert read_config(tmp_path / "b")["step"] == 8                       # the model files are one save ahead ...
    assert load_state_file(tmp_path / "b" / STATE_NAME)["step"] == 4   # ... of the state
    resumed, hist = run(tmp_path / "b", steps=20, resume=True)
    assert hist[-1]["step"] == 20
    for (k, v), (k2, v2) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_mask_tokens_never_touches_special_tokens():
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (500, 10)); ids[:, 0], ids[:, 7:] = 1, 0              # [CLS] words... [PAD]
    new, labels = mask_tokens(ids, mask_id=4, special_ids=[0, 1, 2, 3, 4], vocab_size=40, prob=0.5)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 7:].any() and torch.equal(new[~chosen], ids[~chosen])
    assert abs(chosen[:, 1:7].float().mean().item() - 0.5) < 0.03 and (new[chosen] >= 4).all()


def test_masked_lm_trains_saves_and_resumes_exactly(tmp_path):
    "ITM + masked LM: the history has both losses, the head is saved and reloaded, and resume is still exact."
    full, hist = run(tmp_path / "a", steps=20, mlm_weight=1.0)
    assert all(math.isfinite(h["train_mlm_loss"]) and h["train_mlm_loss"] > 0 for h in hist)
    assert read_config(tmp_path / "a")["mlm"] is True
    back = ITMModel.from_pretrained(tmp_path / "a")
    assert back.mlm_head is not None
    torch.testing.assert_close(back.state_dict(), full.state_dict(), atol=0, rtol=0)
    run(tmp_path / "b", steps=20, mlm_weight=1.0, stop_after=7)
    resumed, _ = run(tmp_path / "b", steps=20, mlm_weight=1.0, resume=True)
    for (k, v), v2 in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, v2), k
    with pytest.raises(ValueError, match="mlm=True"):
        train(ITMModel(tiny_config()), PairSet(), TrainConfig(steps=2, batch_size=8, mlm_weight=1.0),
              collate_fn=default_collate, progress=False, tokenizer=StubTokenizer())


class NaNAfter(ITMModel):
    "A model whose loss becomes NaN at one step (counting forward passes in training mode)."
    def __init__(self, *a, nan_at=5, **kw):
        super().__init__(*a, **kw); self.nan_at, self.calls = nan_at, 0

    def forward(self, *a, **kw):
        out = super().forward(*a, **kw)
        if self.training:
            self.calls += 1
            if self.calls == self.nan_at: out = out * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = NaNAfter(tiny_config(), nan_at=7)
    cfg = TrainConfig(steps=20, batch_size=8, eval_every=4, save_every=4, seed=1)
    with pytest.raises(NonFiniteLossError, match=r"at step 7.*step 4"):
        train(model, PairSet(), cfg, collate_fn=default_collate, out_dir=tmp_path, progress=False)
    assert read_config(tmp_path)["step"] == 4
    assert load_state_file(tmp_path / STATE_NAME)["step"] == 4


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = ITMModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        cfg = TrainConfig(steps=6, batch_size=8 // world, eval_every=6, save_every=100, lr=3e-3, seed=1)
        train(model, PairSet(), cfg, collate_fn=default_collate, progress=False)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save(flat, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one(tmp_path):
    "gloo, 2 CPU processes x 4 pairs == 1 process x 8 pairs (same global batches): parameters equal everywhere."
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0, r1)
    torch.manual_seed(0)
    single = ITMModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    train(single, PairSet(), TrainConfig(steps=6, batch_size=8, eval_every=6, save_every=100, lr=3e-3, seed=1),
          collate_fn=default_collate, progress=False)
    flat = torch.cat([p.detach().flatten() for p in single.parameters()])
    torch.manual_seed(0)
    init = torch.cat([p.detach().flatten() for p in ITMModel(tiny_config()).parameters()])
    assert (flat - init).abs().max() > 1e-3  # it trained
    torch.testing.assert_close(r0, flat, atol=2e-5, rtol=1e-4)



def _ddp_resume_worker(rank, world, port, out, plan):
    "2 gloo processes with dropout: run 8 steps in one go, or stop after 4 and resume; save rank's parameters."
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for kw in plan:
            torch.manual_seed(0)
            model = ITMModel(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
            cfg = TrainConfig(steps=8, batch_size=4, eval_every=4, save_every=2, lr=3e-3, seed=1)
            train(model, PairSet(), cfg, collate_fn=default_collate, progress=False, out_dir=Path(out) / "run", **kw)
        torch.save(torch.cat([p.detach().flatten() for p in model.parameters()]), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_resume_with_dropout_is_exact(tmp_path):
    "Each process's own generators are saved and restored: two processes with dropout resume to the same weights."
    for name, plan in (("full", [{}]), ("resumed", [{"stop_after": 3}, {"resume": True}])):
        mp.spawn(_ddp_resume_worker, args=(2, free_port(), str(tmp_path / name), plan), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "full" / "rank0.pt"), torch.load(tmp_path / "resumed" / "rank0.pt")
    assert torch.equal(a, b) and torch.equal(b, torch.load(tmp_path / "resumed" / "rank1.pt"))


SHIPPED = Path(__file__).resolve().parents[1] / "simplelxmert" / "assets" / "toy_itm"


def test_shipped_checkpoint_keeps_its_accuracy_on_fresh_scenes(tmp_path):
    "The toy checkpoint shipped with the package, re-measured on a ShapesWorld it never saw (another seed)."
    from torch.utils.data import DataLoader
    from simplelxmert.dataset import (ITMPairDataset, collate_itm, flip_pairs, load_tokenizer, make_eval_pairs, make_toy_data,
                                      position_records)
    from simplelxmert.training import evaluate
    cfg = read_config(SHIPPED)
    assert {"model.safetensors", "config.json", "history.json", "tokenizer"} <= set(os.listdir(SHIPPED))
    fresh = make_toy_data(tmp_path / "fresh", n_images=150, seed=2024)
    model, tok = ITMModel.from_pretrained(SHIPPED), load_tokenizer(SHIPPED / "tokenizer")
    loaders = {k: DataLoader(ITMPairDataset(make_eval_pairs(fresh.records(), fresh.scenes(), k, seed=5), fresh.store(), tok,
                                            cfg.get("max_len", 32)), batch_size=256, collate_fn=collate_itm)
               for k in ("random", "compositional")}
    flips = flip_pairs(position_records(fresh.records(), fresh.scenes(), per_image=1, seed=5))   # the first lesson's pairs
    loaders["position"] = DataLoader(ITMPairDataset(flips, fresh.store(), tok, cfg.get("max_len", 32)), batch_size=256,
                                     collate_fn=collate_itm)
    res = evaluate(model, loaders)
    last = json.loads((SHIPPED / "history.json").read_text())[-1]
    # fresh scenes: ~1,500 pairs per kind, so +-2.5 % is about two standard errors of the committed validation figure
    assert res["random_acc"] >= last["random_acc"] - 0.03, (res, last)
    assert res["compositional_acc"] >= last["compositional_acc"] - 0.04, (res, last)
    assert res["position_acc"] >= last["position_acc"] - 0.04, (res, last)


# --- the first lesson: a phase on other pairs, with its own learning rate and no masked LM ---------------------
def test_first_lesson_schedule():
    from simplelxmert.training import lr_multiplier, make_train_scheduler
    cfg = TrainConfig(lr=1e-3, steps=120, warmup=0.1, position_steps=40, position_lr=2e-4, position_warmup=0.25)
    m = torch.nn.Linear(2, 2); opt = make_optimizer(m, lr=cfg.lr); sch = make_train_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.steps): seen.append(opt.param_groups[0]["lr"]); opt.step(); sch.step()
    np.testing.assert_allclose(seen[:10], [2e-4 * (s + 1) / 10 for s in range(10)])        # warmed up over 10 steps
    np.testing.assert_allclose(seen[10:40], 2e-4)                                           # then constant
    np.testing.assert_allclose(seen[40:], [1e-3 * warmup_linear(s, 80, 0.1) for s in range(80)])   # a fresh schedule
    plain = TrainConfig(lr=1e-3, steps=120)
    assert [lr_multiplier(s, plain) for s in range(120)] == [warmup_linear(s, 120, 0.1) for s in range(120)]


def test_first_lesson_trains_without_mlm_and_resumes_exactly(tmp_path):
    "8 steps on other pairs without the masked LM, then the main data with it; stopped before, at and after the switch."
    def run_first(out, **more):
        torch.manual_seed(0)
        model = ITMModel(tiny_config(), mlm=True)
        cfg = TrainConfig(steps=20, batch_size=8, eval_every=4, save_every=4, lr=3e-3, seed=1, mlm_weight=1.0,
                          position_steps=8, position_lr=1e-3)
        hist = train(model, PairSet(), cfg, val_sets={"random": PairSet(16, seed=9)}, collate_fn=default_collate,
                     out_dir=out, progress=False, tokenizer=StubTokenizer(), position_ds=PairSet(48, seed=5), **more)
        return model, hist
    full, hist = run_first(tmp_path / "a")
    assert [h["train_mlm_loss"] == 0 for h in hist] == [True, True, False, False, False]       # no masked LM in the lesson
    assert [round(h["epoch"], 3) for h in hist][:3] == [0, 0, 0.5]                              # epochs of the main data
    for stop in (5, 8, 11):
        run_first(tmp_path / f"s{stop}", stop_after=stop)
        resumed, _ = run_first(tmp_path / f"s{stop}", resume=True)
        for (k, v), v2 in zip(full.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(v, v2), (stop, k)
    with pytest.raises(ValueError, match="position_ds"):
        train(ITMModel(tiny_config()), PairSet(), TrainConfig(steps=4, batch_size=8, position_steps=2),
              collate_fn=default_collate, progress=False)


def test_itm_data_with_one_object_captions(tmp_path):
    from simplelxmert.training import MixedITMDataset, toy_itm_data, train_cli
    data = toy_itm_data(tmp_path / "toy", n_images=40, data_seed=0, max_val_pairs=50, position_captions=2)
    assert isinstance(data.train, MixedITMDataset) and set(data.val) == {"random", "compositional", "position"}
    n_itm = len(data.train.itm)
    assert len(data.train) == n_itm + len(data.position) and len(data.position) % 2 == 0
    assert sum(r.number < 0 for r in data.train.records) == len(data.position) // 2     # the captions are records too
    data.train.set_epoch(1)
    assert data.train.pair(n_itm).kind == "positive" and data.train.pair(n_itm + 1).kind == "flip_position"
    assert {p.kind for p in data.val["position"].pairs} == {"positive", "flip_position"}
    refusal(train_cli, ["--data", "toy", "--data-dir", str(tmp_path / "toy"), "--n-images", "40", "--out",
                                str(tmp_path / "o"), "--position-steps", "10"], "--position-captions")
    refusal(train_cli, ["--data", "toy", "--data-dir", str(tmp_path / "toy"), "--n-images", "40", "--out",
                                str(tmp_path / "o"), "--position-captions", "2", "--position-steps", "10", "--steps", "10"],
            "between 0 and --steps 10")


def test_train_cli_names_a_bad_setting(tmp_path, capsys):
    from simplelxmert.training import train_cli
    base = ["--data", "toy", "--data-dir", str(tmp_path / "toy"), "--n-images", "40", "--out", str(tmp_path / "o"), "--quiet"]
    with pytest.raises(SystemExit):
        train_cli(base + ["--layers", "2,2"])
    assert "--layers must be three comma-separated layer counts" in capsys.readouterr().err
    refusal(train_cli, base + ["--batch-size", "4096", "--steps", "2"], "lower --batch-size")
    assert not (tmp_path / "o" / STATE_NAME).exists()


def test_ctrl_c_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path):
    import signal
    full, _ = run(tmp_path / "a", steps=20)
    before, fired = signal.getsignal(signal.SIGINT), []
    def ctrl_c(history):                                   # a Ctrl-C during the validation of step 4
        if not fired: fired.append(1); os.kill(os.getpid(), signal.SIGINT)
    _, hist = run(tmp_path / "b", steps=20, on_eval=ctrl_c)
    assert signal.getsignal(signal.SIGINT) is before      # the handler is only there while training
    assert hist[-1]["step"] == 5 == load_state_file(tmp_path / "b" / STATE_NAME)["step"]
    resumed, hist = run(tmp_path / "b", steps=20, resume=True)
    assert hist[-1]["step"] == 20
    for (k, v), (k2, v2) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_train_cli_guards_a_finished_run_and_its_settings(tmp_path, capsys):
    from simplelxmert.training import train_cli
    base = ["--data", "toy", "--data-dir", str(tmp_path / "toy"), "--n-images", "40", "--out", str(tmp_path / "o"), "--quiet",
            "--hidden", "32", "--heads", "2", "--batch-size", "8", "--steps", "3", "--eval-every", "3", "--max-val-pairs", "20"]
    train_cli(base)
    capsys.readouterr()
    fresh = base + ["--out", str(tmp_path / "o3")]                  # (the last --out counts)
    for argv, message in ((base, "holds a checkpoint (step 3): pass --resume to continue its run"),
                          (base[:-6] + ["--steps", "6", "--resume"], "was trained with --steps 3: --resume continues"),
                          (base[:-6] + ["--no-amp", "--feature-norm", "none", "--resume"],
                           "was trained with --feature-norm standardize, without --no-amp: --resume continues"),
                          (fresh + ["--eval-every", "0"], "--eval-every must be at least 1"),
                          (fresh + ["--max-len", "1"], "--max-len must be at least 3"),
                          (fresh + ["--max-minutes", "-1"], "--max-minutes must be positive")):
        with pytest.raises(SystemExit): train_cli(argv)
        assert message in capsys.readouterr().err, argv
    train_cli(["--out", str(tmp_path / "o"), "--resume", "--quiet", "--threads", "1"])   # nothing left to do: allowed
    assert json.loads((tmp_path / "o" / "history.json").read_text())[-1]["step"] == 3
    assert "stopped" not in json.loads((tmp_path / "o" / "config.json").read_text())   # it ran to its end
    import shutil                                                     # a run resumed on a world with other token ids: refused
    shutil.copytree(tmp_path / "o", tmp_path / "o4")
    state = json.loads((tmp_path / "o4" / "config.json").read_text()); state["train_args"]["steps"] = 6
    (tmp_path / "o4" / "config.json").write_text(json.dumps(state))
    tj_path = tmp_path / "o4" / "tokenizer" / "tokenizer.json"
    tj = json.loads(tj_path.read_text()); v = tj["model"]["vocab"]; a, b = list(v)[5:7]; v[a], v[b] = v[b], v[a]
    tj_path.write_text(json.dumps(tj))                                # two token ids swapped
    refusal(train_cli, ["--out", str(tmp_path / "o4"), "--resume", "--quiet"],
            "the data's tokenizer has other token ids than the one the run")
    shutil.rmtree(tmp_path / "o4" / "tokenizer")                     # no tokenizer saved: the vocabulary size is checked
    state["lxmert"]["vocab_size"] += 1; (tmp_path / "o4" / "config.json").write_text(json.dumps(state))
    refusal(train_cli, ["--out", str(tmp_path / "o4"), "--resume", "--quiet"],
            "the data's tokenizer has other token ids than the one the run")
    capsys.readouterr()
    train_cli(base + ["--out", str(tmp_path / "o5"), "--steps", "1", "--max-minutes", "1e-5"])   # the budget ends at the last step
    assert "stopped" not in json.loads((tmp_path / "o5" / "config.json").read_text())
    assert "resume with --resume" not in capsys.readouterr().out
    (tmp_path / "o" / "config.json").write_text('{"step": 3, "train_a')                 # a damaged checkpoint: named
    refusal(train_cli, ["--out", str(tmp_path / "o"), "--resume", "--quiet"], "config.json is not valid JSON")
    refusal(train_cli, base[:4] + ["--n-images", "50", "--out", str(tmp_path / "o2"), "--quiet"],
            "made with")                                  # an existing world of another size: one line, not a traceback
