"Tests of simplelxmert.features: ShapesWorld, the feature store (atomic, resumable), image modes, extractors, CLI."
import json, os, pickle, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simplelxmert.features import (COLORS, SHAPES, RGB, Scene, FeatureStore, FeatureStoreWriter, RegionFeatures, PixelRoIExtractor,
                                   FasterRCNNExtractor, build_frcnn, extract_features, extract_cli, feature_stats, find_shapes,
                                   generate_shapes_world, load_image, load_scenes, make_extractor)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return out, generate_shapes_world(out, 40, seed=3)


def stores_equal(a: FeatureStore, b: FeatureStore):
    assert sorted(a.ids) == sorted(b.ids) and (a.k, a.dim, a.meta) == (b.k, b.dim, b.meta)
    for i in a.ids: assert a[i] == b[i], i


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


# store

def rec(rng, k=6, dim=5, n=3):
    m = np.arange(k) < n
    xy = rng.uniform(0, .5, (k, 2))
    return RegionFeatures(rng.normal(size=(k, dim)) * m[:, None], np.concatenate([xy, xy + .3], 1) * m[:, None], m)


def test_store_roundtrip_mask_and_memmap(tmp_path):
    rng = np.random.default_rng(0)
    recs = {f"a{i}": rec(rng, n=1 + i % 6) for i in range(20)}
    with FeatureStoreWriter(tmp_path / "s", 6, 5, {"extractor": "x"}, commit_every=7) as w:
        for i, r in recs.items(): w.add(i, r.feats, r.boxes, r.mask)
    s = FeatureStore(tmp_path / "s")
    assert s.ids == list(recs) and len(s) == 20 and (s.k, s.dim, s.meta) == (6, 5, {"extractor": "x"})
    for i, r in recs.items():
        got = s[i]
        assert got == r and got.feats.dtype == np.float32 and got.mask.dtype == bool
    assert isinstance(s._open()["feats"], np.memmap)
    feats, boxes, mask = s.get_batch(["a9", "a2", "a9"])
    assert feats.shape == (3, 6, 5) and mask.dtype == bool
    assert np.array_equal(feats[0], recs["a9"].feats) and np.array_equal(boxes[1], recs["a2"].boxes) and np.array_equal(mask[2], recs["a9"].mask)
    with pytest.raises(KeyError, match="not in the feature store"): s.get_batch(["a1", "zzz"])
    mean, std = feature_stats(s)
    real = np.concatenate([r.feats[r.mask] for r in recs.values()])
    np.testing.assert_allclose(mean, real.mean(0), rtol=1e-5, atol=1e-6); np.testing.assert_allclose(std, real.std(0) + 1e-6, rtol=1e-5)
    s2 = pickle.loads(pickle.dumps(s))   # DataLoader workers get a path, not a copy of the data
    assert s2._arrays is None and s2["a5"] == recs["a5"]
    with pytest.raises(KeyError, match="not in the feature store"): s["zzz"]


def test_store_commit_is_atomic_and_writer_resumes(tmp_path):
    rng = np.random.default_rng(1); r = [rec(rng) for _ in range(4)]
    w = FeatureStoreWriter(tmp_path / "s", 6, 5, {}, commit_every=100)
    w.add("a", r[0].feats, r[0].boxes, r[0].mask); w.commit()
    w.add("b", r[1].feats, r[1].boxes, r[1].mask)
    assert FeatureStore(tmp_path / "s").ids == ["a"]             # added but not committed: invisible
    # simulate a hard kill now: drop the writer without closing; a torn index line on top
    w._lockf.close()
    with open(tmp_path / "s" / "index.txt", "ab") as f: f.write(b"b")
    assert FeatureStore(tmp_path / "s").ids == ["a"]
    with FeatureStoreWriter(tmp_path / "s", 6, 5, {}) as w2:
        assert w2.done == {"a"}
        w2.add("c", r[2].feats, r[2].boxes, r[2].mask)
    s = FeatureStore(tmp_path / "s")
    assert s.ids == ["a", "c"] and s["a"] == r[0] and s["c"] == r[2]
    assert (tmp_path / "s" / "feats.f32").stat().st_size == 2 * 6 * 5 * 4


def test_store_errors(tmp_path):
    with FeatureStoreWriter(tmp_path / "s", 2, 3, {"a": 1}) as w:
        with pytest.raises(ValueError, match="shape"): w.add("x", np.zeros((2, 4)), np.zeros((2, 4)), np.ones(2))
        with pytest.raises(ValueError, match="normalized"): w.add("x", np.zeros((2, 3)), np.full((2, 4), 1.5), np.ones(2))
        with pytest.raises(ValueError, match="NaN"): w.add("x", np.full((2, 3), np.nan), np.zeros((2, 4)), np.ones(2))
        with pytest.raises(ValueError, match="newline"): w.add("x\ny", np.zeros((2, 3)), np.zeros((2, 4)), np.ones(2))
        with pytest.raises(ValueError, match="no real region"): w.add("x", np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2))
        with pytest.raises(RuntimeError, match="another process"): FeatureStoreWriter(tmp_path / "s", 2, 3, {"a": 1})
        w.add("x", np.zeros((2, 3)), np.zeros((2, 4)), np.ones(2))
        with pytest.raises(ValueError, match="already"): w.add("x", np.zeros((2, 3)), np.zeros((2, 4)), np.ones(2))
    with pytest.raises(ValueError, match="was created with"): FeatureStoreWriter(tmp_path / "s", 2, 3, {"a": 2})
    with pytest.raises(FileNotFoundError, match="not a feature store"): FeatureStore(tmp_path / "nothing")


# images

@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "PA", "CMYK", "I", "I;16", "F", "1", "YCbCr"])
def test_every_image_mode_becomes_rgb(world, tmp_path, mode):
    base = Image.open(world[0] / "images" / world[1][0].file).convert("RGB")
    im = Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257) if mode == "I;16" else base.convert(mode)
    out = load_image(im)
    assert out.mode == "RGB" and out.size == base.size
    if mode in ("L", "I;16"): assert np.array_equal(np.asarray(out)[..., 1], np.asarray(base.convert("L")))
    if mode in ("RGBA", "CMYK", "P", "PA", "LA", "L", "I", "I;16", "F", "YCbCr", "1"):
        ext = {"CMYK": "jpg", "YCbCr": "jpg", "F": "tiff", "PA": "png"}.get(mode, "png")
        try: im.save(tmp_path / f"x.{ext}")
        except (OSError, KeyError, ValueError): return   # PIL cannot write this mode to this format
        assert load_image(tmp_path / f"x.{ext}").mode == "RGB"


def test_exif_orientation_applied(world, tmp_path):
    base = Image.open(world[0] / "images" / world[1][0].file).convert("RGB").resize((128, 64))
    exif = Image.Exif(); exif[0x0112] = 6
    base.rotate(90, expand=True).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    assert Image.open(tmp_path / "r.jpg").size == (64, 128)
    up = load_image(tmp_path / "r.jpg")
    assert up.size == (128, 64) and np.abs(np.asarray(up, float) - np.asarray(base, float)).mean() < 4


def test_transparent_pixels_on_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(load_image(im)).min() == 255


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


def test_extract_skips_bad_files_and_reruns_do_nothing(world, tmp_path):
    out, scenes = world
    d = tmp_path / "imgs"; d.mkdir()
    for s in scenes[:5]: (d / s.file).write_bytes((out / "images" / s.file).read_bytes())
    (d / "corrupt.png").write_bytes((out / "images" / scenes[6].file).read_bytes()[:150])
    (d / "zero.jpg").write_bytes(b"")
    (d / "readme.txt").write_text("hello")
    boxes = json.loads((out / "boxes.json").read_text())
    for name in ("corrupt.png", "zero.jpg", "readme.txt"): boxes[name] = [[0, 0, 10, 10]]
    s1 = extract_features(d, tmp_path / "st", boxes=boxes, extractor="toy", batch_size=2, progress=False)
    assert s1["extracted"] == 5 and sorted(s1["skipped"]) == ["corrupt.png", "readme.txt", "zero.jpg"]
    assert "empty" in s1["skipped"]["zero.jpg"] and "truncated" in s1["skipped"]["corrupt.png"]
    before = {f.name: f.read_bytes() for f in (tmp_path / "st").iterdir() if not f.name.startswith(".")}
    s2 = extract_features(d, tmp_path / "st", boxes=boxes, extractor="toy", progress=False)
    assert (s2["extracted"], s2["already_present"]) == (0, 5)
    assert before == {f.name: f.read_bytes() for f in (tmp_path / "st").iterdir() if not f.name.startswith(".")}


class Crash(Exception): pass

class CrashAfter:
    "Wraps an extractor and raises after `n` images, like a run interrupted in the middle."
    def __init__(self, inner, n): self.inner, self.n, self.k, self.dim, self.meta = inner, n, inner.k, inner.dim, inner.meta
    def __call__(self, images, boxes=None):
        if self.n <= 0: raise Crash()
        self.n -= len(images)
        return self.inner(images, boxes)


def test_interrupted_then_resumed_equals_uninterrupted(world, tmp_path):
    out, _ = world
    kw = dict(boxes=out / "boxes.json", batch_size=4, progress=False)
    full = extract_features(out / "images", tmp_path / "full", extractor="toy", **kw)
    assert full["extracted"] == 40
    with pytest.raises(Crash): extract_features(out / "images", tmp_path / "part", extractor=CrashAfter(PixelRoIExtractor(k=3), 12), **kw)
    assert len(FeatureStore(tmp_path / "part")) == 12
    resumed = extract_features(out / "images", tmp_path / "part", extractor="toy", **kw)
    assert (resumed["extracted"], resumed["already_present"]) == (28, 12)
    stores_equal(FeatureStore(tmp_path / "full"), FeatureStore(tmp_path / "part"))
    for f in ("feats.f32", "boxes.f32", "mask.u8", "index.txt", "meta.json"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "part" / f).read_bytes()


def test_killed_process_then_resumed_equals_uninterrupted(world, tmp_path):
    "A process that dies with os._exit in the middle of a batch (no cleanup at all), then a normal resume."
    out, _ = world
    script = textwrap.dedent(f"""
        import os
        from simplelxmert.features import PixelRoIExtractor, extract_features
        class Die(PixelRoIExtractor):
            seen = 0
            def __call__(self, images, boxes=None):
                Die.seen += len(images)
                if Die.seen > 15: os._exit(3)      # dies before this batch is added or committed
                return super().__call__(images, boxes)
        extract_features({str(out / 'images')!r}, {str(tmp_path / 'part')!r}, boxes={str(out / 'boxes.json')!r}, batch_size=4,
                         extractor=Die(k=3), progress=False)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert len(FeatureStore(tmp_path / "part")) == 12
    extract_features(out / "images", tmp_path / "part", boxes=out / "boxes.json", extractor="toy", progress=False)
    extract_features(out / "images", tmp_path / "full", boxes=out / "boxes.json", extractor="toy", progress=False)
    stores_equal(FeatureStore(tmp_path / "full"), FeatureStore(tmp_path / "part"))


def test_dataloader_workers_read_the_store(world, tmp_path):
    out, scenes = world
    extract_features(out / "images", tmp_path / "s", boxes=out / "boxes.json", extractor="toy", progress=False)
    store = FeatureStore(tmp_path / "s")

    class DS(torch.utils.data.Dataset):
        def __len__(self): return len(store)
        def __getitem__(self, i): return torch.from_numpy(store[store.ids[i]].feats)

    got = torch.cat(list(torch.utils.data.DataLoader(DS(), batch_size=8, num_workers=2)))
    assert torch.equal(got, torch.stack([torch.from_numpy(store[i].feats) for i in store.ids]))


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


def test_a_refused_writer_leaves_the_store_unlocked(tmp_path):
    try: import fcntl
    except ImportError: fcntl = None
    FeatureStoreWriter(tmp_path/"s", k=2, dim=4).close()
    with pytest.raises(ValueError, match="was created with k=2") as refused:
        FeatureStoreWriter(tmp_path/"s", k=3, dim=4)
    with FeatureStoreWriter(tmp_path/"s", k=2, dim=4) as w:     # while the refused one is still referenced
        w.add("a", np.ones((2, 4), np.float32), np.array([[0, 0, 1, 1]] * 2, np.float32), np.array([1, 0], bool))
        if fcntl is not None:                                     # (no lock where fcntl is missing)
            with pytest.raises(RuntimeError, match="another process is writing"): FeatureStoreWriter(tmp_path/"s", k=2, dim=4)
    assert refused.value is not None and FeatureStore(tmp_path/"s").ids == ["a"]


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
