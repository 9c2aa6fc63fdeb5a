"Tests of simplelxmert.dataset: splits, ShapesWorld captions and negatives, tokenizer, ITM datasets (the readers: tests/test_formats.py)."
import json, random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from simplelxmert.dataset import (
    ITM_MATCH, CaptionRecord, CaptionSpec, ObjectRef, ITMDataset, ITMPair, ITMPairDataset, TextOnlyBaseline,
    caption_is_true, caption_truth, check_disjoint_splits, collate_itm, describe, hard_negatives, image_id,
    load_tokenizer, make_eval_pairs, make_toy_data, negative_candidates, parse_caption, read_captions, read_kaggle_csv,
    read_karpathy_json, ToyData, scene_captions, encode_captions, split_by_image, toydata_cli, train_tokenizer, write_shapes_captions,
    NEGATIVE_KINDS, _signature)
from simplelxmert.features import COLORS, SHAPES, SIZES, Scene, ShapeObject, sample_scene

# --- real-format fixtures ---------------------------------------------------------------------------------
KAGGLE = """image_name| comment_number| comment
1000092795.jpg| 0| Two young guys with shaggy hair look at their hands while hanging out in the yard .
1000092795.jpg| 1| Two young , White males are outside near many bushes .
2199200615.jpg| 3| A brown dog is running through the grass .
2199200615.jpg| 4   A dog runs across the grass .
"""

def test_split_by_image_is_disjoint():
    recs = [CaptionRecord(f"{i}.jpg", f"c{j}", j) for i in range(103) for j in range(5)]
    split = split_by_image(recs, (0.8, 0.1, 0.1), seed=3)
    counts = check_disjoint_splits(split)
    assert sum(counts.values()) == 103 and counts["train"] > counts["val"] > 0 and counts["test"] > 0
    assert split == split_by_image(recs, (0.8, 0.1, 0.1), seed=3)
    with pytest.raises(ValueError, match="1.jpg"):
        check_disjoint_splits([CaptionRecord("1.jpg", "a", 0, "train"), CaptionRecord("1.jpg", "b", 1, "val")])

# --- ShapesWorld captions ---------------------------------------------------------------------------------
def random_spec(rng):
    ref = lambda: ObjectRef(rng.choice(COLORS), rng.choice(SHAPES), rng.choice((None,) + SIZES))
    return CaptionSpec(ref(), rng.choice(("left of", "right of", "above", "below")), ref())

def test_describe_parse_round_trip():
    rng = random.Random(0)
    texts = set()
    for _ in range(500):
        spec = random_spec(rng); text = describe(spec, rng); texts.add(text.split()[0])
        assert parse_caption(text) == spec and parse_caption(text[:-1] + " .") == spec
    assert len(texts) > 3          # the wording varies
    assert parse_caption("A dog runs across the grass .") is None

def test_truth_from_boxes():
    s = Scene("s", "s.png", 100, 100, [ShapeObject("red", "circle", "small", (0, 0, 10, 10)),
                                       ShapeObject("blue", "square", "large", (50, 5, 90, 45))])
    red, blue = ObjectRef("red", "circle"), ObjectRef("blue", "square")
    assert caption_is_true(s, CaptionSpec(red, "left of", blue)) and caption_is_true(s, CaptionSpec(blue, "right of", red))
    assert caption_truth(s, CaptionSpec(red, "right of", blue)) is False
    assert caption_truth(s, CaptionSpec(red, "above", blue)) is True           # centres 5 vs 25: clear
    assert caption_truth(s, CaptionSpec(ObjectRef("red", "circle", "large"), "left of", blue)) is False
    s.objects[1].box = (50, 0, 90, 14)                                          # centres 5 vs 7: undecided
    assert caption_truth(s, CaptionSpec(red, "above", blue)) is None and not caption_is_true(s, CaptionSpec(red, "above", blue))

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_data(tmp_path_factory.mktemp("toy")/"toy", n_images=80, seed=0)

def test_hard_negatives_always_false_and_same_wording(toy):
    rng, kinds = random.Random(0), Counter()
    for scene in toy.scenes():
        for text in scene_captions(scene, rng, n=5):
            spec = parse_caption(text)
            assert spec is not None and caption_is_true(scene, spec)
            negs = hard_negatives(scene, spec, rng)
            assert negs and any(k == "swap_relation" for k, _ in negs)
            for kind, neg in negs:
                kinds[kind] += 1
                assert caption_truth(scene, neg) is False and _signature(neg) == _signature(spec)
                assert parse_caption(describe(neg, rng)) == neg
            for cands in negative_candidates(scene, spec).values():
                assert all(caption_truth(scene, c) is False for c in cands)
    assert set(kinds) == set(NEGATIVE_KINDS)

def test_shapes_caption_files(toy):
    kaggle, karpathy = read_kaggle_csv(toy.captions_csv), read_karpathy_json(toy.karpathy_json)
    assert len(kaggle) == len(karpathy) == 5 * len(toy.scenes())
    assert [parse_caption(r.caption) for r in kaggle] == [parse_caption(r.caption) for r in karpathy]
    counts = check_disjoint_splits(karpathy)
    assert counts == {"train": 64, "val": 8, "test": 8}
    scene_of = {s.file: s for s in toy.scenes()}
    assert all(caption_is_true(scene_of[r.image], parse_caption(r.caption)) for r in kaggle)
    assert all((toy.images_dir/r.image).exists() and r.image_id in toy.store() for r in kaggle)

def test_make_toy_data_idempotent(toy):
    before = {p: p.stat().st_mtime_ns for p in toy.root.rglob("*") if p.is_file()}
    make_toy_data(toy.root, n_images=80, seed=0)
    assert {p: p.stat().st_mtime_ns for p in toy.root.rglob("*") if p.is_file()} == before
    with pytest.raises(ValueError, match="holds toy data"): make_toy_data(toy.root, n_images=81, seed=0)

def test_toydata_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: toydata_cli(["--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out
    assert toydata_cli([str(tmp_path/"t"), "--n-images", "6", "--seed", "2"]) == 0
    td = ToyData(tmp_path/"t")
    assert len(td.scenes()) == 6 and len(td.store()) == 6 and len(td.records()) == 30
    assert toydata_cli([str(tmp_path/"t"), "--n-images", "7"]) == 2 and "holds toy data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: toydata_cli([str(tmp_path/"u"), "--seed", "-1"])
    assert e.value.code == 2 and "--seed must be 0 or more" in capsys.readouterr().err and not (tmp_path/"u").exists()

# --- tokenizer --------------------------------------------------------------------------------------------
def test_tokenizer_round_trip_and_truncation(tmp_path, toy):
    texts = [r.caption for r in toy.records("train")]
    tok = train_tokenizer(texts, tmp_path/"tok", vocab_size=500)
    assert tok.pad_token_id == 0 and len(tok) > 30
    for t in texts[:50]:
        ids = tok(t, max_length=50, truncation=True, padding="max_length")["input_ids"]
        assert len(ids) == 50 and ids[0] == tok.cls_token_id and tok.decode(ids, skip_special_tokens=True) == t.lower()
        short = tok(t, max_length=5, truncation=True)["input_ids"]
        assert len(short) == 5 and short[0] == tok.cls_token_id and short[-1] == tok.sep_token_id
    again = load_tokenizer(tmp_path/"tok")
    assert again(texts[0])["input_ids"] == tok(texts[0])["input_ids"]

def test_load_tokenizer_offline_message():
    with pytest.raises(RuntimeError, match="train_tokenizer"): load_tokenizer("no-such/tokenizer-x", local_files_only=True)

# --- ITM datasets -----------------------------------------------------------------------------------------
def test_itm_dataset_negatives(toy):
    recs, scenes, tok = toy.records("train"), toy.scenes(), toy.tokenizer()
    ds = ITMDataset(recs, toy.store_path, tok, neg_prob=0.5, hard_neg_prob=0.5, scenes=scenes, seed=0)
    scene_of = {s.image_id: s for s in scenes}
    epochs = []
    for e in range(3):
        ds.set_epoch(e)
        pairs = [ds.pair(i) for i in range(len(ds))]
        assert sum(p.label == ITM_MATCH for p in pairs) == len(ds) - round(0.5 * len(ds))     # balanced
        for i, p in enumerate(pairs):
            if p.kind == "random": assert ds.records[ds.source[i]].image != p.image        # never the same image
            if p.kind in ("positive", "random"):                                            # re-worded, same meaning
                assert parse_caption(p.caption) == parse_caption(ds.records[ds.source[i]].caption)
            truth = caption_truth(scene_of[image_id(p.image)], parse_caption(p.caption))
            assert truth is (p.label == ITM_MATCH)
        kinds = Counter(p.kind for p in pairs)
        assert kinds["random"] > 0 and all(kinds[k] > 0 for k in NEGATIVE_KINDS)
        epochs.append(pairs)
    assert epochs[0] != epochs[1]
    reworded = sum(p.caption != r.caption for p, r in zip(epochs[0], recs) if p.kind == "positive")
    assert reworded > 0.5 * sum(p.kind == "positive" for p in epochs[0])
    ds.set_epoch(1)
    assert [ds.pair(i) for i in range(len(ds))] == epochs[1]                                 # deterministic

def test_random_negatives_never_same_image_without_scenes(toy):
    recs = toy.records("train")[:40]          # 8 images x 5 captions: many chances to hit the same image
    ds = ITMDataset(recs, toy.store_path, toy.tokenizer(), neg_prob=1.0, seed=1)
    for e in range(20):
        ds.set_epoch(e)
        assert all(ds.records[ds.source[i]].image != ds.records[i].image for i in range(len(ds)))
        assert (ds.labels == 0).all()

def test_collate_and_workers(toy):
    ds = ITMDataset(toy.records("train"), toy.store_path, toy.tokenizer(), seed=0)
    batches = list(DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collate_itm))
    b = batches[0]
    B, T = b["input_ids"].shape
    assert B == 16 and T <= 50
    assert b["input_ids"].dtype == b["attention_mask"].dtype == b["token_type_ids"].dtype == b["visual_mask"].dtype == torch.long
    assert b["visual_feats"].dtype == b["visual_pos"].dtype == b["label"].dtype == torch.float32
    assert b["visual_feats"].shape[:2] == b["visual_pos"].shape[:2] == b["visual_mask"].shape == (16, toy.store().k)
    assert (b["attention_mask"].sum(1) == (b["input_ids"] != 0).sum(1)).all()
    assert torch.equal(torch.cat([x["label"] for x in batches]), torch.tensor(ds.labels, dtype=torch.float32))
    fixed = collate_itm([ds[0], ds[1]], pad_to=50)
    assert fixed["input_ids"].shape == (2, 50)

def test_eval_pairs_fixed_balanced_separate(toy):
    recs, scenes = toy.records("test"), toy.scenes()
    rnd, comp = (make_eval_pairs(recs, scenes, kind=k, seed=0) for k in ("random", "compositional"))
    assert rnd == make_eval_pairs(recs, scenes, kind="random", seed=0) and rnd != comp
    for pairs in (rnd, comp):
        assert len(pairs) == 2 * len(recs) and sum(p.label for p in pairs) == len(recs)
    assert {p.kind for p in comp} <= {"positive", *NEGATIVE_KINDS}
    assert all(p.image == q.image for p, q in zip(comp[0::2], comp[1::2]))
    ds = ITMPairDataset(comp, toy.store_path, toy.tokenizer())
    assert collate_itm([ds[i] for i in range(4)])["label"].tolist() == [1.0, 0.0, 1.0, 0.0]

def test_text_only_baseline_near_chance_on_compositional(tmp_path):
    scenes = [sample_scene(np.random.default_rng([1, i]), i) for i in range(1500)]   # captions need no pixels
    write_shapes_captions(scenes, tmp_path/"w", seed=1)
    recs = read_karpathy_json(tmp_path/"w"/"dataset_shapes.json")
    train, test = [r for r in recs if r.split == "train"], [r for r in recs if r.split != "train"]
    acc = TextOnlyBaseline().fit(make_eval_pairs(train, scenes, "compositional", seed=1)).accuracy(
        make_eval_pairs(test, scenes, "compositional", seed=2))
    n = 2 * len(test)
    assert abs(acc - 0.5) < 2.5 / np.sqrt(n), (acc, n)
    # the probe is not simply too weak: negatives worded by a fixed sentence of their own are found out
    fixed = lambda ps: [p if p.label else type(p)(p.image, "the " + p.caption.lower(), 0, p.kind) for p in ps]
    leaky = TextOnlyBaseline().fit(fixed(make_eval_pairs(train, scenes, "compositional", seed=1))).accuracy(
        fixed(make_eval_pairs(test, scenes, "compositional", seed=2)))
    assert leaky > 0.9

def test_read_captions_splits_kaggle_by_karpathy(tmp_path):
    (tmp_path/"results.csv").write_text(KAGGLE)
    (tmp_path/"split.json").write_text(json.dumps({"images": [
        {"filename": "1000092795.jpg", "split": "val", "sentences": [{"raw": "x"}]}]}))
    with pytest.warns(UserWarning, match="1 images"):
        recs = read_captions(tmp_path/"results.csv", split_file=tmp_path/"split.json")
    assert [(r.image, r.split) for r in recs] == [("1000092795.jpg", "val")] * 2
    recs = read_captions(tmp_path/"results.csv", seed=0)
    assert all(r.split in ("train", "val", "test") for r in recs) and check_disjoint_splits(recs)

def test_encode_captions_truncates_keeping_sep(tmp_path):
    tok = train_tokenizer(["a red circle is left of a blue square ."] * 3, tmp_path/"t", vocab_size=100)
    assert encode_captions(tok, []) == []
    (ids,) = encode_captions(tok, ["a red circle is left of a blue square ."], max_len=4)
    assert ids.tolist() == [tok.cls_token_id] + tok.convert_tokens_to_ids(["a", "red"]) + [tok.sep_token_id]

@pytest.mark.parametrize("blank", ["", " ", "   ", "\n\t", "\u3000", "\u2028"])
def test_encode_captions_refuses_a_blank_caption(tmp_path, blank):
    tok = train_tokenizer(["a red circle is left of a blue square ."] * 3, tmp_path/"t", vocab_size=100)
    with pytest.raises(ValueError, match=r"caption 3 of 3 \(.*\) is empty or blank"):
        encode_captions(tok, ["a red circle .", "a blue square .", blank])
    with pytest.raises(ValueError, match="caption 1 of 1 .* has no words"): encode_captions(tok, ["\x00\x01\ufeff"])
    with pytest.raises(ValueError, match="caption 1 of 1"): encode_captions(tok, [None])

def test_encode_captions_reads_special_tokens_as_text(tmp_path, toy):
    texts = [r.caption for r in toy.records("train")]
    for tok in (train_tokenizer(texts, tmp_path/"t", vocab_size=1000), load_tokenizer(tmp_path/"t"), toy.tokenizer()):
        text = "A red circle [SEP] [CLS] is left of a blue square [PAD] [MASK] ."
        (ids,) = encode_captions(tok, [text])
        assert (ids == tok.sep_token_id).sum() == 1 and ids[-1] == tok.sep_token_id     # no extra [SEP]
        assert (ids == tok.cls_token_id).sum() == 1 and ids[0] == tok.cls_token_id
        assert not np.isin(ids, [tok.pad_token_id, tok.mask_token_id]).any()
        assert tok(text)["input_ids"] == ids.tolist()          # a direct call on a loaded tokenizer agrees
    ds = ITMPairDataset([ITMPair(toy.records("test")[0].image, text, ITM_MATCH)], toy.store_path, toy.tokenizer())
    assert (ds[0]["input_ids"] == toy.tokenizer().sep_token_id).sum() == 1

# --- one-object captions and their flipped twins ----------------------------------------------------------
def test_position_captions_true_and_flipped_twins_false(toy):
    from simplelxmert.dataset import FLIPPED, flip_pairs, parse_position_caption, position_records, truth_of
    recs, scene_of = toy.records(), {s.image_id: s for s in toy.scenes()}
    one = position_records(recs, toy.scenes(), per_image=4, seed=3)
    per_image = Counter(r.image for r in one)
    assert max(per_image.values()) <= 4 and len(per_image) > 0.9 * len({r.image for r in recs})
    split_of = {r.image: r.split for r in recs}
    assert all(r.split == split_of[r.image] for r in one)
    assert one == position_records(recs, toy.scenes(), per_image=4, seed=3)                  # seeded
    assert all(parse_caption(r.caption) is None for r in one)                                # never a relation caption
    pairs = flip_pairs(one)
    assert len(pairs) == 2 * len(one) and Counter(p.kind for p in pairs) == {"positive": len(one), "flip_position": len(one)}
    for pos, neg in zip(pairs[0::2], pairs[1::2]):
        spec, flipped = parse_position_caption(pos.caption), parse_position_caption(neg.caption)
        assert truth_of(scene_of[image_id(pos.image)], spec) is True and pos.label == ITM_MATCH
        assert truth_of(scene_of[image_id(neg.image)], flipped) is False and neg.label == 0
        assert flipped.obj == spec.obj and flipped.position == FLIPPED[spec.position]
        assert neg.caption.replace(FLIPPED[spec.position], spec.position) == pos.caption       # only the position changed
    with pytest.raises(ValueError, match="record 0"): flip_pairs(recs[:1])
    with pytest.raises(ValueError, match="scenes"): position_records(recs, None)

def test_itm_dataset_random_negatives_false_with_one_object_captions(toy):
    "A one-object caption of another image can be true of this one too: it is redrawn, as a relation caption would be."
    from simplelxmert.dataset import parse_position_caption, position_records, truth_of
    recs = toy.records("train")
    recs = recs + position_records(recs, toy.scenes(), per_image=4)
    ds = ITMDataset(recs, toy.store_path, toy.tokenizer(), neg_prob=0.5, hard_neg_prob=0.5, scenes=toy.scenes(), seed=0)
    scene_of = {s.image_id: s for s in toy.scenes()}
    for e in range(3):
        ds.set_epoch(e)
        for i in range(len(ds)):
            p = ds.pair(i)
            spec = parse_caption(p.caption) or parse_position_caption(p.caption)
            assert spec is not None and truth_of(scene_of[image_id(p.image)], spec) is (p.label == ITM_MATCH), p
