"Quick tests of simplelxmert.inference: Recall@K, image loading (more arrive with the predictor and retrieval)."
import numpy as np, pytest
from PIL import Image
from simplelxmert.inference import recall_at_k, load_image

def test_recall_at_k_hand_built():
    s = np.array([[0.9, 0.1, 0.8, 0.0], [0.2, 0.7, 0.3, 0.95], [0.5, 0.6, 0.1, 0.4]])
    r = recall_at_k(s, np.array([0, 1, 1, 2]), ks=(1, 2, 3))
    assert r["i2t"] == pytest.approx({1: 1/3, 2: 2/3, 3: 1.0})
    assert r["t2i"] == pytest.approx({1: 0.5, 2: 1.0, 3: 1.0})

def test_recall_at_k_ties_count_against_the_model():
    r = recall_at_k(np.ones((4, 4)), np.arange(4), ks=(1, 4))
    assert r["i2t"][1] == 0 and r["t2i"][1] == 0 and r["i2t"][4] == 1

def test_recall_at_k_perfect_and_bad_gt():
    s = np.random.default_rng(0).random((5, 10)); gt = np.repeat(np.arange(5), 2); s[gt, np.arange(10)] += 1
    assert recall_at_k(s, gt, ks=(1,)) == {"i2t": {1: 1.0}, "t2i": {1: 1.0}}
    with pytest.raises(ValueError, match="without any caption"): recall_at_k(s, np.zeros(10, int))
    with pytest.raises(ValueError, match="one image row per caption"): recall_at_k(s, np.arange(5))

def test_load_image_errors_name_the_file(tmp_path):
    Image.new("RGB", (4, 3)).save(tmp_path/"ok.png"); (tmp_path/"bad.png").write_bytes(b"no")
    assert load_image(tmp_path/"ok.png").size == (4, 3)
    with pytest.raises(FileNotFoundError, match="nope.png"): load_image(tmp_path/"nope.png")
    with pytest.raises(ValueError, match="bad.png"): load_image(tmp_path/"bad.png")
