"Tests of simplelxmert.cli (appendix A5): simplelxmert_predict and simplelxmert_demo, every refusal one line."
import configparser, contextlib, io, json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from simplelxmert.cli import predict_cli, demo_cli
from conftest import refusal
from simplelxmert.inference import TOY_CHECKPOINT
from simplelxmert.dataset import make_toy_data

ROOT = Path(__file__).resolve().parents[1]
OLD_INFERENCE_ALL = ['TOY_CHECKPOINT', 'CHECKPOINT_FILES', 'NOT_RECIPE', 'FALLBACK_RECIPE', 'FIRST_LESSON', 'DEMO_FLAGS',
    'checkpoint_dir', 'read_image', 'boxes_next_to', 'sigmoid', 'Predictor', 'show_scores', 'AttentionMaps', 'box_heat',
    'show_box_attention', 'show_word_attention', 'show_matrix', 'box_names', 'grounding', 'recall_at_k', 'TextBank',
    'VisionBank', 'cross_projections', 'caption_batch', 'region_batch', 'encode_texts', 'encode_images', 'match_pooled',
    'pair_batches', 'cached_pair_scores', 'cached_scores', 'naive_scores', 'retrieval_banks', 'retrieval_eval', 'mean_pool',
    'DualEncoder', 'distinct_image_batch', 'fit_dual_encoder', 'rerank', 'rerank_recall', 'pair_logits', 'itm_accuracy',
    'predict_cli', 'recipe_of', 'recipe_argv', 'short_run_recipe', 'training_progress', 'demo_parser', 'demo_recipe',
    'min_demo_images', 'demo', 'demo_cli']   # simplelxmert.inference.__all__ before the CLI moved to simplelxmert.cli
# the `setup` fixture (toy data and a random-weight checkpoint) is in conftest.py


def _cli_error(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit): predict_cli(argv)
    return err.getvalue()



def refused_demo(argv, text):
    "`demo(argv)` stops with exit status 2 and one line on stderr, `simplelxmert_demo: error: ...` containing `text`."
    from simplelxmert.cli import demo
    assert refusal(demo, argv, text).startswith("simplelxmert_demo: error: ")

def test_clear_errors(setup, tmp_path):
    toy, store, pred, root = setup
    img = toy.images_dir/f"{store.ids[0]}.png"
    assert "nowhere.png" in _cli_error([str(root/"ckpt"), str(tmp_path/"nowhere.png"), "a red circle"])
    (tmp_path/"text.png").write_text("not an image")
    assert "text.png" in _cli_error([str(root/"ckpt"), str(tmp_path/"text.png"), "a red circle", "--boxes", "[[0, 0, 5, 5]]"])
    bad = tmp_path/"bad"; shutil.copytree(root/"ckpt", bad); (bad/"model.safetensors").unlink()
    assert "missing model.safetensors" in _cli_error([str(bad), str(img), "a red circle"])


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


def test_predict_cli_prints_scores(setup, capsys):
    toy, store, pred, root = setup
    img = toy.images_dir/f"{store.ids[0]}.png"
    assert predict_cli([str(root/"ckpt"), str(img), "a red circle .", "a blue square ."]) is None   # console script: exit 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].endswith("a blue square .")
    np.testing.assert_allclose([float(l.split()[0]) for l in lines], pred.score(img, ["a red circle .", "a blue square ."]), atol=1e-3)


def test_demo_recipe_flags_are_train_flags():
    from simplelxmert.cli import recipe_argv, recipe_of
    assert recipe_argv({"batch_size": 128, "lr": 5e-4}) == ["--batch-size", "128", "--lr", "0.0005"]
    assert recipe_argv({"no_amp": True, "quiet": False}) == ["--no-amp"]
    with pytest.raises(ValueError, match="bogus"): recipe_argv({"bogus": 1})
    if (TOY_CHECKPOINT/"config.json").exists():
        recipe = recipe_of("toy")
        assert "lr" in recipe and "steps" not in recipe and "out" not in recipe
        assert len(recipe_argv(recipe)) >= len(recipe)       # the shipped recipe maps onto simplelxmert_train's flags


def test_demo_cli_missing_checkpoint_fails_early(tmp_path):
    from simplelxmert.cli import demo_cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        demo_cli(["--out", str(tmp_path/"demo"), "--checkpoint", str(tmp_path/"nowhere")])
    assert e.value.code == 2 and "nowhere" in err.getvalue() and not (tmp_path/"demo").exists()


def test_demo_cli_names_a_bad_setting(tmp_path):
    from simplelxmert.cli import demo_cli
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
    from simplelxmert.cli import min_demo_images
    from simplelxmert.dataset import split_by_image, CaptionRecord
    def split_sizes(n):
        recs = split_by_image([CaptionRecord(image=f"{i}.png", caption="c", number=0) for i in range(n)])
        return {s: sum(r.split == s for r in recs) for s in ("train", "val", "test")}
    for batch in (None, 32, 128, 200):
        n = min_demo_images(batch)
        ok = lambda m: split_sizes(m)["test"] >= 2 and (batch is None or 5 * split_sizes(m)["train"] >= batch)
        assert ok(n) and not ok(n - 1), (batch, n)


def test_demo_resumes_its_own_run_and_names_another(tmp_path, capsys):
    from simplelxmert.cli import demo, training_progress
    out = tmp_path/"demo"; base = ["--out", str(out), "--n-images", "32", "--retrieval-images", "2", "--quiet"]
    if not (TOY_CHECKPOINT/"config.json").exists(): pytest.skip("the demo's recipe comes from the shipped toy checkpoint")
    demo(base + ["--steps", "3", "--minutes", "1e-4"])          # stops after its first step: the budget is spent
    first = training_progress(out/"checkpoint")
    assert first["step"] < 3 and first["stopped"] == "time budget"
    demo(base + ["--steps", "3", "--minutes", "5"])             # the same run with a larger budget: resumed to the end
    assert "resuming the run saved at step" in capsys.readouterr().out
    assert training_progress(out/"checkpoint")["step"] == 3
    refused_demo(base + ["--steps", "6", "--minutes", "5"], "trained with --steps 3, not --steps 6: re-run with those settings")
    world = (out/"data"/"toydata.json").read_text()
    refused_demo(base[:2] + ["--n-images", "40"] + base[4:] + ["--steps", "3"],   # before any data is made
                 "trained with --n-images 32, not --n-images 40")
    assert (out/"data"/"toydata.json").read_text() == world


def test_demo_resumes_a_moved_run_in_its_new_place(tmp_path, monkeypatch, capsys):
    from simplelxmert.cli import demo, training_progress
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
    from simplelxmert.cli import demo, demo_cli
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
    refused_demo(base, "holds a checkpoint this demo did not train")
    shutil.rmtree(ckpt)
    refused_demo(base[:2] + ["--n-images", "40"] + base[4:], "holds a world of --n-images 32 --seed 0, not --n-images 40 --seed 0")


@pytest.mark.skipif(not (TOY_CHECKPOINT/"model.safetensors").exists(), reason="no shipped toy checkpoint")
def test_demo_says_when_a_checkpoint_may_have_trained_on_its_test_images(tmp_path, capsys):
    from simplelxmert.cli import demo
    demo(["--out", str(tmp_path/"demo"), "--n-images", "40", "--retrieval-images", "2", "--checkpoint", "toy"])
    out = capsys.readouterr().out
    assert "careful: toy was trained on this world, seed 0, split over 2000 images" in out and "never seen in training" not in out


def test_demo_stops_on_ctrl_c_during_training_and_resumes(tmp_path, monkeypatch, capsys):
    import simplelxmert.training as training
    from simplelxmert.cli import demo, training_progress
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





def test_moved_names_still_import_from_inference():
    import simplelxmert.inference as inference, simplelxmert.cli as cli
    for name in OLD_INFERENCE_ALL: assert hasattr(inference, name), name
    for name in set(OLD_INFERENCE_ALL) - set(inference.__all__): assert getattr(inference, name) is getattr(cli, name), name
    from simplelxmert.inference import predict_cli as p, demo_cli as d, demo_parser   # from-imports too
    assert p is predict_cli and d is demo_cli and demo_parser().prog == "simplelxmert_demo"
    with pytest.raises(AttributeError, match="no_such_name"): inference.no_such_name


def test_console_scripts_point_to_cli():
    c = configparser.ConfigParser(delimiters=["="]); c.read(ROOT/"settings.ini")
    scripts = dict(s.split("=") for s in c["DEFAULT"]["console_scripts"].split())
    assert scripts["simplelxmert_predict"] == "simplelxmert.cli:predict_cli"
    assert scripts["simplelxmert_demo"] == "simplelxmert.cli:demo_cli"


def test_boxes_json_beside_the_image_is_used_only_when_it_names_it(setup, tmp_path, capsys):
    toy, store, pred, root = setup
    img, ck = toy.images_dir/f"{store.ids[0]}.png", str(root/"ckpt")
    predict_cli([ck, str(img), "a red circle ."]); out = capsys.readouterr()    # the world's own file names the image
    assert str(toy.root/"boxes.json") in out.err and out.err.count("\n") == 1     # used, and said
    mine = tmp_path/"mine"; mine.mkdir(); shutil.copy(img, mine/img.name); image = str(mine/img.name)
    predict_cli([ck, image, "a red circle ."]); found = capsys.readouterr().out   # nothing beside it: the extractor's own
    for unrelated in ({"other.png": [[0, 0, 60, 60]]}, [[0, 0, 60, 60]]):       # another image's boxes, or a bare list
        (mine/"boxes.json").write_text(json.dumps(unrelated))
        predict_cli([ck, image, "a red circle ."]); out = capsys.readouterr()
        assert out.out == found and out.err == "", unrelated                       # not used
    refusal(predict_cli, [ck, image, "a red circle .", "--boxes", "auto"], "--boxes auto", img.name, "leave --boxes out")
    (mine/"boxes.json").write_text(json.dumps({img.name: [[0, 0, 60, 60]]}))    # names the image: used, by default and auto
    with_file = pred.score(image, ["a red circle ."], boxes=[[0, 0, 60, 60]])[0]
    for extra in ([], ["--boxes", "auto"]):
        predict_cli([ck, image, "a red circle ."] + extra); out = capsys.readouterr()
        assert float(out.out.split()[0]) == pytest.approx(with_file, abs=1e-3) and str(mine/"boxes.json") in out.err
    assert pred.logits(image, ["a red circle ."]) == pytest.approx(pred.logits(image, ["a red circle ."], boxes=[[0, 0, 60, 60]]))
    (mine/"boxes.json").write_text(json.dumps({"other.png": [[0, 0, 60, 60]]}))   # the Predictor too: unrelated, not used
    assert pred.logits(image, ["a red circle ."]) == pytest.approx(pred.logits(image, ["a red circle ."], boxes="none"))
    assert pred.logits(image, ["a red circle ."]) != pytest.approx(pred.logits(image, ["a red circle ."], boxes=[[0, 0, 60, 60]]), abs=1e-7)
    predict_cli([ck, image, "a red circle .", "--boxes", "none"]); assert capsys.readouterr().out == found
    (mine/"boxes.json").write_bytes(b"\x89PNG\r\n not JSON")                     # damaged: one line naming it
    for extra in ([], ["--boxes", "auto"]):
        refusal(predict_cli, [ck, image, "a red circle ."] + extra, mine/"boxes.json", "repair or delete it")
    predict_cli([ck, image, "a red circle .", "--boxes", "none"]); assert capsys.readouterr().out == found   # not read
    (mine/"boxes.json").write_text(json.dumps({img.name: [[5, 5, 0, 0]]}))      # an entry that is not boxes: named
    refusal(predict_cli, [ck, image, "a red circle ."], f"{mine/'boxes.json'}: {img.name}", "expected a list of [x1, y1, x2, y2]")


def test_an_empty_caption_is_refused_by_number(setup):
    toy, store, pred, root = setup
    img, ck = str(toy.images_dir/f"{store.ids[0]}.png"), str(root/"ckpt")
    refusal(predict_cli, [ck, img, "a red circle .", ""], "caption 2 of 2 is empty", "at least one word")
    refusal(predict_cli, [ck, img, " \t "], "caption 1 of 1 is empty")
    refusal(predict_cli, [str(root/"nowhere"), img, ""], "caption 1 of 1 is empty")   # named before anything is loaded


def test_every_predict_refusal_is_one_line(setup, tmp_path):
    toy, store, pred, root = setup
    img, ck = str(toy.images_dir/f"{store.ids[0]}.png"), str(root/"ckpt")
    (tmp_path/"text.png").write_text("not an image")
    (tmp_path/"b.json").write_text(json.dumps({"other.png": [[0, 0, 5, 5]]}))
    cut = tmp_path/"cut"; shutil.copytree(ck, cut)
    (cut/"model.safetensors").write_bytes((cut/"model.safetensors").read_bytes()[:100])
    half = tmp_path/"half"; shutil.copytree(ck, half); shutil.rmtree(half/"tokenizer")
    cases = [([], ["the following arguments are required", "--help"]),
             ([ck, img], ["give one or more captions, or --question", "--help"]),
             ([ck, img, "c", "--bogus"], ["unrecognized arguments: --bogus", "--help"]),
             ([ck, img, "c", "--batch-size", "x"], ["--batch-size", "invalid int value"]),
             ([ck, img, "c", "--batch-size", "0"], ["--batch-size must be at least 1"]),
             ([ck, img, "c", "--device", "tpu9"], ["'tpu9' is not one torch knows", "use cpu, cuda"]),
             ([str(tmp_path/"none"), img, "c"], [tmp_path/"none", "give a folder written by simplelxmert_train"]),
             ([str(half), img, "c"], [half, "missing tokenizer"]),
             ([str(cut), img, "c"], [cut/"model.safetensors", "cannot be read"]),
             ([ck, str(tmp_path/"nowhere.png"), "c"], [tmp_path/"nowhere.png", "check the path"]),
             ([ck, str(toy.images_dir), "c"], [toy.images_dir, "give one image file"]),
             ([ck, str(tmp_path/"text.png"), "c", "--boxes", "none"], [tmp_path/"text.png", "give a PNG or JPEG file"]),
             ([ck, img, "c", "--boxes", "[[0, 0, 5"], ["--boxes is not valid JSON"]),
             ([ck, img, "c", "--boxes", str(tmp_path/"nope.json")], [tmp_path/"nope.json", "no such file"]),
             ([ck, img, "c", "--boxes", str(tmp_path/"b.json")], [tmp_path/"b.json", "has no entry for", "--boxes none"])]
    for argv, names in cases: refusal(predict_cli, argv, *names)
    if not torch.cuda.is_available(): refusal(predict_cli, [ck, img, "c", "--device", "cuda"], "sees no CUDA GPU", "--device cpu")


def test_predict_ctrl_c_is_one_line(setup, monkeypatch):
    import simplelxmert.cli as cli
    toy, store, pred, root = setup
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(cli.Predictor, "from_pretrained", interrupted)
    refusal(predict_cli, [str(root/"ckpt"), str(toy.images_dir/f"{store.ids[0]}.png"), "c"], "interrupted", "run it again", code=130)


def test_every_demo_refusal_is_one_line(tmp_path, monkeypatch):
    import simplelxmert.cli as cli
    (tmp_path/"afile").write_text("x")
    out = ["--out", str(tmp_path/"demo")]
    cases = [(["--bogus"], ["unrecognized arguments: --bogus", "--help"]),
             (["--steps", "x"], ["--steps", "invalid int value"]),
             (["--n-images", "15", "--checkpoint", "toy"], ["--n-images must be at least 16"]),
             (["--steps", "0"], ["--steps must be at least 1"]),
             (["--threads", "0"], ["--threads must be at least 1"]),
             (["--minutes", "-1"], ["--minutes must be positive"]),
             (["--out", str(tmp_path/"afile")], [tmp_path/"afile", "is a file: give a folder"]),
             (["--checkpoint", str(tmp_path/"nowhere")], [tmp_path/"nowhere", "give a folder written by simplelxmert_train"])]
    for argv, names in cases: refusal(demo_cli, out + argv, *names)
    assert not (tmp_path/"demo").exists()                                     # all before any work
    (tmp_path/"demo"/"checkpoint").mkdir(parents=True)
    for f in ("config.json", "history.json", "model.safetensors"): (tmp_path/"demo"/"checkpoint"/f).write_text("{")
    refusal(demo_cli, out, tmp_path/"demo"/"checkpoint"/"config.json", "delete", "choose another --out")
    def interrupted(*a, **k): raise KeyboardInterrupt                          # a Ctrl-C outside training
    monkeypatch.setattr(cli, "make_toy_data", interrupted)
    refusal(demo_cli, ["--out", str(tmp_path/"demo2"), "--checkpoint", "toy", "--n-images", "16"], "interrupted",
            "re-run the same command", code=130)


def test_every_train_refusal_is_one_line_with_status_2_and_before_any_work(tmp_path):
    from simplelxmert.cli import train_cli
    toy = make_toy_data(tmp_path/"toy", n_images=12, seed=3)
    flickr = ["--data", "flickr30k", "--captions", str(toy.karpathy_json), "--out", str(tmp_path/"o")]
    cases = [(flickr + ["--store", str(tmp_path/"nowhere")], [tmp_path/"nowhere", "does not exist", "simplelxmert_extract"]),
             (["--data", "flickr30k", "--captions", str(tmp_path/"none.json"), "--store", str(toy.store_path), "--out",
               str(tmp_path/"o")], [tmp_path/"none.json", "does not exist"]),
             (flickr, ["--data flickr30k needs --store"]),
             (flickr + ["--store", str(toy.store_path), "--position-captions", "2"], ["--position-captions needs ShapesWorld"]),
             (["--data", "toy", "--data-dir", str(tmp_path/"new"), "--out", str(tmp_path/"o"), "--position-steps", "5"],
              ["--position-steps needs --position-captions"]),
             (["--data", "toy", "--data-dir", str(tmp_path/"new"), "--out", str(tmp_path/"o"), "--position-captions", "2",
               "--position-steps", "9", "--steps", "9"], ["--position-steps 9", "between 0 and --steps 9"])]
    for argv, names in cases: assert "simplelxmert_train: error: " in refusal(train_cli, argv, *names)
    assert not (tmp_path/"new").exists() and not (tmp_path/"o").exists()      # refused before the world is made


def test_ctrl_c_ends_every_command_with_status_130(tmp_path, monkeypatch, capsys):
    import simplelxmert.cli as cli, simplelxmert.training as training
    from simplelxmert.cli import pretrain_cli, toydata_cli, train_cli
    def interrupted(*a, **k): raise KeyboardInterrupt                          # a Ctrl-C before training
    with monkeypatch.context() as m:
        m.setattr(cli, "make_toy_data", interrupted); m.setattr(cli, "toy_gqa", interrupted)
        err = io.StringIO()
        with contextlib.redirect_stderr(err): assert toydata_cli([str(tmp_path/"t")]) == 130
        assert "interrupted; run the same command again" in err.getvalue() and err.getvalue().count("\n") == 1
        refusal(train_cli, ["--data", "toy", "--data-dir", str(tmp_path/"t"), "--out", str(tmp_path/"o")], "interrupted", code=130)
        refusal(pretrain_cli, ["--data-dir", str(tmp_path/"t"), "--out", str(tmp_path/"p")], "interrupted", code=130)
    class CtrlCAtOnce(training.StopOnInterrupt):                                # as if Ctrl-C came during the first step
        def __enter__(self): super().__enter__(); self.hit = True; return self
    run = ["--data", "toy", "--data-dir", str(tmp_path/"toy"), "--n-images", "24", "--out", str(tmp_path/"run"), "--quiet",
           "--hidden", "32", "--heads", "2", "--batch-size", "8", "--steps", "3", "--eval-every", "3", "--max-val-pairs", "10",
           "--threads", "1"]
    with monkeypatch.context() as m:
        m.setattr(training, "StopOnInterrupt", CtrlCAtOnce)
        with pytest.raises(SystemExit) as e: train_cli(run)
    assert e.value.code == 130 and "interrupted at step 1/3" in capsys.readouterr().out
    assert cli.training_progress(tmp_path/"run")["stopped"] == "interrupted"
    train_cli(run + ["--resume"])                                              # continues, and ends normally
    assert cli.training_progress(tmp_path/"run")["step"] == 3 and cli.training_progress(tmp_path/"run")["stopped"] is None
