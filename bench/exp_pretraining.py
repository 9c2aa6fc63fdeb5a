"""Each pre-training task's share (chapter 06): the toy GQA experiment with every task, then without each task in turn.

Runs chapter 06's experiment — pre-training on the training images, fine-tuning on their questions — once with every
task and once without each of them (without matching, the first lesson goes too: it is a matching lesson), plus the
model fine-tuned from scratch, and prints (and with --save writes) the held-out QA accuracy by kind of question.
The same functions as the chapter: `toy_gqa`, `toy_pretraining_model`, `pretraining_config`,
`finetuning_config`, `fit_questions`.

    python bench/exp_pretraining.py --threads 1 --save bench/results/pretraining_tasks.json

`--seed S` repeats variants with another training seed (initial weights, batch order, masks; the same world and
questions), to see which differences outlast the seed:

    python bench/exp_pretraining.py --threads 1 --seed 1 --drop none mlm scratch --save bench/results/pretraining_tasks_seed1.json
"""
import argparse, dataclasses, json, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from simplelxmert.pretraining import (QUESTION_KINDS, TASKS, answer_predictions, collate_pretraining, finetuning_config,
                                      fit_questions, pretraining_config, toy_gqa, toy_pretraining_model)


def accuracy_by_kind(model, data, questions) -> dict:
    "Held-out QA accuracy per kind of question, and over all of them."
    pred, gold = answer_predictions(model, DataLoader(data["test_questions"], batch_size=256, collate_fn=collate_pretraining))
    kinds = np.array([q.kind for q in questions["test"]])
    return {**{k: float((pred[kinds == k] == gold[kinds == k]).mean()) for k in QUESTION_KINDS}, "all": float((pred == gold).mean())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-images", type=int, default=2000); p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pre-steps", type=int, default=1400); p.add_argument("--first-lesson", type=int, default=400)
    p.add_argument("--fine-steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="training seed (weights, batch order, masks); the world and its questions stay")
    p.add_argument("--drop", nargs="*", default=["none", *TASKS, "scratch"], help="variants: none (every task), a task to drop, scratch")
    p.add_argument("--save", default=None, help="JSON file for the results (merged into an existing one)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as work:
        gqa = toy_gqa(Path(work) / "toy", n_images=a.n_images)        # chapter 06's world, questions, tokenizer, datasets
        run_variants(a, gqa)


def run_variants(a, gqa: dict):
    "Pre-train (unless scratch) and fine-tune each variant of `a.drop`; print and save its held-out accuracy by kind."
    world, questions, tok, data, train_ids = (gqa[k] for k in ("world", "questions", "tokenizer", "data", "train_ids"))
    results = json.loads(Path(a.save).read_text()) if a.save and Path(a.save).exists() else {}
    for variant in a.drop:
        t0 = time.time()
        model = toy_pretraining_model(tok, world.store(), train_ids, seed=a.seed)
        seeded = lambda cfg: dataclasses.replace(cfg, seed=a.seed)
        if variant != "scratch":
            tasks = [t for t in TASKS if t != variant]
            fit_questions(model, data["pretrain"], seeded(pretraining_config(a.pre_steps, a.first_lesson, tasks)), data, tok)
        fit_questions(model, data["finetune"], seeded(finetuning_config(a.fine_steps, 1e-3 if variant == "scratch" else 3e-4)),
                      data, tok)
        name = {"none": "every task", "scratch": "from scratch"}.get(variant, f"without {variant}")
        results[name] = accuracy_by_kind(model, data, questions)
        print(f"{name:16} " + "  ".join(f"{k} {v:.3f}" for k, v in results[name].items()) + f"   ({(time.time() - t0) / 60:.1f} min)",
              flush=True)
        if a.save: Path(a.save).parent.mkdir(parents=True, exist_ok=True); Path(a.save).write_text(json.dumps(results, indent=1))


if __name__ == "__main__": main()
