"""Every CUDA path equals its CPU path (issue 22): model forward and gradients, extraction, cached retrieval, the
Predictor, and each command-line tool with `--device cuda`. Marked `cuda` and skipped on a machine without a GPU;
`tools/gpu_check.sh` runs them (`pytest -m cuda tests/test_cuda.py`) and reports the figures each test records.

`SIMPLELXMERT_TEST_DEVICE=cpu` runs the same code with the CPU in the GPU's place (`tools/gpu_check.sh --device cpu
--smoke` does), so that a Python error in these tests shows on any machine, not in scarce GPU minutes.

Tolerances, as max |device - CPU| / max(1, max |CPU|): float32 on a GPU sums in another order than on a CPU (cuBLAS,
SDPA's fused kernels), ~1e-7 per operation, so 1e-4 for outputs after six layers and 1e-3 (norm-wise, per parameter)
for gradients. Extraction compares with TF32 off (`fp32_exact`): cuDNN convolutions use TF32 by default on Ampere and
later, ~1e-3 relative, which is measured and recorded, not asserted."""
import copy, json, os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import toy_checkpoint

DEVICE = os.environ.get("SIMPLELXMERT_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                 reason="no CUDA device: these tests compare the CUDA paths with the CPU ones")]
FWD_TOL, GRAD_TOL, AMP_TOL = 1e-4, 1e-3, 0.1


def rel_diff(a, b) -> float:
    "max |a - b| / max(1, max |b|), in float64 on the CPU."
    a, b = (torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().double().cpu() for x in (a, b))
    return float((a - b).abs().max() / max(1.0, float(b.abs().max()))) if b.numel() else 0.0


def grad_diff(model, ref) -> float:
    """The worst norm-wise relative difference of two models' gradients, parameter by parameter (both None is equal).
    A key projection's bias gets no gradient at all in exact arithmetic (softmax ignores a shift that is the same for
    every key): its float noise, ~1e-9, is compared with 1e-4 of the model's largest gradient norm, not with itself."""
    grads = [q.grad.norm() for q in ref.parameters() if q.grad is not None]
    floor = 1e-4 * max(grads).item() if grads else 1e-12
    worst = 0.0
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None), f"{name} has a gradient on one device only"
        if q.grad is not None:
            worst = max(worst, float((p.grad.cpu() - q.grad).norm() / q.grad.norm().clamp_min(floor)))
    return worst


@pytest.fixture
def fp32_exact():
    "TF32 off for cuBLAS and cuDNN (cuDNN convolutions use it by default): the device computes in float32 as the CPU."
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    "ShapesWorld (12 images) and a random-weight checkpoint with feature normalization, as in tests/test_inference.py."
    root = tmp_path_factory.mktemp("cuda")
    return toy_checkpoint(root), root


# --- the model ---------------------------------------------------------------------------------------------
def test_model_forward_and_gradients_equal_cpu(record_property):
    "ITMModel at the seed configuration (LXMERT inside, masked LM head): every output and gradient, device vs CPU."
    from simplelxmert.encoders import LXMERTConfig, random_batch, randomize_weights_
    from simplelxmert.training import ITMModel, itm_loss
    config = LXMERTConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)   # (dropout draws differ per device)
    torch.manual_seed(0)
    cpu = randomize_weights_(ITMModel(config, mlm=True), seed=0).train()
    dev = copy.deepcopy(cpu).to(DEVICE)
    batch = random_batch(config, B=4, T=12, K=10, seed=0)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mlm_labels = torch.where(torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(1)) < 0.3,
                             batch["input_ids"], torch.full_like(batch["input_ids"], -100))
    mlm_labels[batch["attention_mask"] == 0] = -100
    on = lambda d: {k: v.to(DEVICE) for k, v in d.items()}
    diffs = {}
    with torch.no_grad():
        ref, out = cpu.lxmert(**batch), dev.lxmert(**on(batch))
        for key in ("language_output", "vision_output", "pooled_output"):
            diffs[key] = rel_diff(getattr(out, key), getattr(ref, key))
    for path, kw in (("pooled_only", {}), ("full + masked LM", {"mlm_labels": mlm_labels})):
        cpu.zero_grad(set_to_none=True); dev.zero_grad(set_to_none=True)
        r, o = cpu(**batch, **kw), dev(**on(batch), **{k: v.to(DEVICE) for k, v in kw.items()})
        (r_logits, r_mlm), (o_logits, o_mlm) = (r, o) if kw else ((r, 0.0), (o, 0.0))
        (itm_loss(r_logits, labels) + r_mlm).backward()
        (itm_loss(o_logits, labels.to(DEVICE)) + o_mlm).backward()
        diffs[f"logits, {path}"] = rel_diff(o_logits, r_logits)
        if kw: diffs["masked-LM loss"] = rel_diff(o_mlm, r_mlm)
        diffs[f"gradients, {path}"] = grad_diff(dev, cpu)
    for name, d in diffs.items():
        record_property(name, f"{d:.2e}")
        assert d <= (GRAD_TOL if name.startswith("gradients") else FWD_TOL), (name, d)


def test_autocast_forward_is_close_to_float32(record_property):
    "The training path under autocast (bfloat16, and float16 whose -inf masks must not turn into NaN) vs float32."
    from simplelxmert.encoders import LXMERTConfig, random_batch, randomize_weights_
    from simplelxmert.training import ITMModel
    config = LXMERTConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = randomize_weights_(ITMModel(config), seed=0).to(DEVICE).eval()
    batch = {k: v.to(DEVICE) for k, v in random_batch(config, B=4, T=12, K=10, seed=0).items()}
    with torch.no_grad():
        ref = model(**batch)
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast(torch.device(DEVICE).type, dtype=dtype):
                for path in (True, False):
                    out = model(**batch, pooled_only=path)
                    d = rel_diff(out.float(), ref)
                    record_property(f"{str(dtype)[6:]} {'pooled_only' if path else 'full'}", f"{d:.2e}")
                    assert torch.isfinite(out).all() and d <= AMP_TOL, (dtype, path, d)


# --- extraction --------------------------------------------------------------------------------------------
def _images(toy, tmp_path):
    "Three ShapesWorld images of one size and a wide one (another padded shape: its own group in a batch)."
    data, _ = toy
    files = sorted(data.images_dir.iterdir())[:3]
    Image.open(files[1]).resize((96, 64)).save(tmp_path / "wide.png")
    return [files[0], tmp_path / "wide.png", files[1], files[2]]


def test_frcnn_batch_equals_single_and_cpu(toy, tmp_path, fp32_exact, record_property):
    from simplelxmert.features import FasterRCNNExtractor
    files = _images(toy, tmp_path)
    kw = dict(k=6, weights="random", min_size=64, max_size=96, proposals=50)
    ex = FasterRCNNExtractor(device=DEVICE, **kw)
    cpu = ex if torch.device(DEVICE).type == "cpu" else FasterRCNNExtractor(device="cpu", **kw)   # (a dry run: one build)
    assert next(ex.model.parameters()).device.type == torch.device(DEVICE).type
    batched = ex(files)
    feats = boxes = 0.0
    for f, b in zip(files, batched):                     # detections: batched == one at a time, on the device
        s = ex([f])[0]
        assert (s.mask == b.mask).all() and s.mask.any()
        feats, boxes = max(feats, rel_diff(b.feats, s.feats)), max(boxes, float(np.abs(b.boxes - s.boxes).max()))
    record_property("detections batched vs single, feats", f"{feats:.2e}")
    record_property("detections batched vs single, boxes", f"{boxes:.2e}")
    assert feats <= FWD_TOL and boxes <= 1e-4
    given = [[[4, 4, 40, 40], [50, 60, 90, 100]], [[0, 0, 96, 64]], [[10, 10, 120, 120]], [[30, 5, 60, 35]]]
    d = max(rel_diff(a.feats, c.feats) for a, c in zip(ex(files, given), cpu(files, given)))   # given boxes: device vs CPU
    record_property("given boxes device vs CPU, feats (float32)", f"{d:.2e}")
    torch.backends.cudnn.allow_tf32 = True               # PyTorch's default for convolutions: measured, not asserted
    record_property("given boxes device vs CPU, feats (TF32 convolutions)",
                    f"{max(rel_diff(a.feats, c.feats) for a, c in zip(ex(files, given), cpu(files, given))):.2e}")
    assert d <= 1e-3


def test_toy_extractor_on_device(toy, tmp_path):
    "The toy extractor pools pixels on the CPU whatever the device: the same numbers, batched or not."
    from simplelxmert.features import PixelRoIExtractor
    files, given = _images(toy, tmp_path), [[[4, 4, 40, 40]], [[0, 0, 96, 64]], [[10, 10, 120, 120]], [[30, 5, 60, 35]]]
    ex, cpu = PixelRoIExtractor(k=3, device=DEVICE), PixelRoIExtractor(k=3, device="cpu")
    batched = ex(files, given)
    assert batched == cpu(files, given) and batched == [ex([f], [b])[0] for f, b in zip(files, given)]
    assert ex(files) == cpu(files)                       # boxes found by find_shapes


# --- retrieval and the Predictor ---------------------------------------------------------------------------
def test_cached_retrieval_on_device_equals_cpu(toy, record_property):
    from simplelxmert.dataset import image_id
    from simplelxmert.inference import (Predictor, caption_batch, region_batch, encode_texts, encode_images,
                                        cached_scores, naive_scores)
    data, root = toy
    store, recs = data.store(), data.records()[:20]
    images = sorted({r.image for r in recs})
    cpu, dev = Predictor.from_pretrained(root / "ckpt", device="cpu"), Predictor.from_pretrained(root / "ckpt", device=DEVICE)
    text = caption_batch(cpu.tokenizer, [r.caption for r in recs], cpu.max_len)
    vis = region_batch([store[image_id(im)] for im in images])
    vis["visual_mask"][0, -1] = 0                        # a padded box, to exercise the masks
    ref = naive_scores(cpu.model, text, vis, batch_size=7)
    tb, vb = encode_texts(dev.model, text), encode_images(dev.model, vis)
    assert tb.lang.device.type == torch.device(DEVICE).type
    for name, got in (("cached [CLS]-only", cached_scores(dev.model, tb, vb, batch_size=13)),
                      ("cached full", cached_scores(dev.model, tb, vb, batch_size=13, cls_only=False)),
                      ("naive", naive_scores(dev.model, text, vis, batch_size=7))):
        d = rel_diff(got, ref); record_property(f"{name} on device vs naive on CPU", f"{d:.2e}")
        assert got.shape == ref.shape and d <= FWD_TOL, (name, d)


def test_predictor_on_device_equals_cpu(toy, record_property):
    from simplelxmert.inference import Predictor, TOY_CHECKPOINT
    data, root = toy
    img = sorted(data.images_dir.iterdir())[0]
    caps = [r.caption for r in data.records()[:5]] + ["a red circle ."]
    ckpts = [root / "ckpt"] + (["toy"] if (TOY_CHECKPOINT / "model.safetensors").exists() else [])
    for ckpt in ckpts:
        cpu, dev = Predictor.from_pretrained(ckpt, device="cpu"), Predictor.from_pretrained(ckpt, device=DEVICE)
        assert next(dev.model.parameters()).device.type == torch.device(DEVICE).type
        d = float(np.abs(dev.score(img, caps) - cpu.score(img, caps)).max())
        record_property(f"scores device vs CPU ({'shipped toy' if ckpt == 'toy' else 'random weights'})", f"{d:.2e}")
        assert d <= 1e-5
        att = dev.attend(img, caps[0])                   # the attention maps, read back from the device
        real = att.regions.mask
        np.testing.assert_allclose(att.cross[..., real].sum(-1), 1, atol=1e-5)


# --- the command-line tools with --device ------------------------------------------------------------------
def test_extract_cli_on_device(toy, tmp_path, record_property):
    from simplelxmert.features import FeatureStore, extract_cli
    import shutil
    data, _ = toy
    dev = torch.device(DEVICE).type                      # --device takes cpu or cuda
    (tmp_path / "images").mkdir()
    for f in sorted(data.images_dir.iterdir())[:5]: shutil.copy(f, tmp_path / "images")   # 5 images: two batches
    assert extract_cli([str(tmp_path / "images"), str(tmp_path / "frcnn"), "--weights", "random", "--k", "6", "--min-size",
                        "64", "--max-size", "96", "--batch-size", "4", "--device", dev]) == 0
    s = FeatureStore(tmp_path / "frcnn")
    assert len(s) == 5 and s.dim == 1024 and all(s[i].mask.any() for i in s.ids)
    assert extract_cli([str(data.images_dir), str(tmp_path / "toy"), "--extractor", "toy", "--boxes", str(data.boxes_path),
                        "--device", dev]) == 0
    toy_store, ref = FeatureStore(tmp_path / "toy"), data.store()
    assert sorted(toy_store.ids) == sorted(ref.ids) and all(toy_store[i] == ref[i] for i in ref.ids)
    record_property("images extracted (frcnn, toy)", f"{len(s)}, {len(toy_store)}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A short simplelxmert_train run on the device (mixed precision on CUDA, masked LM on), for the CLI tests."
    from simplelxmert.training import train_cli
    root = tmp_path_factory.mktemp("train_cli")
    train_cli(["--data", "toy", "--data-dir", str(root / "toy"), "--n-images", "40", "--out", str(root / "o"), "--quiet",
               "--hidden", "32", "--heads", "2", "--batch-size", "8", "--steps", "4", "--eval-every", "2",
               "--max-val-pairs", "20", "--mlm-weight", "1", "--device", DEVICE])
    return root


def test_train_cli_on_device(trained, record_property):
    from simplelxmert.training import read_config
    cfg, hist = read_config(trained / "o"), json.loads((trained / "o" / "history.json").read_text())
    assert cfg["step"] == 4 and cfg["train_args"]["device"] == DEVICE and (trained / "o" / "curves.png").exists()
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["random_loss"]) for h in hist)
    record_property("train loss, random_acc at step 4", f"{hist[-1]['train_loss']:.4f}, {hist[-1]['random_acc']:.3f}")


def test_predict_cli_on_device(trained, capsys, record_property):
    from simplelxmert.inference import Predictor, predict_cli
    img = sorted((trained / "toy" / "images").iterdir())[0]
    caps = ["a red circle .", "a blue square ."]
    assert predict_cli([str(trained / "o"), str(img), *caps, "--device", DEVICE]) is None
    lines = capsys.readouterr().out.strip().splitlines()
    printed = [float(l.split()[0]) for l in lines[-2:]]
    d = float(np.abs(np.array(printed) - Predictor.from_pretrained(trained / "o", device="cpu").score(img, caps)).max())
    record_property("printed scores vs CPU Predictor", f"{d:.1e}")
    assert len(lines) >= 2 and d <= 1e-3
