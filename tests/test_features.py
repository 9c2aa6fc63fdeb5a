"Tests of simplelxmert.features: ShapesWorld, extractors (toy, Faster R-CNN, rebuilt from meta), find_shapes, the CLI."
import json, time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simplelxmert.features import (COLORS, SHAPES, RGB, Scene, ShapeObject, FeatureStore,
                                   PixelRoIExtractor, FasterRCNNExtractor, build_frcnn, draw_scene, extract_features, extract_cli,
                                   find_shapes, generate_shapes_world, load_scenes, make_extractor)
# the `world` fixture is in conftest.py


# ShapesWorld

def test_shapes_world_deterministic_unique_and_apart(world, tmp_path):
    out, scenes = world
    assert load_scenes(out / "scenes.json") == scenes and load_scenes(out) == scenes
    again = generate_shapes_world(tmp_path, 10, seed=3)
    assert again == scenes[:10]
    assert (tmp_path / "images" / "shapes_000004.png").read_bytes() == (out / "images" / "shapes_000004.png").read_bytes()
    assert generate_shapes_world(tmp_path / "other", 10, seed=4) != scenes[:10]
    boxes = json.loads((out / "boxes.json").read_text())
    for s in scenes:
        assert s.image_id == Path(s.file).stem and (out / "images" / s.file).exists()
        assert 2 <= len(s.objects) <= 3
        assert len({(o.color, o.shape) for o in s.objects}) == len(s.objects)
        assert all(o.color in COLORS and o.shape in SHAPES for o in s.objects)
        assert boxes[s.file] == [list(o.box) for o in s.objects]
        for i, a in enumerate(s.objects):
            assert 0 <= a.box[0] < a.box[2] <= s.width and 0 <= a.box[1] < a.box[3] <= s.height
            for b in s.objects[i + 1:]:   # no overlap
                assert a.box[2] <= b.box[0] or b.box[2] <= a.box[0] or a.box[3] <= b.box[1] or b.box[3] <= a.box[1]
        pix = np.asarray(Image.open(out / "images" / s.file))
        for o in s.objects:
            if o.shape != "triangle":
                assert tuple(pix[int((o.box[1] + o.box[3]) / 2), int((o.box[0] + o.box[2]) / 2)]) == RGB[o.color]


def test_scene_rejects_unknown_attribute(world):
    d = world[1][0].to_dict(); d["objects"][0]["shape"] = "hexagon"
    with pytest.raises(ValueError, match="hexagon"): Scene.from_dict(d)


def test_generate_object_counts(tmp_path):
    scenes = generate_shapes_world(tmp_path, 30, seed=0, min_objects=1, max_objects=4)
    assert {len(s.objects) for s in scenes} <= {1, 2, 3, 4} and len({len(s.objects) for s in scenes}) > 1


# toy extractor and extraction

def test_toy_features_normalized_boxes_and_mask(world):
    out, scenes = world
    ex = PixelRoIExtractor(k=5, output_size=3)
    rs = ex([out / "images" / s.file for s in scenes[:4]], [[o.box for o in s.objects] for s in scenes[:4]])
    for r, s in zip(rs, scenes[:4]):
        n = len(s.objects)
        assert r.feats.shape == (5, 27) and r.boxes.shape == (5, 4) and r.mask.tolist() == [True] * n + [False] * (5 - n)
        np.testing.assert_allclose(r.boxes[:n], np.array([o.box for o in s.objects]) / [s.width, s.height, s.width, s.height], atol=1e-6)
        assert (r.feats[n:] == 0).all() and (r.boxes[n:] == 0).all()
    with pytest.raises(ValueError, match="x2 > x1"): ex([out / "images" / scenes[0].file], [[[10, 10, 5, 20]]])


def test_find_shapes_recovers_true_boxes_and_toy_uses_it(world):
    out, scenes = world
    for s in scenes:
        found = find_shapes(out / "images" / s.file)
        np.testing.assert_allclose(found, np.array(sorted(o.box for o in s.objects)), atol=1.01)
    s = scenes[0]
    ex = PixelRoIExtractor(k=4)
    a = ex([out / "images" / s.file])[0]
    b = ex([out / "images" / s.file], [sorted(o.box for o in s.objects)])[0]
    assert a.mask.sum() == len(s.objects)
    np.testing.assert_allclose(a.feats, b.feats, atol=1e-3)


# Faster R-CNN (random weights, tiny images)

@pytest.fixture(scope="module")
def frcnn():
    return FasterRCNNExtractor(k=6, weights="random", device="cpu", min_size=64, max_size=96, proposals=50)


def test_frcnn_batched_equals_single(frcnn, world, tmp_path):
    out, scenes = world
    Image.open(out / "images" / scenes[1].file).resize((96, 64)).save(tmp_path / "wide.png")
    files = [out / "images" / scenes[0].file, tmp_path / "wide.png", out / "images" / scenes[2].file]
    batched = frcnn(files)
    for f, b in zip(files, batched):
        s = frcnn([f])[0]
        assert s.feats.shape == (6, 1024) and s.mask.any()
        assert np.abs(s.feats - b.feats).max() <= 1e-4 * max(1.0, np.abs(s.feats).max())
        np.testing.assert_allclose(s.boxes, b.boxes, atol=1e-4)
        assert (s.mask == b.mask).all()
        assert 0 <= b.boxes.min() and b.boxes.max() <= 1


def test_frcnn_given_boxes_and_deterministic_rebuild(frcnn, world):
    out, scenes = world
    files = [out / "images" / s.file for s in scenes[:2]]
    boxes = [[o.box for o in s.objects] for s in scenes[:2]]
    rs = frcnn(files, boxes)
    for r, s in zip(rs, scenes[:2]):
        n = len(s.objects)
        assert r.mask.sum() == n
        np.testing.assert_allclose(r.boxes[:n], np.array([o.box for o in s.objects]) / s.width, atol=1e-5)
    again = make_extractor(frcnn.meta, device="cpu")(files, boxes)
    for a, b in zip(rs, again): assert np.abs(a.feats - b.feats).max() <= 1e-4 * max(1.0, np.abs(a.feats).max())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is present")
def test_frcnn_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"): FasterRCNNExtractor(weights="random", device="cuda")


def test_frcnn_default_weights_never_download(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match="never downloads"): build_frcnn("default")
    finally: torch.hub.set_dir(old)
    assert not any(tmp_path.rglob("*.pth"))


def test_frcnn_weights_from_path(tmp_path):
    m = build_frcnn("random", seed=5, min_size=64, max_size=96)
    torch.save(m.state_dict(), tmp_path / "w.pth")
    m2 = build_frcnn(str(tmp_path / "w.pth"), min_size=64, max_size=96)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    torch.save({"nope": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a fasterrcnn"): build_frcnn(str(tmp_path / "bad.pth"))


# command line

def test_cli_help_and_run(world, tmp_path, capsys):
    out, _ = world
    with pytest.raises(SystemExit) as e: extract_cli(["--help"])
    assert e.value.code == 0 and "IMAGES_DIR" in capsys.readouterr().out
    assert extract_cli([str(out / "images"), str(tmp_path / "s"), "--extractor", "toy", "--boxes", str(out / "boxes.json")]) == 0
    assert "extracted 40" in capsys.readouterr().out
    assert extract_cli([str(out / "images"), str(tmp_path / "s"), "--extractor", "toy", "--boxes", str(out / "boxes.json")]) == 0
    assert "already present 40" in capsys.readouterr().out
    assert extract_cli([str(tmp_path / "missing"), str(tmp_path / "s2")]) == 2


def test_boxes_entries_are_checked_and_one_box_may_be_given_flat():
    from fastcore.test import test_eq
    from simplelxmert.features import _parse_boxes, _load_boxes
    test_eq(_parse_boxes([1, 2, 30, 40], "b").tolist(), [[1, 2, 30, 40]])
    test_eq(_parse_boxes([[1, 2, 30, 40], [0, 0, 5, 5]], "b").shape, (2, 4))
    test_eq(_parse_boxes([], "b").shape, (0, 4))
    for bad in ([1, 2, 3], [[5, 5, 0, 0]], [[1, 2, "x", 4]], [[1, 2, float("nan"), 4]], "12"):
        with pytest.raises(ValueError, match=r"boxes.json: a.png: expected a list of \[x1, y1, x2, y2\]"):
            _parse_boxes(bad, "boxes.json: a.png")
    with pytest.raises(ValueError, match="boxes: b.png: expected"): _load_boxes({"a.png": [0, 0, 2, 2], "b.png": [[0, 0]]})


# find_shapes: linear in the pixels

def test_find_shapes_on_a_phone_sized_photo_is_fast_and_exact(world):
    out, scenes = world
    s = scenes[0]
    big = Scene("big", "big.png", 3000, 2000, [ShapeObject(o.color, o.shape, o.size, tuple(v * 15 for v in o.box)) for o in s.objects])
    t0 = time.time(); found = find_shapes(draw_scene(big)); t_scene = time.time() - t0
    np.testing.assert_allclose(found, np.array(sorted(o.box for o in big.objects)), atol=1.01)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8))
    t0 = time.time(); blobs = find_shapes(noise); t_noise = time.time() - t0
    assert len(blobs) >= 1 and t_scene < 30 and t_noise < 60, (t_scene, t_noise)   # the max-pool version took hours


def test_toy_extractor_on_a_photo_without_boxes(tmp_path):
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), dtype=np.uint8))
    t0 = time.time(); r = PixelRoIExtractor(k=36)([photo])[0]
    assert r.mask.any() and r.feats.shape == (36, 48) and time.time() - t0 < 30


# extractor settings from a file (a checkpoint's or a store's meta)

def test_make_extractor_names_its_source_in_one_line():
    bad = {"huge k": ({"extractor": "toy", "k": 10**8}, "k=100000000: expected an integer from 1 to 1000"),
           "unknown key": ({"extractor": "toy", "k": 3, "stride": 2}, "the toy extractor has no setting 'stride'"),
           "frcnn unknown key": ({"extractor": "frcnn", "k": 3, "weights": "random", "anchors": 9}, "has no setting 'anchors'"),
           "frcnn huge size": ({"extractor": "frcnn", "weights": "random", "min_size": 10**7}, "min_size=10000000"),
           "bad normalize": ({"extractor": "toy", "normalize": "none"}, "normalize='none'"),
           "not a dict": (["toy"], "an extractor's settings must be a JSON object"),
           "string k": ({"extractor": "toy", "k": "36"}, "k='36': expected an integer"),
           "unknown extractor": ({"extractor": "yolo"}, "unknown extractor 'yolo'"),
           "weights not a path": ({"extractor": "frcnn", "weights": 5}, "weights=5: expected")}
    for name, (meta, says) in bad.items():
        with pytest.raises(ValueError) as e: make_extractor(meta, source="runs/x/config.json")
        msg = str(e.value)
        assert msg.startswith("runs/x/config.json: ") and says in msg and "\n" not in msg, (name, msg)


def test_make_extractor_from_a_store_names_its_meta(world, tmp_path):
    out, _ = world
    extract_features(out / "images", tmp_path / "s", boxes=out / "boxes.json", extractor="toy", progress=False)
    store = FeatureStore(tmp_path / "s")
    assert make_extractor(store).meta == store.meta
    with pytest.raises(ValueError, match=r"s/meta.json: k=5000"): make_extractor(store, k=5000)
