"Quick tests of simplelxmert.inference on a tiny random-weight checkpoint (and the shipped toy one when present)."
import contextlib, io, json, shutil
import numpy as np, pytest, torch
from PIL import Image
from simplelxmert.inference import (Predictor, recall_at_k, read_image, caption_batch, region_batch, encode_texts,
                                    encode_images, cached_scores, naive_scores, predict_cli, TOY_CHECKPOINT)
from simplelxmert.dataset import make_toy_data, make_eval_pairs, ITMPairDataset, collate_itm, image_id
from simplelxmert.encoders import LXMERTConfig
from simplelxmert.training import ITMModel


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "Toy data (12 images) and a checkpoint of a random-weight model with 1/1/2 layers, feature normalization on."
    torch.manual_seed(0); torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inference")
    toy = make_toy_data(root/"toy", n_images=12, seed=3)
    store, tok = toy.store(), toy.tokenizer()
    cfg = LXMERTConfig(vocab_size=len(tok), hidden_size=32, num_attention_heads=4, intermediate_size=64,
                       l_layers=1, r_layers=1, x_layers=2, visual_feat_dim=store.dim)
    norm = {"mean": np.linspace(-0.5, 0.5, store.dim).tolist(), "std": np.linspace(0.5, 2, store.dim).tolist()}
    ITMModel(cfg, feature_norm=norm).save_pretrained(root/"ckpt", tokenizer=tok, extra={"feature_store_meta": store.meta, "max_len": 32})
    return toy, store, Predictor.from_pretrained(root/"ckpt", device="cpu"), root


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


def _cli_error(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit): predict_cli(argv)
    return err.getvalue()


def test_clear_errors(setup, tmp_path):
    toy, store, pred, root = setup
    img = toy.images_dir/f"{store.ids[0]}.png"
    assert "nowhere.png" in _cli_error([str(root/"ckpt"), str(tmp_path/"nowhere.png"), "a red circle"])
    (tmp_path/"text.png").write_text("not an image")
    assert "text.png" in _cli_error([str(root/"ckpt"), str(tmp_path/"text.png"), "a red circle", "--boxes", "[[0, 0, 5, 5]]"])
    bad = tmp_path/"bad"; shutil.copytree(root/"ckpt", bad); (bad/"model.safetensors").unlink()
    assert "missing model.safetensors" in _cli_error([str(bad), str(img), "a red circle"])
    bad = tmp_path/"dims"; shutil.copytree(root/"ckpt", bad)
    cfg = json.loads((bad/"config.json").read_text())
    next(v for v in cfg.values() if isinstance(v, dict) and "hidden_size" in v)["intermediate_size"] = 48
    (bad/"config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="intermediate") as e: Predictor.from_pretrained(bad)
    assert len(str(e.value)) < 1000 and "more" in str(e.value)            # a summary of the mismatch, not a wall of text


def test_predict_cli_boxes_argument(setup, capsys):
    toy, store, pred, root = setup
    img = toy.images_dir/f"{store.ids[0]}.png"
    many = json.dumps([[i, i, i + 5, i + 5] for i in range(40)])            # longer than a file name may be
    assert len(many) > 255 and predict_cli([str(root/"ckpt"), str(img), "a red circle .", "--boxes", many]) is None
    capsys.readouterr()
    assert "--boxes is not valid JSON" in _cli_error([str(root/"ckpt"), str(img), "a red circle", "--boxes", "[[0, 0, 5, 5],"])
    assert "--boxes: expected a list of [x1, y1, x2, y2]" in _cli_error([str(root/"ckpt"), str(img), "a red circle", "--boxes", "[[5, 5, 0, 0]]"])


def test_predict_cli_more_inputs(setup, tmp_path, capsys):
    toy, store, pred, root = setup
    img = toy.images_dir/f"{store.ids[0]}.png"
    ck = [str(root/"ckpt"), str(img), "a red circle ."]
    assert predict_cli(ck + ["--boxes", str(toy.root/"boxes.json")]) is None          # the kit's own {file: boxes} file
    with_file = float(capsys.readouterr().out.split()[0])
    np.testing.assert_allclose(with_file, pred.score(img, ["a red circle ."])[0], atol=1e-3)
    (tmp_path/"alone"/"images").mkdir(parents=True); shutil.copy(img, tmp_path/"alone"/"images"/img.name)
    assert predict_cli([ck[0], str(tmp_path/"alone"/"images"/img.name), ck[2]]) is None   # no boxes.json: the toy extractor finds the shapes
    np.testing.assert_allclose(float(capsys.readouterr().out.split()[0]), with_file, atol=1e-3)
    assert "is a folder" in _cli_error([ck[0], str(toy.images_dir), ck[2]])
    assert "--batch-size must be at least 1" in _cli_error(ck + ["--batch-size", "0"])
    if not torch.cuda.is_available(): assert "sees no CUDA GPU" in _cli_error(ck + ["--device", "cuda"])
    assert "is not one torch knows" in _cli_error(ck + ["--device", "tpu9"])
    bad = tmp_path/"cut"; shutil.copytree(root/"ckpt", bad)
    (bad/"model.safetensors").write_bytes((bad/"model.safetensors").read_bytes()[:100])
    assert "model.safetensors cannot be read" in _cli_error([str(bad), str(img), "a red circle"])
    bad = tmp_path/"json"; shutil.copytree(root/"ckpt", bad); (bad/"config.json").write_text("{'not': json")
    assert "config.json is not valid JSON" in _cli_error([str(bad), str(img), "a red circle"])


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


def test_predict_cli_prints_scores(setup, capsys):
    toy, store, pred, root = setup
    img = toy.images_dir/f"{store.ids[0]}.png"
    assert predict_cli([str(root/"ckpt"), str(img), "a red circle .", "a blue square ."]) is None   # console script: exit 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].endswith("a blue square .")
    np.testing.assert_allclose([float(l.split()[0]) for l in lines], pred.score(img, ["a red circle .", "a blue square ."]), atol=1e-3)


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


def test_demo_recipe_flags_are_train_flags():
    from simplelxmert.inference import recipe_argv, recipe_of
    assert recipe_argv({"batch_size": 128, "lr": 5e-4}) == ["--batch-size", "128", "--lr", "0.0005"]
    assert recipe_argv({"no_amp": True, "quiet": False}) == ["--no-amp"]
    with pytest.raises(ValueError, match="bogus"): recipe_argv({"bogus": 1})
    if (TOY_CHECKPOINT/"config.json").exists():
        recipe = recipe_of("toy")
        assert "lr" in recipe and "steps" not in recipe and "out" not in recipe
        assert len(recipe_argv(recipe)) >= len(recipe)       # the shipped recipe maps onto simplelxmert_train's flags


def test_demo_cli_missing_checkpoint_fails_early(tmp_path):
    from simplelxmert.inference import demo_cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        demo_cli(["--out", str(tmp_path/"demo"), "--checkpoint", str(tmp_path/"nowhere")])
    assert e.value.code == 2 and "nowhere" in err.getvalue() and not (tmp_path/"demo").exists()


def test_demo_cli_names_a_bad_setting(tmp_path):
    from simplelxmert.inference import demo_cli
    (tmp_path/"afile").write_text("x")
    for argv, message in ((["--retrieval-images", "0"], "--retrieval-images must be at least 1"),
                          (["--n-images", "31"], "--n-images must be at least 32 (two test images and a full training batch of 128"),
                          (["--n-images", "15", "--checkpoint", "toy"], "--n-images must be at least 16 (two test images)"),
                          (["--minutes", "0"], "--minutes must be positive"),
                          (["--out", str(tmp_path/"afile")], "is a file: give a folder")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
            demo_cli(["--out", str(tmp_path/"demo"), *argv])
        assert message in err.getvalue(), argv
    assert not (tmp_path/"demo").exists()


def test_min_demo_images_fits_the_split():
    from simplelxmert.inference import min_demo_images
    from simplelxmert.dataset import split_by_image, CaptionRecord
    def split_sizes(n):
        recs = split_by_image([CaptionRecord(image=f"{i}.png", caption="c", number=0) for i in range(n)])
        return {s: sum(r.split == s for r in recs) for s in ("train", "val", "test")}
    for batch in (None, 32, 128, 200):
        n = min_demo_images(batch)
        ok = lambda m: split_sizes(m)["test"] >= 2 and (batch is None or 5 * split_sizes(m)["train"] >= batch)
        assert ok(n) and not ok(n - 1), (batch, n)


def test_demo_resumes_its_own_run_and_names_another(tmp_path, capsys):
    from simplelxmert.inference import demo, training_progress
    out = tmp_path/"demo"; base = ["--out", str(out), "--n-images", "32", "--retrieval-images", "2", "--quiet"]
    if not (TOY_CHECKPOINT/"config.json").exists(): pytest.skip("the demo's recipe comes from the shipped toy checkpoint")
    demo(base + ["--steps", "3", "--minutes", "1e-4"])          # stops after its first step: the budget is spent
    first = training_progress(out/"checkpoint")
    assert first["step"] < 3 and first["stopped"] == "time budget"
    demo(base + ["--steps", "3", "--minutes", "5"])             # the same run with a larger budget: resumed to the end
    assert "resuming the run saved at step" in capsys.readouterr().out
    assert training_progress(out/"checkpoint")["step"] == 3
    with pytest.raises(SystemExit, match=r"trained with --steps 3, not --steps 6: re-run with those settings"):
        demo(base + ["--steps", "6", "--minutes", "5"])
    world = (out/"data"/"toydata.json").read_text()
    with pytest.raises(SystemExit, match=r"trained with --n-images 32, not --n-images 40"):   # before any data is made
        demo(base[:2] + ["--n-images", "40"] + base[4:] + ["--steps", "3"])
    assert (out/"data"/"toydata.json").read_text() == world


def test_demo_resumes_a_moved_run_in_its_new_place(tmp_path, monkeypatch, capsys):
    from simplelxmert.inference import demo, training_progress
    if not (TOY_CHECKPOINT/"config.json").exists(): pytest.skip("the demo's recipe comes from the shipped toy checkpoint")
    (tmp_path/"a").mkdir(); (tmp_path/"b").mkdir()
    args = ["--n-images", "32", "--retrieval-images", "2", "--quiet", "--steps", "3"]
    monkeypatch.chdir(tmp_path/"a")
    demo(["--out", "demo"] + args + ["--minutes", "1e-4"])                # a relative --out, stopped after a step
    assert "re-run it with the same --out and a larger --minutes" in capsys.readouterr().out
    (tmp_path/"a"/"demo").rename(tmp_path/"moved")
    monkeypatch.chdir(tmp_path/"b")
    demo(["--out", "../moved"] + args + ["--minutes", "5"])
    assert "resuming the run saved at step" in capsys.readouterr().out
    assert training_progress(tmp_path/"moved"/"checkpoint")["step"] == 3
    assert not any((tmp_path/"b").iterdir()) and not (tmp_path/"a"/"demo").exists()   # no second world anywhere


def test_demo_names_a_checkpoint_it_cannot_keep_or_continue(tmp_path, capsys):
    import shutil
    from simplelxmert.inference import demo, demo_cli
    from simplelxmert.training import STATE_NAME
    if not (TOY_CHECKPOINT/"config.json").exists(): pytest.skip("the demo's recipe comes from the shipped toy checkpoint")
    out = tmp_path/"demo"; base = ["--out", str(out), "--n-images", "32", "--retrieval-images", "2", "--quiet", "--steps", "2"]
    demo(base + ["--minutes", "1e-4"]); ckpt = out/"checkpoint"; capsys.readouterr()   # stopped by its budget at step 1
    (ckpt/STATE_NAME).unlink()                                          # a run without its trainer state: kept, said so
    demo(base)
    assert f"holds this run at step 1/2 without its trainer state ({STATE_NAME}), so it cannot continue" in capsys.readouterr().out
    history = (ckpt/"history.json").read_text()
    (ckpt/"history.json").write_text('{"a": 1}')                         # valid JSON, not a history: named
    with pytest.raises(SystemExit) as e: demo_cli(base)
    assert e.value.code == 2 and "history.json that is not a training run's" in capsys.readouterr().err
    (ckpt/"history.json").write_text(history)
    (ckpt/"config.json").write_text('{"step": 1, "train_a')             # damaged: the file is named
    with pytest.raises(SystemExit) as e: demo_cli(base)
    assert e.value.code == 2 and "config.json is not valid JSON" in capsys.readouterr().err
    (ckpt/"config.json").write_text('{"step": 1}')                        # not the demo's run
    with pytest.raises(SystemExit, match="holds a checkpoint this demo did not train"): demo(base)
    shutil.rmtree(ckpt)
    with pytest.raises(SystemExit, match=r"holds a world of --n-images 32 --seed 0, not --n-images 40 --seed 0"):
        demo(base[:2] + ["--n-images", "40"] + base[4:])


@pytest.mark.skipif(not (TOY_CHECKPOINT/"model.safetensors").exists(), reason="no shipped toy checkpoint")
def test_demo_says_when_a_checkpoint_may_have_trained_on_its_test_images(tmp_path, capsys):
    from simplelxmert.inference import demo
    demo(["--out", str(tmp_path/"demo"), "--n-images", "40", "--retrieval-images", "2", "--checkpoint", "toy"])
    out = capsys.readouterr().out
    assert "careful: toy was trained on this world, seed 0, split over 2000 images" in out and "never seen in training" not in out


def test_demo_stops_on_ctrl_c_during_training_and_resumes(tmp_path, monkeypatch, capsys):
    import simplelxmert.training as training
    from simplelxmert.inference import demo, training_progress
    if not (TOY_CHECKPOINT/"config.json").exists(): pytest.skip("the demo's recipe comes from the shipped toy checkpoint")
    class CtrlCAtOnce(training.StopOnInterrupt):            # as if Ctrl-C came during the first step
        def __enter__(self): super().__enter__(); self.hit = True; return self
    out = tmp_path/"demo"; argv = ["--out", str(out), "--n-images", "32", "--retrieval-images", "2", "--quiet", "--steps", "3"]
    with monkeypatch.context() as m:
        m.setattr(training, "StopOnInterrupt", CtrlCAtOnce)
        with pytest.raises(SystemExit) as e: demo(argv)
    assert e.value.code == 130 and "interrupted at step 1/3; re-run the same command" in capsys.readouterr().err
    assert training_progress(out/"checkpoint")["step"] == 1 and not (out/"report.json").exists()   # stopped before evaluating
    assert training_progress(out/"checkpoint")["stopped"] == "interrupted"
    report = demo(argv)
    assert report["training"]["step"] == 3 and "resuming the run saved at step 1" in capsys.readouterr().out
    assert report["training"]["stopped"] is None                      # the run's last save: its end
