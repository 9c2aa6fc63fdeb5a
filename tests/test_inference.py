"Quick tests of simplelxmert.inference on a tiny random-weight checkpoint (and the shipped toy one when present)."
import json, shutil
import numpy as np, pytest, torch
from PIL import Image
from simplelxmert.inference import (Predictor, recall_at_k, read_image, caption_batch, region_batch, encode_texts,
                                    encode_images, cached_scores, naive_scores, TOY_CHECKPOINT)
from simplelxmert.dataset import make_toy_data, make_eval_pairs, ITMPairDataset, collate_itm, image_id
from simplelxmert.encoders import LXMERTConfig
from simplelxmert.training import ITMModel


# the `setup` fixture (toy data and a random-weight checkpoint) is in conftest.py


def test_recall_at_k_hand_built():
    s = np.array([[0.9, 0.1, 0.8, 0.0], [0.2, 0.7, 0.3, 0.95], [0.5, 0.6, 0.1, 0.4]])
    r = recall_at_k(s, np.array([0, 1, 1, 2]), ks=(1, 2, 3))
    assert r["i2t"] == pytest.approx({1: 1/3, 2: 2/3, 3: 1.0})
    assert r["t2i"] == pytest.approx({1: 0.5, 2: 1.0, 3: 1.0})


def test_recall_at_k_ties_and_bad_gt():
    assert recall_at_k(np.ones((4, 4)), np.arange(4), ks=(1, 4)) == {"i2t": {1: 0.0, 4: 1.0}, "t2i": {1: 0.0, 4: 1.0}}
    s = np.random.default_rng(0).random((5, 10)); gt = np.repeat(np.arange(5), 2); s[gt, np.arange(10)] += 1
    assert recall_at_k(s, gt, ks=(1,)) == {"i2t": {1: 1.0}, "t2i": {1: 1.0}}
    with pytest.raises(ValueError, match="without any caption"): recall_at_k(s, np.zeros(10, int))
    with pytest.raises(ValueError, match="one image row per caption"): recall_at_k(s, np.arange(5))


def test_read_image_errors_name_the_file(tmp_path):
    Image.new("RGB", (4, 3)).save(tmp_path/"ok.png"); (tmp_path/"bad.png").write_bytes(b"no")
    assert read_image(tmp_path/"ok.png").size == (4, 3)
    with pytest.raises(FileNotFoundError, match="nope.png"): read_image(tmp_path/"nope.png")
    with pytest.raises(ValueError, match="bad.png"): read_image(tmp_path/"bad.png")


def test_predictor_equals_training_time_logits(setup):
    toy, store, pred, _ = setup
    pairs = make_eval_pairs(toy.records(), toy.scenes(), kind="compositional", seed=0)[:12]
    b = collate_itm([ITMPairDataset(pairs, store, pred.tokenizer, pred.max_len)[i] for i in range(len(pairs))]); b.pop("label")
    with torch.no_grad(): want = pred.model(**b).numpy()
    got = np.array([pred.logits(store[image_id(p.image)], [p.caption])[0] for p in pairs])
    np.testing.assert_allclose(got, want, atol=1e-5)
    from_file = np.array([pred.logits(toy.images_dir/p.image, [p.caption])[0] for p in pairs])   # extractor path
    np.testing.assert_allclose(from_file, want, atol=1e-4)
    from simplelxmert.inference import boxes_next_to
    path = toy.images_dir/pairs[0].image                                                          # a PIL image, boxes given
    np.testing.assert_allclose(pred.logits(Image.open(path), [pairs[0].caption], boxes=boxes_next_to(path)), want[:1], atol=1e-4)
    np.testing.assert_allclose(pred.score(store[image_id(pairs[0].image)], [pairs[0].caption]), 1 / (1 + np.exp(-want[:1])), atol=1e-6)


def test_batched_equals_single(setup):
    toy, store, pred, _ = setup
    caps = [r.caption for r in toy.records()[:9]] + ["a red circle ."]
    f = store[store.ids[0]]
    one = np.concatenate([pred.score(f, [c]) for c in caps])
    for bs in (1, 3, 64): np.testing.assert_allclose(pred.score(f, caps, batch_size=bs), one, atol=1e-6)


def test_attention_maps_sum_to_one_over_real_boxes(setup):
    toy, store, pred, _ = setup
    f = next(store[i] for i in store.ids if not store[i].mask.all())   # an image with a padded box
    real = f.mask
    att = pred.attend(f, toy.records()[5].caption)
    np.testing.assert_allclose(att.cross[..., real].sum(-1), 1, atol=1e-5)
    assert np.abs(att.cross[..., ~real]).max(initial=0) == 0
    np.testing.assert_allclose(att.vision[:, :, real][..., real].sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(att.language.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(att.logit, pred.logits(f, [att.caption])[0], atol=1e-5)


def test_cached_retrieval_equals_naive(setup):
    toy, store, pred, _ = setup
    recs = toy.records()[:20]; images = sorted({r.image for r in recs})
    text = caption_batch(pred.tokenizer, [r.caption for r in recs], pred.max_len)
    vis = region_batch([store[image_id(im)] for im in images])
    vis["visual_mask"][0, -1] = 0                                  # a padded box, to exercise the masks
    naive = naive_scores(pred.model, text, vis, batch_size=7)
    tb, vb = encode_texts(pred.model, text), encode_images(pred.model, vis)
    np.testing.assert_allclose(cached_scores(pred.model, tb, vb, batch_size=13), naive, atol=1e-5)
    np.testing.assert_allclose(cached_scores(pred.model, tb, vb, batch_size=13, cls_only=False), naive, atol=1e-5)


def test_mismatched_config_is_summarized(setup, tmp_path):
    toy, store, pred, root = setup
    bad = tmp_path/"dims"; shutil.copytree(root/"ckpt", bad)
    cfg = json.loads((bad/"config.json").read_text())
    next(v for v in cfg.values() if isinstance(v, dict) and "hidden_size" in v)["intermediate_size"] = 48
    (bad/"config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="intermediate") as e: Predictor.from_pretrained(bad)
    assert len(str(e.value)) < 1000 and "more" in str(e.value)            # a summary of the mismatch, not a wall of text


def test_cached_retrieval_needs_a_cross_layer(setup):
    toy, store, pred, _ = setup
    model = ITMModel(LXMERTConfig(vocab_size=len(pred.tokenizer), hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                  l_layers=1, r_layers=1, x_layers=0, visual_feat_dim=store.dim))
    with pytest.raises(ValueError, match="x_layers=0"): encode_texts(model, caption_batch(pred.tokenizer, ["a red circle ."]))


def test_dual_encoder_batches_reach_every_image():
    "Each step's batch: distinct images, one of their captions each, drawn from every image (not always the first ones)."
    from simplelxmert.inference import distinct_image_batch
    gt = np.repeat(np.arange(12), 5)                                          # 12 images x 5 captions
    g, seen = torch.Generator().manual_seed(0), set()
    for _ in range(20):
        caps = distinct_image_batch(gt, 4, g)
        assert len(caps) == 4 and len(set(gt[caps])) == 4; seen |= set(gt[caps])
    assert seen == set(range(12))
    assert sorted(gt[distinct_image_batch(gt, 100, g)]) == list(range(12))   # a batch larger than the split: every image once


@pytest.mark.skipif(not (TOY_CHECKPOINT/"model.safetensors").exists(), reason="no shipped toy checkpoint")
def test_shipped_toy_checkpoint_loads_and_scores(tmp_path):
    pred = Predictor.from_pretrained("toy", device="cpu")
    assert pred.extractor is not None and pred.extractor.dim == pred.model.lxmert.config.visual_feat_dim
    toy = make_toy_data(tmp_path/"t", n_images=10, seed=5)
    s = pred.score(toy.images_dir/f"{toy.store().ids[0]}.png", [r.caption for r in toy.records()[:3]])
    assert s.shape == (3,) and ((0 < s) & (s < 1)).all()


def test_rerank_every_pair_equals_exhaustive_and_shortlists_have_k(setup):
    from simplelxmert.inference import retrieval_banks, fit_dual_encoder, rerank, rerank_recall
    toy, store, pred, _ = setup
    recs = toy.records()[:30]
    tb, vb, gt = retrieval_banks(pred, recs, store)
    first = fit_dual_encoder(tb, vb, gt, steps=5).scores(tb, vb)
    full = cached_scores(pred.model, tb, vb)
    every = rerank(pred.model, tb, vb, first, k=max(full.shape))
    assert every["pairs"] == full.size
    np.testing.assert_allclose(every["i2t"], full, atol=1e-5); assert rerank_recall(every, gt) == recall_at_k(full, gt)
    r = rerank(pred.model, tb, vb, first, k=2)
    assert (np.isfinite(r["i2t"]).sum(1) == 2).all() and (np.isfinite(r["t2i"]).sum(0) == 2).all()
    assert r["pairs"] == np.count_nonzero(np.isfinite(r["i2t"]) | np.isfinite(r["t2i"]))


def test_predictor_refuses_an_empty_caption(setup):
    toy, store, pred, _ = setup
    f = store[store.ids[0]]
    for captions, message in ((["a red circle .", "", "a blue square ."], "caption 2 of 3 is empty"),
                              ("   ", "caption 1 of 1 is empty"), (["a red circle .", None], "caption 2 of 2 is a NoneType")):
        for call in (pred.score, pred.logits): 
            with pytest.raises((ValueError, TypeError), match=message): call(f, captions)
        with pytest.raises((ValueError, TypeError), match=message): caption_batch(pred.tokenizer, [captions] if isinstance(captions, str) else captions)
    with pytest.raises(ValueError, match="caption 1 of 1 is empty"): pred.attend(f, "")
    assert pred.score(f, []).shape == (0,)                                 # no captions: no scores, no error


def test_boxes_beside_only_when_the_file_names_the_image(setup, tmp_path):
    from simplelxmert.inference import boxes_beside, boxes_next_to
    toy, store, pred, _ = setup
    img = toy.images_dir/f"{store.ids[0]}.png"
    f, boxes = boxes_beside(img)                                            # beside the images/ folder, as toydata writes it
    assert f == toy.root/"boxes.json" and boxes.shape[1] == 4
    (tmp_path/"a"/"images").mkdir(parents=True); shutil.copy(img, tmp_path/"a"/"images"/img.name)
    (tmp_path/"a"/"boxes.json").write_text(json.dumps({store.ids[0]: [[1, 1, 9, 9]]}))   # named by its id
    assert boxes_next_to(tmp_path/"a"/"images"/img.name).tolist() == [[1, 1, 9, 9]]
    (tmp_path/"a"/"images"/"boxes.json").write_text(json.dumps({"x.png": [[0, 0, 3, 3]]}))   # nearer, but unrelated
    assert boxes_next_to(tmp_path/"a"/"images"/img.name).tolist() == [[1, 1, 9, 9]]
    (tmp_path/"b").mkdir(); shutil.copy(img, tmp_path/"b"/img.name)                   # not in an images/ folder:
    (tmp_path/"boxes.json").write_text("damaged")                                       # the folder above is not searched
    assert boxes_beside(tmp_path/"b"/img.name) is None
    (tmp_path/"b"/"boxes.json").write_text("damaged")
    with pytest.raises(ValueError, match=str(tmp_path/"b"/"boxes.json")): boxes_beside(tmp_path/"b"/img.name)
    with pytest.raises(ValueError, match="boxes.json"): pred.score(tmp_path/"b"/img.name, ["a red circle ."])
    assert pred.score(tmp_path/"b"/img.name, ["a red circle ."], boxes="none").shape == (1,)   # none: not looked for


def test_first_correct_rank_counts_ties_against_the_model():
    from simplelxmert.inference import first_correct_rank
    s = np.array([[0.5, 0.5, 0.5], [0.9, 0.1, 0.9]]); correct = np.array([[True, False, False], [False, True, True]])
    assert first_correct_rank(s, correct).tolist() == [3, 2]                  # ties count against; best correct item counts
    s = np.random.default_rng(1).random((6, 18)); gt = np.repeat(np.arange(6), 3)
    own = np.zeros(s.shape, bool); own[gt, np.arange(18)] = True
    for k in (1, 3, 7):                                                        # R@K = mean(rank <= K), both ways
        r = recall_at_k(s, gt, ks=(k,))
        assert r["i2t"][k] == np.mean(first_correct_rank(s, own) <= k) and r["t2i"][k] == np.mean(first_correct_rank(s.T, own.T) <= k)


def test_subject_phrase():
    from simplelxmert.inference import subject_phrase
    assert subject_phrase("The Red disc is left of a blue square.") == "red disc"
    with pytest.raises(ValueError, match="not a ShapesWorld caption"): subject_phrase("two dogs play in the snow")
