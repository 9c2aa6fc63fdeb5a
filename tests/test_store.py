"""Tests of simplelxmert.store (appendix A0): the feature store (atomic, resumable, checked on every open, repairable, one
writer, no links followed, no pickle, bounded), atomic files, images, and extraction on bad folders and damaged stores."""
import contextlib, io, json, os, pickle, shutil, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simplelxmert.features import (FeatureStore, FeatureStoreWriter, RegionFeatures, PixelRoIExtractor, extract_features,
                                   extract_cli, feature_stats, load_image)
from simplelxmert.store import (HEADER, MAX_K, FolderLock, StoreError, atomic_write_text, check_room, repair_store, scan_store)


from conftest import stores_equal   # and the `world` fixture


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
    np.testing.assert_allclose(mean, real.mean(0), rtol=1e-5, atol=1e-6); np.testing.assert_allclose(std, real.std(0), rtol=1e-5)
    half = sorted(recs)[:4]                                  # the images asked for, not the whole store
    np.testing.assert_allclose(feature_stats(s, half)[0], np.concatenate([recs[i].feats[recs[i].mask] for i in half]).mean(0), rtol=1e-5, atol=1e-6)
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
    w._lock.release()
    with open(tmp_path / "s" / "index.txt", "ab") as f: f.write(b"b")
    assert FeatureStore(tmp_path / "s").ids == ["a"]
    with FeatureStoreWriter(tmp_path / "s", 6, 5, {}) as w2:
        assert w2.done == {"a"}
        w2.add("c", r[2].feats, r[2].boxes, r[2].mask)
    s = FeatureStore(tmp_path / "s")
    assert s.ids == ["a", "c"] and s["a"] == r[0] and s["c"] == r[2]
    assert (tmp_path / "s" / "feats.f32").stat().st_size == HEADER + 2 * 6 * 5 * 4


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


# every open is checked: damage is refused in one line naming the file, nothing is zero-filled

def small_store(path, n=6, k=4, dim=3, meta=None):
    "A store of `n` random records `im0..`; returns them."
    rng, recs = np.random.default_rng(0), {}
    with FeatureStoreWriter(path, k, dim, meta or {"extractor": "test"}) as w:
        for i in range(n):
            r = rec(rng, k=k, dim=dim, n=1 + i % k); recs[f"im{i}"] = r; w.add(f"im{i}", r.feats, r.boxes, r.mask)
    return recs


def _cut(f, n): os.truncate(f, f.stat().st_size - n)
def _append(f, data):
    with open(f, "ab") as fh: fh.write(data)
def _edit_meta(d, **kw): (d / "meta.json").write_text(json.dumps({**json.loads((d / "meta.json").read_text()), **kw}))


DAMAGE = {   # name: (harm, the file the message must name, words it must hold)
    "data cut short": (lambda d: _cut(d / "feats.f32", 5), "feats.f32", "cut short"),
    "mask cut to nothing": (lambda d: os.truncate(d / "mask.u8", 0), "mask.u8", "cut short"),
    "garbage index line": (lambda d: _append(d / "index.txt", b"\x00\x01garbage\n"), "index.txt", "not an image id"),
    "duplicated index line": (lambda d: _append(d / "index.txt", b"im2\n"), "index.txt", "both name 'im2'"),
    "index not UTF-8": (lambda d: _append(d / "index.txt", b"\xff\xfe\n"), "index.txt", "not UTF-8"),
    "meta.json gone": (lambda d: (d / "meta.json").unlink(), "meta.json", "is missing"),
    "meta.json invalid": (lambda d: (d / "meta.json").write_text("{not json"), "meta.json", "not valid JSON"),
    "meta.json not UTF-8": (lambda d: (d / "meta.json").write_bytes(b"\xff{}"), "meta.json", "not valid JSON"),
    "meta.json not a store's": (lambda d: (d / "meta.json").write_text("[1, 2]"), "meta.json", "not a simplelxmert feature store"),
    "k edited": (lambda d: _edit_meta(d, k=3), "feats.f32", "meta.json was edited"),
    "dim edited": (lambda d: _edit_meta(d, dim=2), "feats.f32", "meta.json was edited"),
    "k absurd": (lambda d: _edit_meta(d, k=10**8), "meta.json", "k=100000000"),
    "newer format": (lambda d: _edit_meta(d, version=9), "meta.json", "format version 9"),
    "index.txt gone": (lambda d: (d / "index.txt").unlink(), "index.txt", "is missing but the data files hold rows"),
    "header garbage": (lambda d: (d / "boxes.f32").write_bytes(b"\x00" * 1000), "boxes.f32", "meta.json was edited"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_every_damage_is_refused_in_one_line(tmp_path, name):
    harm, fname, says = DAMAGE[name]
    d = tmp_path / "s"; small_store(d); harm(d)
    sizes = {f.name: f.stat().st_size for f in d.iterdir()}
    for open_it in (lambda: FeatureStore(d), lambda: FeatureStoreWriter(d, 4, 3, {"extractor": "test"}),
                    lambda: FeatureStoreWriter(d, 5, 3, {"extractor": "other"})):   # other settings: never written over the old data
        with pytest.raises(ValueError) as e: open_it()
        msg = str(e.value)
        assert str(d / fname) in msg and says in msg and "\n" not in msg, msg
    assert {f.name: f.stat().st_size for f in d.iterdir()} == sizes          # nothing cut, extended or rewritten
    assert (d / "meta.json").exists() == (name != "meta.json gone")


def test_damage_through_the_command_line_is_one_line(world, tmp_path):
    out, _ = world
    args = [str(out / "images"), str(tmp_path / "s"), "--extractor", "toy", "--boxes", str(out / "boxes.json")]
    assert extract_cli(args) == 0
    _append(tmp_path / "s" / "index.txt", b"\xff\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): code = extract_cli(args)
    assert code == 2 and err.getvalue().count("\n") == 1 and str(tmp_path / "s" / "index.txt") in err.getvalue()
    assert "--repair" in err.getvalue()


def test_resume_never_zero_fills(world, tmp_path):
    "The bug this guards against: a cut data file was extended with zeros by the resume, and its entries read as zeros."
    out, _ = world
    kw = dict(boxes=out / "boxes.json", extractor="toy", progress=False)
    extract_features(out / "images", tmp_path / "s", **kw)
    _cut(tmp_path / "s" / "feats.f32", 2 * 3 * 48 * 4 + 7)        # the last two rows (k=3, dim=48), and a bit of a third
    before = (tmp_path / "s" / "feats.f32").read_bytes()
    with pytest.raises(StoreError, match="feats.f32: holds 37 complete rows but index.txt lists 40"): extract_features(out / "images", tmp_path / "s", **kw)
    assert (tmp_path / "s" / "feats.f32").read_bytes() == before
    with pytest.raises(StoreError, match="cut short"): FeatureStore(tmp_path / "s")


def test_an_edited_k_is_refused(world, tmp_path):
    out, _ = world
    extract_features(out / "images", tmp_path / "s", boxes=out / "boxes.json", extractor="toy", progress=False)   # k = 3
    for k in (1, 2, 4):
        _edit_meta(tmp_path / "s", k=k)
        with pytest.raises(StoreError, match=r"holds 'simplelxmert-features 2 feats.f32 k=3 dim=48', but .*meta.json says k=%d" % k):
            FeatureStore(tmp_path / "s")
    _edit_meta(tmp_path / "s", k=3)
    assert len(FeatureStore(tmp_path / "s")) == 40


def test_a_version_1_store_still_reads_and_resumes(tmp_path):
    "Stores written before the data-file headers: no header, checked by sizes."
    d = tmp_path / "v1"; d.mkdir()
    rng = np.random.default_rng(0); r = [rec(rng, k=2, dim=3) for _ in range(3)]
    (d / "meta.json").write_text(json.dumps({"format": "simplelxmert-features", "version": 1, "k": 2, "dim": 3, "meta": {}}))
    for name, arrs in (("feats.f32", [x.feats for x in r[:2]]), ("boxes.f32", [x.boxes for x in r[:2]]), ("mask.u8", [x.mask.astype(np.uint8) for x in r[:2]])):
        (d / name).write_bytes(b"".join(a.tobytes() for a in arrs))
    (d / "index.txt").write_text("a\nb\n")
    s = FeatureStore(d); assert s.version == 1 and s["b"] == r[1]
    with FeatureStoreWriter(d, 2, 3, {}) as w: w.add("c", r[2].feats, r[2].boxes, r[2].mask)
    s = FeatureStore(d); assert s.ids == ["a", "b", "c"] and s["c"] == r[2] and s["a"] == r[0]
    assert (d / "feats.f32").stat().st_size == 3 * 2 * 3 * 4                 # still no header
    _cut(d / "boxes.f32", 1)
    with pytest.raises(StoreError, match="boxes.f32: holds 2 complete rows but index.txt lists 3"): FeatureStore(d)


# repair

@pytest.mark.parametrize("name", ["data cut short", "mask cut to nothing", "garbage index line", "duplicated index line", "index not UTF-8"])
def test_repair_drops_only_the_damaged_entries(world, tmp_path, name):
    out, _ = world
    args = [str(out / "images"), str(tmp_path / "s"), "--extractor", "toy", "--boxes", str(out / "boxes.json")]
    assert extract_cli(args) == 0 and extract_cli(args[:1] + [str(tmp_path / "full")] + args[2:]) == 0
    DAMAGE[name][0](tmp_path / "s")
    scan = scan_store(tmp_path / "s")
    damaged = {scan.lines[r] for r in scan.bad if scan.lines[r]}
    kept = [i for i in scan.lines[:min(scan.rows.values())] if i and i not in damaged]
    dropped = repair_store(tmp_path / "s")
    assert dropped and sorted(FeatureStore(tmp_path / "s").ids) == sorted(kept)
    assert extract_cli(args + ["--repair"]) == 0                            # re-extracts what was dropped (nothing more to repair)
    stores_equal(FeatureStore(tmp_path / "full"), FeatureStore(tmp_path / "s"))
    with FeatureStoreWriter(tmp_path / "s", 3, 48, FeatureStore(tmp_path / "s").meta) as w: assert len(w.done) == 40


def test_repair_through_the_command_line(world, tmp_path, capsys):
    out, _ = world
    args = [str(out / "images"), str(tmp_path / "s"), "--extractor", "toy", "--boxes", str(out / "boxes.json")]
    assert extract_cli(args) == 0
    _cut(tmp_path / "s" / "boxes.f32", 1); _append(tmp_path / "s" / "index.txt", b"shapes_000003\n")
    capsys.readouterr()
    assert extract_cli(args + ["--repair"]) == 0
    said = capsys.readouterr().out
    assert "repaired: dropped 3 damaged entries" in said and "extracted 2, already present 38" in said, said


def test_repair_refuses_what_no_entry_explains(tmp_path):
    for name in ("meta.json gone", "k edited", "meta.json invalid"):
        d = tmp_path / name.replace(" ", "_"); small_store(d); DAMAGE[name][0](d)
        with pytest.raises(StoreError, match="delete"): repair_store(d)


# one writer, no links, no pickle

def test_folder_lock_dies_with_its_process(tmp_path):
    pytest.importorskip("fcntl")
    script = f"from simplelxmert.store import FolderLock; import os, sys; lock = FolderLock({str(tmp_path)!r}).acquire(); print('held', flush=True); sys.stdin.read(); os._exit(0)"
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="another process is writing"): FolderLock(tmp_path).acquire()
    finally: p.kill(); p.wait()
    with FolderLock(tmp_path) as lock: assert lock.held                     # the dead holder's lock is gone


@pytest.mark.parametrize("name", [".lock", "meta.json", "index.txt", "feats.f32", "boxes.f32", "mask.u8"])
def test_links_in_a_store_are_refused(tmp_path, name):
    d = tmp_path / "s"; small_store(d)
    target = tmp_path / "elsewhere"; target.write_bytes(b"precious" * 100)
    (d / name).unlink(); (d / name).symlink_to(target)
    refusals = [lambda: FeatureStoreWriter(d, 4, 3, {"extractor": "test"}), lambda: repair_store(d)]
    if name != ".lock": refusals.append(lambda: FeatureStore(d))
    for open_it in refusals:
        with pytest.raises(StoreError, match="is a symbolic link"): open_it()
    assert target.read_bytes() == b"precious" * 100                           # never truncated, never written
    assert (d / name).is_symlink()


def test_a_linked_store_folder_is_fine(tmp_path):
    small_store(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert len(FeatureStore(tmp_path / "link")) == 6


def test_store_files_hold_no_pickle(tmp_path, monkeypatch):
    recs = small_store(tmp_path / "s")
    for f in (tmp_path / "s").iterdir(): assert not f.read_bytes().startswith(b"\x80"), f   # no pickle protocol header
    def refuse(*a, **k): raise AssertionError("unpickled")
    for mod, fn in ((pickle, "load"), (pickle, "loads"), (torch, "load")): monkeypatch.setattr(mod, fn, refuse)
    s = FeatureStore(tmp_path / "s")
    assert s["im3"] == recs["im3"] and s.get_batch(["im0"])[0].shape == (1, 4, 3)
    monkeypatch.undo()
    assert len(pickle.dumps(s)) < 2000                                       # a store pickles as its path, not its data


def test_a_folder_that_is_not_a_store_is_not_written_into(world, tmp_path):
    out, scenes = world
    d = tmp_path / "imgs"; d.mkdir()
    for s in scenes[:2]: shutil.copy(out / "images" / s.file, d / s.file)
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(StoreError, match="it is not a feature store"): extract_features(d, d, extractor="toy", progress=False)
    with pytest.raises(StoreError, match="it is not a feature store"): FeatureStoreWriter(d, 3, 48)
    assert sorted(p.name for p in d.iterdir()) == before                    # not even a lock file
    with pytest.raises(FileNotFoundError, match="not a feature store"): FeatureStore(d)


def test_a_crash_while_creating_a_store_resumes(tmp_path):
    "meta.json written, data files not yet (or a header cut short): nothing was committed, so a writer simply goes on."
    small_store(tmp_path / "s", n=0)
    (tmp_path / "s" / "feats.f32").write_bytes(b"simplelxmert-feat")        # a header cut short
    assert len(FeatureStore(tmp_path / "s")) == 0
    recs = small_store(tmp_path / "s", n=2)
    assert FeatureStore(tmp_path / "s")["im1"] == recs["im1"]


# bounds

def test_bounds_are_refused_in_one_line(world, tmp_path, monkeypatch, capsys):
    out, _ = world
    with pytest.raises(SystemExit): extract_cli([str(out / "images"), str(tmp_path / "s"), "--k", "100000000"])
    assert "--k must be from 1 to 1000, got 100000000" in capsys.readouterr().err
    with pytest.raises(SystemExit): extract_cli([str(out / "images"), str(tmp_path / "s"), "--batch-size", "100000"])
    with pytest.raises(ValueError, match=r"k=100000000: expected an integer from 1 to 1000"): FeatureStoreWriter(tmp_path / "s", 10**8, 1024)
    with pytest.raises(ValueError, match=r"dim=1000000"): FeatureStoreWriter(tmp_path / "s", 36, 10**6)
    with pytest.raises(ValueError, match=r"k=5000"): extract_features(out / "images", tmp_path / "s", k=5000, extractor="toy")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match=r"boxes: a.png: 1001 boxes, at most 1000"):
        extract_features(out / "images", tmp_path / "s", boxes={"a.png": [[0, 0, 2, 2]] * 1001}, extractor="toy")
    with pytest.raises(StoreError, match="GB free"): check_room(tmp_path, 10**9, MAX_K, 16384)
    import simplelxmert.store as store
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StoreError, match=r"40 images at k=3, dim=48 need 0.0 GB but .* has 0.0 GB free"):
        extract_features(out / "images", tmp_path / "s2", boxes=out / "boxes.json", extractor="toy", progress=False)
    assert FeatureStore(tmp_path / "s2").ids == []                           # refused before the first image


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    atomic_write_text(tmp_path / "f.json", "old")
    def half(tmp): Path(tmp).write_text("ne"); raise OSError("disk full")
    from simplelxmert.store import atomic_write
    with pytest.raises(OSError): atomic_write(tmp_path / "f.json", half)
    assert (tmp_path / "f.json").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_hard_linked_data_files_are_not_written(tmp_path):
    d = tmp_path / "s"; small_store(d)
    os.link(d / "boxes.f32", tmp_path / "backup_boxes.f32")
    backup = (tmp_path / "backup_boxes.f32").read_bytes()
    with pytest.raises(StoreError, match="boxes.f32 has other hard links"): FeatureStoreWriter(d, 4, 3, {"extractor": "test"})
    assert (tmp_path / "backup_boxes.f32").read_bytes() == backup
    assert len(FeatureStore(d)) == 6                                          # reading is fine
