"Tests of simplelxmert.formats (appendix A1): caption records, image names, the Kaggle and Karpathy readers, the canonical vocabulary."
import json, random, subprocess, sys

import numpy as np
import pytest

from simplelxmert.formats import (CaptionRecord, KAGGLE_HEADER, canonical_vocabulary, check_image_name, image_id, image_path,
                                  read_kaggle_csv, read_karpathy_json, text_lines)

# --- real-format fixtures ---------------------------------------------------------------------------------
KAGGLE = """image_name| comment_number| comment
1000092795.jpg| 0| Two young guys with shaggy hair look at their hands while hanging out in the yard .
1000092795.jpg| 1| Two young , White males are outside near many bushes .
2199200615.jpg| 3| A brown dog is running through the grass .
2199200615.jpg| 4   A dog runs across the grass .
"""
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

def test_kaggle_reader_real_format(tmp_path):
    (tmp_path/"results.csv").write_text(KAGGLE)
    recs = read_kaggle_csv(tmp_path/"results.csv")
    assert [(r.image, r.number) for r in recs] == [("1000092795.jpg", 0), ("1000092795.jpg", 1),
                                                  ("2199200615.jpg", 3), ("2199200615.jpg", 4)]
    assert recs[0].caption.startswith("Two young guys") and recs[0].caption.endswith("yard .")   # leading space gone
    assert recs[3].caption == "A dog runs across the grass ."                                  # repaired, not dropped
    assert recs[3].image_id == "2199200615" and all(r.split is None for r in recs)
    (tmp_path/"crlf.csv").write_bytes(("\ufeff" + KAGGLE).replace("\n", "\r\n").encode())     # BOM + Windows line ends
    assert read_kaggle_csv(tmp_path/"crlf.csv") == recs

def test_kaggle_reader_names_file_and_line(tmp_path):
    p = tmp_path/"results.csv"
    p.write_text(KAGGLE + "3000.jpg| x| A cat .\n4000.jpg only the name\n")
    with pytest.raises(ValueError) as e: read_kaggle_csv(p)
    assert f"{p}:6" in str(e.value) and f"{p}:7" in str(e.value) and f"{p}:5" not in str(e.value)
    p.write_text("name,caption\n1.jpg,A cat\n")
    with pytest.raises(ValueError, match="header"): read_kaggle_csv(p)

@pytest.mark.parametrize("row, expected", [
    ("2199200615.jpg| 4   A dog runs across the grass .", ("2199200615.jpg", 4, "A dog runs across the grass .")),   # the real row
    ("1.jpg| 0  A cat sleeps .", ("1.jpg", 0, "A cat sleeps .")),                                                 # two spaces
    ("1.jpg| 3| 3 dogs run .", ("1.jpg", 3, "3 dogs run .")),                                                     # not damaged
    ("img| 3 dogs run", None),          # comment 3 "dogs run", or the caption "3 dogs run" without its number? refused
    ("img| 7   A dog runs .", None),    # not a comment number 0-4
    ("img|4   A dog runs .", ("img", 4, "A dog runs .")),
    ("img| 12   A dog runs .", None),
    ("img| A dog runs .", None)])
def test_kaggle_repairs_only_the_known_damage(tmp_path, row, expected):
    p = tmp_path/"results.csv"
    p.write_text("image_name| comment_number| comment\n1000092795.jpg| 0| Two guys .\n" + row + "\n")
    if expected is None:
        with pytest.raises(ValueError, match=rf"{p}:3: expected 'image_name\| comment_number\| comment'"): read_kaggle_csv(p)
    else:
        r = read_kaggle_csv(p)[1]
        assert (r.image, r.number, r.caption) == expected

@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r"])
def test_kaggle_line_separators_stay_in_the_caption(tmp_path, sep):
    p = tmp_path/"results.csv"
    p.write_bytes(f"image_name| comment_number| comment\n1.jpg| 0| A dog{sep}runs .\n1.jpg| 1| A cat .\n".encode())
    recs = read_kaggle_csv(p)
    assert [(r.number, r.caption) for r in recs] == [(0, f"A dog{sep}runs ."), (1, "A cat .")]
    assert text_lines(f"a{sep}b\r\nc\n") == [f"a{sep}b", "c"]

def test_not_utf8_names_file_and_line(tmp_path):
    p = tmp_path/"results.csv"
    p.write_bytes((KAGGLE + "3000.jpg| 0| A café .\n").encode("latin-1"))
    with pytest.raises(ValueError) as e: read_kaggle_csv(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:6: not UTF-8 text (byte 0xe9 at column 19)") and "UTF-8" in msg and "\n" not in msg
    j = tmp_path/"d.json"
    j.write_bytes(b'{"images": [\n{"filename": "1.jpg", "split": "train", "sentences": [{"raw": "caf\xe9"}]}]}')
    with pytest.raises(ValueError, match=rf"^{j}:2: not UTF-8 text .*save the file as UTF-8"): read_karpathy_json(j)
    (tmp_path/"utf16.csv").write_bytes(KAGGLE.encode("utf-16"))
    with pytest.raises(ValueError, match="utf16.csv:1: not UTF-8"): read_kaggle_csv(tmp_path/"utf16.csv")
    j.write_text('{"images": [\n{"filename": "1.jpg",,}]}')
    with pytest.raises(ValueError, match=rf"^{j}:2: not valid JSON"): read_karpathy_json(j)

def test_karpathy_reader(tmp_path):
    data = {"dataset": "flickr30k", "images": [
        {"filename": "1.jpg", "imgid": 0, "split": "train", "sentids": [0, 1], "sentences": [
            {"tokens": ["a", "dog"], "raw": " A dog.", "imgid": 0, "sentid": 0},
            {"tokens": ["a", "brown", "dog"], "raw": "A brown dog.", "imgid": 0, "sentid": 1}]},
        {"filename": "2.jpg", "imgid": 1, "split": "val", "sentids": [2], "sentences": [
            {"tokens": ["a", "cat"], "raw": "A cat.", "imgid": 1, "sentid": 2}]},
        {"filename": "3.jpg", "imgid": 2, "split": "test", "sentids": [3], "sentences": [
            {"tokens": ["two", "cats"], "imgid": 2, "sentid": 3}]},
        {"filename": "4.jpg", "imgid": 3, "split": "restval", "sentids": [4], "sentences": [{"raw": "A bird."}]}]}
    (tmp_path/"d.json").write_text(json.dumps(data))
    recs = read_karpathy_json(tmp_path/"d.json")
    assert [(r.image, r.number, r.split) for r in recs] == [("1.jpg", 0, "train"), ("1.jpg", 1, "train"),
                                                           ("2.jpg", 0, "val"), ("3.jpg", 0, "test"), ("4.jpg", 0, "train")]
    assert recs[0].caption == "A dog." and recs[3].caption == "two cats"
    assert [r.image for r in read_karpathy_json(tmp_path/"d.json", splits=["val"])] == ["2.jpg"]
    (tmp_path/"bad.json").write_text(json.dumps({"images": [{"filename": "1.jpg"}]}))
    with pytest.raises(ValueError, match=r"images\[0\]"): read_karpathy_json(tmp_path/"bad.json")

@pytest.mark.parametrize("image, message", [
    ({"filename": "1.jpg", "split": "train", "sentences": ["a dog"]}, r"images\[0\]: sentence 0 must be"),
    ({"filename": "1.jpg", "split": "train", "sentences": [{"raw": 5}]}, r"images\[0\]: sentence 0 must be"),
    ({"filename": "1.jpg", "split": "train", "sentences": [{"tokens": "a dog"}]}, r"images\[0\]: sentence 0 must be"),
    ({"filename": "1.jpg", "split": "train", "sentences": [{"raw": "  "}]}, r"images\[0\]: sentence 0 is empty"),
    ({"filename": "1.jpg", "split": "train", "sentences": None}, r"images\[0\]: 'filename' must be a string and 'sentences' a list"),
    ({"filename": 123, "split": "train", "sentences": []}, r"images\[0\]: 'filename' must be a string")])
def test_karpathy_reader_names_a_malformed_entry(tmp_path, image, message):
    (tmp_path/"bad.json").write_text(json.dumps({"images": [image]}))
    with pytest.raises(ValueError, match=message): read_karpathy_json(tmp_path/"bad.json")

@pytest.mark.parametrize("name", ["../x.jpg", "/etc/x.jpg", "a/../../x.jpg", "..", "C:\\x.jpg"])
def test_image_names_never_escape(tmp_path, name):
    (tmp_path/"r.csv").write_text(f"image_name| comment_number| comment\n{name}| 0| A cat .\n")
    with pytest.raises(ValueError, match="plain file name"): read_kaggle_csv(tmp_path/"r.csv")
    data = {"images": [{"filename": name, "split": "train", "sentences": [{"raw": "A cat."}]}]}
    (tmp_path/"d.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="plain file name"): read_karpathy_json(tmp_path/"d.json")
    with pytest.raises(ValueError, match="plain file name"): check_image_name(name)

def test_image_path_stays_in_folder(tmp_path):
    (tmp_path/"images").mkdir()
    assert image_path(tmp_path/"images", "a.png") == (tmp_path/"images"/"a.png").resolve()
    for bad in ("../a.png", "/etc/passwd", "sub/../../a.png"):
        with pytest.raises(ValueError): image_path(tmp_path/"images", bad)
    assert image_id("shapes_000001.png") == "shapes_000001" == CaptionRecord("shapes_000001.png", "x", 0).image_id

# --- the canonical vocabulary -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def texts():
    "ShapesWorld captions of 300 scenes (no pixels needed)."
    from simplelxmert.dataset import scene_captions
    from simplelxmert.features import sample_scene
    rng = random.Random(0)
    return [c for i in range(300) for c in scene_captions(sample_scene(np.random.default_rng([0, i]), i), rng)]

def test_tokenizer_is_the_same_in_every_process(tmp_path, texts):
    (tmp_path/"texts.json").write_text(json.dumps(texts))
    code = ("import json, sys; from simplelxmert.dataset import train_tokenizer; "
            "train_tokenizer(json.load(open(sys.argv[1])), sys.argv[2], vocab_size=1000)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path/"texts.json"), str(tmp_path/f"tok{i}")])
             for i in range(3)]    # 🤗 tokenizers' trainer alone gave three different vocabularies in three processes
    assert [p.wait() for p in procs] == [0, 0, 0]
    vocabs = [(tmp_path/f"tok{i}"/"vocab.txt").read_text() for i in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2] and vocabs[0].startswith("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")

def test_canonical_vocabulary_keeps_every_texts_tokens(tmp_path, texts):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from simplelxmert.dataset import load_tokenizer
    for vocab_size in (1000, 60):                      # room for every word, and not
        wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        wp.normalizer, wp.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
        wp.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                                                 show_progress=False))
        vocab = canonical_vocabulary(wp, texts)
        assert vocab == canonical_vocabulary(wp, texts, SPECIAL_TOKENS)     # the trainer's special tokens, in order
        assert vocab[:5] == list(SPECIAL_TOKENS) and len(set(vocab)) == len(vocab) <= len(wp.get_vocab())
        (tmp_path/f"v{vocab_size}").mkdir(); (tmp_path/f"v{vocab_size}"/"vocab.txt").write_text("\n".join(vocab) + "\n")
        tok = load_tokenizer(tmp_path/f"v{vocab_size}")
        for t in texts: assert tok.tokenize(t) == wp.encode(t, add_special_tokens=False).tokens, (vocab_size, t)

# --- the names still import from simplelxmert.dataset -----------------------------------------------------
def test_dataset_reexports_formats():
    import simplelxmert.dataset as D, simplelxmert.formats as F
    moved = ["CaptionRecord", "image_id", "check_image_name", "image_path", "KAGGLE_HEADER", "read_kaggle_csv",
             "read_karpathy_json", "canonical_vocabulary"]
    for name in moved:
        assert getattr(D, name) is getattr(F, name) and name in D.__all__, name
    assert KAGGLE_HEADER == ("image_name", "comment_number", "comment")
    code = "import simplelxmert.formats, sys; bad = [m for m in sys.modules if m.startswith(('torch', 'simplelxmert.dataset', 'simplelxmert.features'))]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out      # formats sits below everything: it imports nothing of the kit, nor torch
