"Chapter 06: the pre-training heads equal the reference, the toy GQA is balanced and split by image, pre-training resumes exactly."
import contextlib, io, random
from collections import Counter
from pathlib import Path

import pytest, torch

from conftest import free_port
from simplelxmert.encoders import LXMERTConfig
from simplelxmert.pretraining import (ANSWERS, QUESTION_KINDS, TASKS, LXMERTForPreTraining, PreTrainConfig, PreTrainingConfig,
                                      compare_pretraining_with_hf, finetuning_config, fit_questions,
                                      pretraining_config, scene_questions, task_labels, toy_gqa, toy_pretraining_model)


@pytest.fixture(scope="module")
def gqa(tmp_path_factory, one_thread):
    "The toy GQA of a 60-image world."
    return toy_gqa(tmp_path_factory.mktemp("gqa") / "toy", n_images=60)


@pytest.mark.parametrize("heads", [dict(num_qa_labels=5, num_object_labels=4, num_attr_labels=3),
                                   dict(num_qa_labels=3, visual_feat_loss=False, task_matched=False),
                                   dict(task_qa=False, task_obj_predict=False)])
def test_every_head_and_loss_equal_the_reference(heads):
    config = LXMERTConfig(vocab_size=40, hidden_size=32, num_attention_heads=2, intermediate_size=48, l_layers=1, r_layers=2,
                          x_layers=1, visual_feat_dim=10)
    diffs = compare_pretraining_with_hf(config, PreTrainingConfig(**heads), seed=3)
    assert max(diffs.values()) < 1e-5 and any(k.endswith("loss") for k in diffs)


def test_questions_are_balanced_and_split_by_image(gqa):
    qs = gqa["questions"]
    assert not {q.image for q in qs["train"]} & ({q.image for q in qs["val"]} | {q.image for q in qs["test"]})
    for kind in QUESTION_KINDS:
        counts = Counter(q.answer for q in qs["train"] if q.kind == kind)
        assert len(set(counts.values())) <= 1, (kind, counts)
    assert all(q.answer in ANSWERS for split in qs.values() for q in split)
    scene = gqa["world"].scenes()[0]                                      # every question is true of its scene
    for q in scene_questions(scene, random.Random(0)):
        if q.kind == "exist":
            c, s = q.question[len("Is there "):-1].split()[-2:]
            assert (q.answer == "yes") == any(o.color == c and o.shape == s for o in scene.objects), q


def test_nothing_to_predict_is_no_loss_not_nan():
    batch = dict(input_ids=torch.full((2, 4), 7), label=torch.zeros(2), ans=torch.full((2,), -100))
    labels = task_labels(batch, {"mlm", "qa", "matched"}, dict(mask_id=4, special_ids=[0, 1, 2, 3, 4], vocab_size=40),
                         PreTrainConfig())
    assert "labels" not in labels and "ans" not in labels and "matched_label" in labels    # mismatched pairs: no words, no answers


def run(gqa, out, steps, **kw):
    "A tiny pre-training run on the fixture's world."
    model = toy_pretraining_model(gqa["tokenizer"], gqa["world"].store(), gqa["train_ids"])
    cfg = pretraining_config(steps, 2, TASKS, eval_every=3)
    cfg.batch_size, cfg.save_every = 16, 3
    return model, fit_questions(model, gqa["data"]["pretrain"], cfg, gqa["data"], gqa["tokenizer"], out_dir=out, **kw)


def test_pretraining_resumes_exactly_and_saves_its_model(gqa, tmp_path):
    full, hist = run(gqa, tmp_path / "a", 8)
    assert {"train_mlm_loss", "train_obj_loss", "train_qa_loss", "val_acc"} <= set(hist[-1])
    run(gqa, tmp_path / "b", 8, stop_after=4)
    resumed, _ = run(gqa, tmp_path / "b", 8, resume=True)
    for (k, v), v2 in zip(full.state_dict().items(), resumed.state_dict().values()): assert torch.equal(v, v2), k
    back = LXMERTForPreTraining.from_pretrained(tmp_path / "a")
    for (k, v), v2 in zip(full.state_dict().items(), back.state_dict().values()): assert torch.equal(v, v2), k


def test_answer_from_a_pretrained_checkpoint_and_a_clear_error_without_one(gqa, tmp_path):
    from simplelxmert.inference import Predictor
    from simplelxmert.cli import predict_cli
    model, _ = run(gqa, tmp_path / "pre", 3)
    model.save_pretrained(tmp_path / "pre", tokenizer=gqa["tokenizer"],
                          extra=dict(answers=list(ANSWERS), max_len=32, feature_store_meta=gqa["world"].store().meta))
    pred = Predictor.from_pretrained(tmp_path / "pre", device="cpu")
    q = gqa["questions"]["train"][0]
    image = gqa["world"].images_dir / q.image
    answers = pred.answer(image, q.question, k=len(ANSWERS))
    assert sorted(a for a, _ in answers) == sorted(ANSWERS) and abs(sum(p for _, p in answers) - 1) < 1e-4
    assert pred.score(image, [q.question]).shape == (1,)                          # matching through the 2-way head
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        predict_cli([str(tmp_path / "pre"), str(image), "--question", q.question, "--top", "2"])
    assert len(out.getvalue().splitlines()) == 2
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):               # an ITM checkpoint: one line, no answer head
        predict_cli(["toy", str(image), "--question", q.question])
    assert "no answer head" in err.getvalue() and err.getvalue().count("\n") == 1


def _ddp_pretraining_worker(rank, world, port, data_dir, out, plan):
    "2 gloo processes: pre-train (first lesson, every task; `plan` = one go or stop and resume), then fine-tune on QA alone."
    import os
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = toy_gqa(data_dir, n_images=60)
        for kw in plan: model, hist = run(g, Path(out) / "pre", 6, **kw)
        ft = finetuning_config(steps=2, eval_every=2)
        ft.batch_size = 16
        fit_questions(model, g["data"]["finetune"], ft, g["data"], g["tokenizer"])   # the unused heads must not stall DDP
        torch.save(torch.cat([p.detach().flatten() for p in model.parameters()]), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_pretraining_and_finetuning_agree_and_resume_exactly(gqa, tmp_path):
    "Under DDP every process ends with the same weights, through the first lesson, a resume and a QA-only fine-tuning."
    import torch.multiprocessing as mp
    data_dir = str(gqa["world"].root)
    for name, plan in (("full", [{}]), ("resumed", [{"stop_after": 3}, {"resume": True}])):
        mp.spawn(_ddp_pretraining_worker, args=(2, free_port(), data_dir, str(tmp_path / name), plan), nprocs=2, join=True)
    a, b, c = (torch.load(tmp_path / n / f"rank{r}.pt") for n, r in (("full", 0), ("full", 1), ("resumed", 0)))
    assert torch.equal(a, b) and torch.equal(a, c)
    init = torch.cat([p.detach().flatten() for p in toy_pretraining_model(gqa["tokenizer"], gqa["world"].store(),
                                                                          gqa["train_ids"]).parameters()])
    assert (a - init).abs().max() > 1e-3                                           # it trained


def test_pretrain_cli_guards_its_run_and_its_settings(gqa, tmp_path, capsys):
    from simplelxmert.cli import pretrain_cli
    base = ["--data-dir", str(gqa["world"].root), "--n-images", "60", "--out", str(tmp_path / "o"), "--quiet", "--batch-size", "16",
            "--steps", "3", "--first-lesson", "1", "--eval-every", "3", "--threads", "1"]
    pretrain_cli(base)
    assert "validation QA accuracy" in capsys.readouterr().out
    fresh = base + ["--out", str(tmp_path / "o2")]
    for argv, message in ((base, "holds a checkpoint (step 3): pass --resume to continue its run"),
                          (base + ["--steps", "6", "--resume"], "was trained with --steps 3: --resume continues"),
                          (base + ["--tasks", "mlm,qa", "--resume"], "was trained with --tasks mlm,matched,obj,qa"),
                          (fresh + ["--first-lesson", "3"], "--first-lesson 3 must be shorter than --steps 3"),
                          (fresh + ["--tasks", "mlm,vqa"], "--tasks must name some of")):
        with pytest.raises(SystemExit): pretrain_cli(argv)
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    pretrain_cli(["--out", str(tmp_path / "o"), "--resume", "--quiet", "--max-minutes", "5"])   # only how long: allowed
    assert not (tmp_path / "o2").exists()


def test_each_tasks_share_bench_runs_and_merges_its_results(tmp_path, capsys):
    "bench/exp_pretraining.py at a toy size: every variant asked for is scored by kind and merged into the --save file."
    import importlib.util, json
    spec = importlib.util.spec_from_file_location("exp_pretraining", Path(__file__).parents[1] / "bench" / "exp_pretraining.py")
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    small = ["--n-images", "60", "--pre-steps", "4", "--first-lesson", "2", "--fine-steps", "2", "--save", str(tmp_path / "r.json")]
    bench.main(small + ["--drop", "none", "--seed", "1"])
    bench.main(small + ["--drop", "scratch"])
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results) == {"every task", "from scratch"}
    for r in results.values(): assert set(r) == {*QUESTION_KINDS, "all"} and all(0 <= v <= 1 for v in r.values())
    assert "every task" in capsys.readouterr().out
