"""One command that proves every CUDA path of simplelxmert on a bare GPU machine, in minutes (issue 22).

    bash tools/gpu_check.sh [--budget SECONDS] [--parts cuda_tests,training,ddp,bench] [--device cpu --smoke]

Parts, in this order, each timed, each given at most its own seconds out of one global budget (a part that would
start with less than its minimum left is skipped, with a note):
  cuda_tests  `pytest -m cuda tests/test_cuda.py` on the device: every device path equals its CPU path (model forward
              and gradients, extraction, cached retrieval, the Predictor, each CLI with --device cuda), and the
              figures each test records
  training    ITM training on ShapesWorld with mixed precision: bfloat16, then float16 + GradScaler (forced); each
              leaves chance, resumes exactly (stop_after, then resume=True) and stops on an injected NaN
  ddp         `torchrun -m simplelxmert.training`, one process per GPU (NCCL), == the plain single-process run; an
              NCCL all-reduce and a DistributedDataParallel step == the plain step
  bench       ours vs transformers.LxmertModel at the seed and the paper configuration (bench/bench_model.py's
              functions): samples/s of a training step and of an eval forward, float32 and AMP, the largest batch
              that fits; the feature store feeding a CUDA training loop, with and without DataLoader workers
Without a CUDA device every part says "no CUDA device: skipped" and the exit status is 0 (CI runs it so);
`--device cpu --smoke` runs every part tiny on the CPU, so that the driver's own code is checked without a GPU.
Prints a short report with figures and writes it to $OUT/gpu_report.json (after each part: a run cut short keeps
what it measured). Exit status 1 when a check failed.
"""
import argparse, contextlib, copy, gc, json, os, platform, signal, subprocess, sys, tempfile, time, traceback, warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # before CUDA starts: deterministic cuBLAS (exact resume)
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import torch

PARTS = {"cuda_tests": (150, 40), "training": (120, 30), "ddp": (75, 20), "bench": (150, 30)}   # (seconds, minimum to start)
NEEDED = ("numpy", "PIL", "matplotlib", "tqdm", "safetensors", "tokenizers", "transformers", "torchvision", "fastcore")
FASTCORE_HINT = ("put its wheel in .whl/ (on a machine with internet: python3 -m pip download --no-deps --only-binary=:all: "
                 "-d .whl 'fastcore>=1.12.3,<2') and run tools/gpu_check.sh, which installs it from there")
TINY = dict(vocab_size=100, hidden_size=32, num_attention_heads=2, intermediate_size=64, l_layers=1, r_layers=1,
            x_layers=1, visual_feat_dim=16)
# sizes of the training part: the README's toy recipe (chapter 04) shrunk to a minute; smoke: a few steps on a CPU
TRAIN = {"full": SimpleNamespace(n_images=1000, hidden=128, heads=4, batch=128, learn_steps=300, bar=0.65, val_pairs=500,
                                 resume_steps=40, stop=17, nan_at=7),
         "smoke": SimpleNamespace(n_images=40, hidden=32, heads=2, batch=8, learn_steps=6, bar=None, val_pairs=20,
                                  resume_steps=8, stop=3, nan_at=7)}
BENCH = {"full": SimpleNamespace(batch=32, tokens=50, boxes=36, repeats=9, start=64, caps={"seed": 8192, "paper": 2048},
                                 loader_batch=128, loader_batches=30, n_images=1000),
         "smoke": SimpleNamespace(batch=4, tokens=12, boxes=6, repeats=1, start=4, caps={"seed": 16, "paper": 8},
                                  loader_batch=8, loader_batches=3, n_images=40)}


class Skip(Exception):
    "A part that need not run here; the message says why."


class CannotRun(Exception):
    "A part that should run here but cannot (a missing import); the message says why."


class Part:
    "One part's record: status, seconds, figures, failed checks; `say` prints a line of the report as it comes."
    def __init__(self, name, deadline):
        self.name, self.deadline, self.figures, self.failed, self.status, self.note = name, deadline, {}, [], "ok", None

    def left(self) -> float: return self.deadline - time.time()

    def say(self, line): print(f"  {line}", flush=True)

    def check(self, ok, what) -> bool:
        "A check: printed with ok/FAIL, and a failure makes the part fail."
        if not ok: self.failed.append(what)
        self.say(("ok    " if ok else "FAIL  ") + what)
        return bool(ok)

    def record(self) -> dict:
        return dict(status=self.status, seconds=round(self.seconds, 1), figures=self.figures, failed=self.failed, note=self.note)


# --- helpers ------------------------------------------------------------------------------------------------
def run_cmd(cmd, part, log=None, env=None):
    "Run `cmd` in the repository root within the part's time left (its whole process group killed past it); output to `log`."
    p = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try: out, _ = p.communicate(timeout=max(1.0, part.left()))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); out, _ = p.communicate()
        out += "\n[gpu_check: killed after the part's time ran out]"
        p.returncode = -9
    if log is not None: Path(log).write_text(out)
    return p.returncode, out


def tail(text, n=1500) -> str: return text[-n:]


def rel_diff(a: dict, b: dict) -> tuple[bool, float]:
    "Two state dicts: (bitwise equal, max |a - b| / max(1, max |b|))."
    same, worst = True, 0.0
    for k, v in b.items():
        w = a[k].detach().cpu()
        same &= torch.equal(w, v.cpu())
        if v.is_floating_point(): worst = max(worst, float((w - v.cpu()).abs().max() / max(1.0, float(v.abs().max()))))
    return same, worst


def toy_dir(ctx, n_images):
    "One ShapesWorld of `n_images` per run of the driver, shared by the parts."
    from simplelxmert.dataset import make_toy_data
    return make_toy_data(ctx.tmp / f"toy{n_images}", n_images=n_images, seed=0)


@contextlib.contextmanager
def spy_autocast(seen: set):
    "Record each `torch.autocast(device, dtype, enabled)` the trainer opens."
    real = torch.autocast
    def spy(device_type, dtype=None, enabled=True, **kw):
        seen.add((device_type, str(dtype).replace("torch.", ""), bool(enabled)))
        return real(device_type, dtype=dtype, enabled=enabled, **kw)
    torch.autocast = spy
    try: yield
    finally: torch.autocast = real


@contextlib.contextmanager
def forced_fp16():
    "The trainer picks float16 + GradScaler, as on a GPU without bfloat16 (it asks torch.cuda.is_bf16_supported)."
    real = torch.cuda.is_bf16_supported
    torch.cuda.is_bf16_supported = lambda *a, **k: False
    try: yield
    finally: torch.cuda.is_bf16_supported = real


@contextlib.contextmanager
def deterministic(warn_only: bool):
    "PyTorch's deterministic algorithms (cuBLAS's workspace is fixed by CUBLAS_WORKSPACE_CONFIG, set before CUDA starts)."
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try: yield
    finally: torch.use_deterministic_algorithms(False)


def amp_dtype(device):
    return torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16


def with_autocast(fn, device, dtype):
    "`fn` run under autocast (`dtype` None: as it is)."
    if dtype is None: return fn
    def run():
        with torch.autocast(device.type, dtype=dtype): return fn()
    return run


# --- env ----------------------------------------------------------------------------------------------------
def nccl_version():
    "NCCL's version as text (torch returns a tuple, older versions an int), None without NCCL."
    try: v = torch.cuda.nccl.version()
    except Exception: return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)

def env_info(device) -> dict:
    "Versions, the GPU, and every import the package, its tests and its benches need (missing ones named)."
    info = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                device=str(device), cuda_available=torch.cuda.is_available(),
                cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"), missing={})
    if torch.cuda.is_available():
        pr = torch.cuda.get_device_properties(0)
        info.update(gpu=pr.name, gpus=torch.cuda.device_count(), capability=f"sm_{pr.major}{pr.minor}",
                    memory_gib=round(pr.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported(),
                    nccl=nccl_version())
    for name in NEEDED + ("pytest",):
        try:
            m = __import__(name)
            info[name] = getattr(m, "__version__", "?") + (" (from .whl)" if name == "fastcore" and "site-packages" not in m.__file__ else "")
        except ImportError as e:
            info["missing"][name] = FASTCORE_HINT if name == "fastcore" else f"{e} (not installed for {sys.executable})"
    for mod in ("simplelxmert.features", "simplelxmert.dataset", "simplelxmert.encoders", "simplelxmert.training",
                "simplelxmert.inference", "bench_model", "bench_dataset"):
        try: __import__(mod)
        except Exception as e: info["missing"].setdefault(mod, f"cannot be imported: {type(e).__name__}: {e}")
    return info


# --- part: cuda_tests ---------------------------------------------------------------------------------------
def junit_results(path) -> list[dict]:
    "Each test of a pytest JUnit XML file: name, outcome, seconds, the figures it recorded (`record_property`)."
    out = []
    for tc in ET.parse(path).iter("testcase"):
        bad = next((c for c in tc if c.tag in ("failure", "error", "skipped")), None)
        out.append(dict(name=tc.get("name"), outcome="passed" if bad is None else bad.tag, seconds=float(tc.get("time", 0)),
                        figures={p.get("name"): p.get("value") for p in tc.iter("property")},
                        message="" if bad is None else (bad.get("message") or "")[:300]))
    return out


def part_cuda_tests(p, ctx):
    "pytest -m cuda tests/test_cuda.py with the device in the GPU's place; the figures each test records."
    xml = ctx.tmp / "cuda_tests.xml"
    rc, out = run_cmd([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider",
                       "-o", "junit_family=xunit1", f"--junitxml={xml}"] + (["-k", ctx.tests] if ctx.tests else []), p, log=ctx.out_file("cuda_tests.log"),
                      env={"SIMPLELXMERT_TEST_DEVICE": ctx.device.type})
    tests = junit_results(xml) if xml.exists() else []
    p.figures["tests"] = tests
    for t in tests:
        p.say(f"{t['outcome']:7s} {t['name']} ({t['seconds']:.1f} s)" + "".join(f"\n            {k}: {v}" for k, v in t["figures"].items())
              + (f"\n            {t['message']}" if t["message"] else ""))
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failure", "error", "skipped")}
    p.figures["counts"] = counts
    if rc != 0: p.figures["output_tail"] = tail(out)
    p.check(rc == 0 and counts["passed"] > 0 and counts["skipped"] == 0,
            f"pytest exit status {rc}: {counts['passed']} passed, {counts['failure']} failed, {counts['error']} errors, "
            f"{counts['skipped']} skipped" + ("" if rc == 0 else f"; output tail:\n{tail(out, 600)}"))


# --- part: training -----------------------------------------------------------------------------------------
def itm_model(data, s, norm, dropout, mlm=True):
    "The toy recipe's model (README, chapter 04): 2/2/2 layers, init range 0.1, sinusoid positions, standardized features."
    from simplelxmert.encoders import LXMERTConfig
    from simplelxmert.training import ITMModel, init_sinusoid_positions
    torch.manual_seed(0)
    cfg = LXMERTConfig(vocab_size=len(data.tokenizer), hidden_size=s.hidden, num_attention_heads=s.heads,
                       intermediate_size=4 * s.hidden, visual_feat_dim=data.store.dim, hidden_dropout_prob=dropout,
                       attention_probs_dropout_prob=dropout, initializer_range=0.1)
    model = ITMModel(cfg, feature_norm=norm, mlm=mlm)
    init_sinusoid_positions(model.lxmert)
    return model


def fit(ctx, data, model, out, s, steps, eval_every, save_every, max_minutes=None, **kw):
    "`train` with the recipe's settings (lr 1e-3, masked LM weight 1 when the model has the head); (history, seconds, autocasts)."
    from simplelxmert.dataset import collate_itm
    from simplelxmert.training import TrainConfig, train
    cfg = TrainConfig(lr=1e-3, batch_size=s.batch, steps=steps, eval_every=eval_every, save_every=save_every, seed=0,
                      mlm_weight=1.0 if model.mlm_head is not None else 0.0, device=str(ctx.device), max_minutes=max_minutes)
    seen, t = set(), time.time()
    with spy_autocast(seen):
        hist = train(model, data.train, cfg, val_sets=data.val, collate_fn=collate_itm, out_dir=out, tokenizer=data.tokenizer,
                     progress=False, **kw)
    if ctx.device.type == "cuda": torch.cuda.synchronize()
    return hist, time.time() - t, sorted(seen)


def learn(p, ctx, data, norm, amp, s):
    "Train the recipe for a minute: validation accuracy on random negatives clearly above chance (stopped early by the part's budget)."
    from simplelxmert.training import STATE_NAME, load_state_file
    out = ctx.tmp / f"learn_{amp}"
    hist, sec, seen = fit(ctx, data, itm_model(data, s, norm, 0.0), out, s, s.learn_steps, max(s.learn_steps // 3, 1),
                          s.learn_steps, max_minutes=max(p.left() - 30, 10) / 60)
    state = load_state_file(out / STATE_NAME)
    last, scaler, fused = hist[-1], state["scaler"], {g.get("fused") for g in state["optimizer"]["param_groups"]}
    fig = dict(steps=last["step"], seconds=round(sec, 1), samples_per_s=round(last["step"] * s.batch / sec, 1),
               random_acc=round(last["random_acc"], 3), compositional_acc=round(last["compositional_acc"], 3),
               train_loss=round(last["train_loss"], 4), autocast=seen, grad_scale=scaler.get("scale"), fused_adamw=sorted(fused, key=str))
    p.figures[f"{amp} learn"] = fig
    if last["step"] < s.learn_steps: p.note = f"{amp} training stopped at step {last['step']} by the part's budget"
    p.say(f"{amp}: {fig['steps']} steps in {sec:.1f} s ({fig['samples_per_s']:.0f} samples/s, evaluations included): "
          f"validation accuracy {fig['random_acc']:.3f} random / {fig['compositional_acc']:.3f} compositional, "
          f"train loss {fig['train_loss']:.3f}; autocast {seen}" + (f", GradScaler scale {fig['grad_scale']:g}" if fig["grad_scale"] else ""))
    if ctx.device.type == "cuda":
        want = ("cuda", "bfloat16" if amp == "bf16" else "float16", True)
        p.check(list(want) in [list(x) for x in seen] and (("scale" in scaler) == (amp == "fp16")),
                f"{amp}: trained under autocast {want[1]}" + (" with a GradScaler" if amp == "fp16" else " without a GradScaler"))
    p.check(fused == {True}, f"{amp}: the optimizer is PyTorch's fused AdamW on {ctx.device.type} (fused={sorted(fused, key=str)})")
    p.check(all(all(v == v and abs(v) != float("inf") for k, v in h.items() if k.endswith("loss")) for h in hist),
            f"{amp}: every loss finite")
    if s.bar is not None:
        p.check(last["random_acc"] >= s.bar, f"{amp}: leaves chance: random-negative accuracy {last['random_acc']:.3f} >= {s.bar}")


def resume(p, ctx, data, norm, amp, s):
    """Interrupted (`stop_after`, mid-epoch) then resumed == one uninterrupted run, with dropout (the CUDA RNG state) and
    the masked LM (the CPU RNG state). Under deterministic algorithms: bitwise. Should PyTorch refuse an op as having no
    deterministic kernel, again with warn_only, where GPU kernels may sum in another order from run to run: then the
    difference between the two runs must stay under 1 % of what training changed (|resumed - full| / |full - initial|)."""
    from simplelxmert.training import STATE_NAME, load_state_file
    def attempt(root):
        def run(out, **kw):
            model = itm_model(data, s, norm, 0.1)
            fit(ctx, data, model, out, s, s.resume_steps, 10, 10, **kw)
            return model
        full = run(root / "full")
        run(root / "split", stop_after=s.stop)
        stopped = load_state_file(root / "split" / STATE_NAME)["step"]
        return full, run(root / "split", resume=True), stopped
    t, note = time.time(), None
    try:
        with deterministic(warn_only=False): full, resumed, stopped = attempt(ctx.tmp / f"resume_{amp}")
    except RuntimeError as e:
        if "determinis" not in str(e): raise
        note = " ".join(str(e).split())[:300]
        p.say(f"{amp}: deterministic algorithms refused an op ({note}); again with warn_only")
        with deterministic(warn_only=True), warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            full, resumed, stopped = attempt(ctx.tmp / f"resume_{amp}_warn_only")
        note += " | warned: " + "; ".join(sorted({" ".join(str(x.message).split())[:120] for x in w}))[:600]
    same, diff = rel_diff(resumed.state_dict(), full.state_dict())
    flat = [torch.cat([v.detach().cpu().flatten() for v in m.state_dict().values() if v.is_floating_point()])
            for m in (itm_model(data, s, norm, 0.1), full, resumed)]     # initial, uninterrupted, resumed
    drift = float((flat[2] - flat[1]).norm() / (flat[1] - flat[0]).norm())
    p.figures[f"{amp} resume"] = dict(steps=s.resume_steps, stopped_at=stopped, bitwise=same, max_rel_diff=diff, drift=drift,
                                      strict_deterministic=note is None, note=note, seconds=round(time.time() - t, 1))
    p.check(stopped == s.stop, f"{amp}: interrupted at step {stopped} (stop_after={s.stop})")
    p.check(same if note is None else drift <= 1e-2,
            f"{amp}: resumed at step {stopped} == uninterrupted {s.resume_steps} steps: "
            + ("bitwise" if same else f"max relative difference {diff:.1e}, {100 * drift:.2g} % of the training update")
            + (" (strict deterministic algorithms)" if note is None else " (warn_only: nondeterministic kernels, tolerance 1 %)"))


def nan_stop(p, ctx, data, norm, amp, s):
    "A NaN loss at step `nan_at`: NonFiniteLossError, and the last good checkpoint (step 4) kept (tests/test_training.py's injection)."
    from simplelxmert.training import NonFiniteLossError, STATE_NAME, load_state_file, read_config
    model, calls = itm_model(data, s, norm, 0.0, mlm=False), [0]
    forward = model.forward
    def poisoned(*a, **kw):
        out = forward(*a, **kw)
        if model.training:
            calls[0] += 1
            if calls[0] == s.nan_at: out = out * float("nan")
        return out
    model.forward = poisoned
    out, err = ctx.tmp / f"nan_{amp}", None
    try: fit(ctx, data, model, out, s, 20, 4, 4)
    except NonFiniteLossError as e: err = e
    saved = (read_config(out)["step"], load_state_file(out / STATE_NAME)["step"]) if (out / STATE_NAME).exists() else None
    p.figures[f"{amp} nan"] = dict(error=str(err) if err else None, saved_steps=saved)
    p.check(err is not None and f"at step {s.nan_at}" in str(err), f"{amp}: NaN at step {s.nan_at} raised NonFiniteLossError: {err}")
    p.check(saved == (4, 4), f"{amp}: last good checkpoint kept: model and trainer state at step {saved and saved[0]} (want 4)")


def part_training(p, ctx):
    "bf16, then fp16 + GradScaler forced: each learns, resumes exactly and stops on a NaN."
    from simplelxmert.training import feature_norm, toy_itm_data
    s = TRAIN["smoke" if ctx.smoke else "full"]
    toy_dir(ctx, s.n_images)
    data = toy_itm_data(ctx.tmp / f"toy{s.n_images}", n_images=s.n_images, data_seed=0, max_len=32, hard_neg_prob=0.5,
                        seed=0, max_val_pairs=s.val_pairs, random_neg_epochs=3)
    norm = feature_norm(data.store, [r.image_id for r in data.train.records])
    p.say(f"ShapesWorld {s.n_images} images: {len(data.train)} training pairs, validation "
          f"{', '.join(f'{k} {len(v)}' for k, v in data.val.items())}; batch {s.batch}, hidden {s.hidden}"
          + ("" if ctx.device.type == "cuda" else " (no mixed precision on a CPU: the same code, in float32)"))
    for amp in ("bf16", "fp16") if ctx.device.type == "cuda" else ("fp32",):   # a CPU has no mixed precision: one pass
        if amp == "bf16" and ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            p.say("bf16: this GPU has no bfloat16: skipped"); continue
        with forced_fp16() if amp == "fp16" else contextlib.nullcontext():
            for check in (learn, resume, nan_stop):
                if p.left() < 10: p.say(f"{amp} {check.__name__}: skipped, the part's time is spent"); p.note = "cut short by its budget"; continue
                check(p, ctx, data, norm, amp, s)


# --- part: ddp ----------------------------------------------------------------------------------------------
def ddp_worker(path, device):
    "Run under torchrun: an all-reduce, and a DistributedDataParallel ITMModel stepping as the plain one (world size 1)."
    import torch.distributed as dist
    from simplelxmert.encoders import LXMERTConfig, random_batch
    from simplelxmert.training import ITMModel, itm_loss, make_optimizer
    cuda = device.startswith("cuda")
    torch.use_deterministic_algorithms(True)          # the two models must take the same kernels
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda: torch.cuda.set_device(dev)
    t = torch.full((4,), float(rank + 1), device=dev); dist.all_reduce(t)
    config = LXMERTConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    plain = ITMModel(config).to(dev); wrapped = copy.deepcopy(plain)
    net = torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=[dev.index] if cuda else None, find_unused_parameters=True)
    batch = {k: v.to(dev) for k, v in random_batch(config, B=4, T=9, K=7, seed=0).items()}
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0], device=dev)
    for model, opt in ((plain, make_optimizer(plain)), (net, make_optimizer(wrapped))):
        for _ in range(3):
            loss = itm_loss(model(**batch), labels); opt.zero_grad(); loss.backward(); opt.step()
    same, diff = rel_diff(wrapped.state_dict(), plain.state_dict())
    if rank == 0:
        Path(path).write_text(json.dumps(dict(backend=dist.get_backend(), world=world, all_reduce=t.tolist(), bitwise=same,
                                              max_rel_diff=diff)))
    dist.destroy_process_group()
    return 0


SITECUSTOMIZE = """import os
mode = os.environ.get("GPU_CHECK_DETERMINISTIC")   # written by tools/gpu_check.py: the torchrun processes' deterministic mode
if mode:
    import torch; torch.use_deterministic_algorithms(True, warn_only=mode == "warn")
"""


def part_ddp(p, ctx):
    """`torchrun -m simplelxmert.training`, one process per GPU, == the plain run (train_cli in this process); the NCCL +
    DDP worker. Every run uses deterministic algorithms (the torchrun processes through a sitecustomize on PYTHONPATH): a
    GPU's default kernels (atomic adds in embedding and index_select backward, in attention's) differ from run to run.
    Should PyTorch refuse an op as having no deterministic kernel, all runs again with warn_only and a 1e-2 tolerance."""
    from safetensors.torch import load_file
    from simplelxmert.training import train_cli
    site = ctx.tmp / "site"; site.mkdir(exist_ok=True); (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    argv = ["--data", "toy", "--data-dir", str(ctx.tmp / "ddp_toy"), "--n-images", "40", "--hidden", "32", "--heads", "2",
            "--steps", "6", "--eval-every", "6", "--save-every", "6", "--max-val-pairs", "20", "--dropout", "0", "--seed", "1",
            "--quiet", "--device", ctx.device.type]
    gpus = torch.cuda.device_count() if ctx.device.type == "cuda" else 0
    runs = {"torchrun x1": (1, 8)}                  # processes, batch per process (the plain run: 8)
    if gpus >= 2: runs["torchrun x2"] = (2, 4)
    else: p.say(f"torchrun x2: skipped, {gpus} GPU (NCCL takes one GPU per process; tests/test_training.py runs two gloo processes on a CPU)")
    for mode in ("strict", "warn"):
        folder = lambda name: ctx.tmp / f"ddp_{mode}_{name.replace(' ', '_')}"
        t = time.time()
        try:
            with deterministic(warn_only=mode == "warn"), open(ctx.out_file("ddp_plain.log"), "w") as log, \
                 contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                train_cli(argv + ["--batch-size", "8", "--out", str(folder("plain"))])
        except SystemExit as e:             # train_cli said why in one line, in the log
            why = (ctx.out_file("ddp_plain.log").read_text().strip().splitlines() or [""])[-1]
            if mode == "warn" or "determinis" not in why: raise RuntimeError(f"the plain run stopped (exit status {e.code}): {why}") from None
            p.say(f"deterministic algorithms refused an op ({why[:300]}): every run again with warn_only")
            continue
        p.say(f"plain run (train_cli in this process), batch 8: {time.time() - t:.1f} s")
        weights = {"plain": load_file(str(folder("plain") / "model.safetensors"))}
        env = {"GPU_CHECK_DETERMINISTIC": mode, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        for name, (n, batch) in runs.items():
            t = time.time()
            rc, out = run_cmd(torchrun + [f"--nproc_per_node={n}", "-m", "simplelxmert.training", *argv, "--batch-size", str(batch),
                                          "--out", str(folder(name))], p, log=ctx.out_file(f"ddp_{name.replace(' ', '_')}.log"), env=env)
            p.figures[f"{name} seconds"] = round(time.time() - t, 1)
            if p.check(rc == 0, f"{name}, batch {batch} per process: exit status {rc} in {time.time() - t:.1f} s"
                       + ("" if rc == 0 else f"\n{tail(out, 800)}")):
                weights[name] = load_file(str(folder(name) / "model.safetensors"))
        for name, (n, _) in runs.items():
            if name not in weights: continue
            same, diff = rel_diff(weights[name], weights["plain"])
            tol = 1e-2 if mode == "warn" else (0.0 if n == 1 else 1e-4)   # two processes: their gradients summed in another order
            p.figures[f"{name} vs plain"] = dict(bitwise=same, max_rel_diff=diff, deterministic=mode)
            p.check(diff <= tol, f"{name} parameters == the plain run's: " + ("bitwise" if same else f"max relative difference "
                    f"{diff:.1e} (<= {tol:g})") + f" ({mode} deterministic algorithms)")
        break
    result = ctx.tmp / "ddp_worker.json"
    rc, out = run_cmd(torchrun + ["--nproc_per_node=1", str(Path(__file__).resolve()), "--ddp-worker", str(result),
                                  "--device", ctx.device.type], p, log=ctx.out_file("ddp_worker.log"))
    r = json.loads(result.read_text()) if rc == 0 and result.exists() else {}
    p.figures["ddp worker"] = r or dict(exit=rc, output_tail=tail(out))
    p.check(rc == 0 and r.get("all_reduce") == [1.0] * 4 and r.get("bitwise"),
            f"{r.get('backend', '?')} all-reduce and a DistributedDataParallel step == the plain step (world {r.get('world')}): "
            + (("bitwise" if r["bitwise"] else f"max relative difference {r['max_rel_diff']:.1e}") if r else f"exit status {rc}\n{tail(out, 800)}"))


# --- part: bench --------------------------------------------------------------------------------------------
def bench_configs(smoke):
    from simplelxmert.encoders import LXMERTConfig
    if smoke: return {"paper": LXMERTConfig.paper(**TINY)}   # (tiny: one configuration runs the same code as two)
    return {"seed": LXMERTConfig(), "paper": LXMERTConfig.paper()}


def contenders(config, device):
    "Hugging Face's LxmertModel and ours with the same weights, each with its own ITM head (as bench/bench_model.py)."
    import transformers
    from simplelxmert.encoders import LXMERT
    torch.manual_seed(0)
    with device:                                     # built on the device: the paper's 200M parameters initialize in no time
        hf = transformers.LxmertModel(config.to_hf())
        ours = LXMERT.from_hf(hf)
        head = torch.nn.Linear(config.hidden_size, 1)
    return {"hf": (hf, head), "ours": (ours, copy.deepcopy(head))}


def pooled_fn(name, model, batch):
    "The forward each contender trains with: HF's full forward, our pooled-only path (chapter 04's trainer)."
    from simplelxmert.encoders import hf_inputs
    if name == "hf": return lambda: model(**hf_inputs(batch)).pooled_output
    return lambda: model(**batch, pooled_only=True).pooled_output


def throughput(p, name, config, models, device, b):
    "samples/s of a training step (fused AdamW) and an eval forward, float32 and AMP, alternating the contenders."
    import bench_model
    batch, labels = bench_model.make_batch(config, b.batch, b.tokens, b.boxes, device)
    dt = amp_dtype(device)
    steps, evals = {}, {}
    for amp in ("fp32", "amp"):
        for k, (model, head) in models.items():
            pooled = pooled_fn(k, model, batch)
            steps[k, amp] = with_autocast(bench_model.make_step(model, head, pooled, labels, fused_adamw=True), device, dt if amp == "amp" else None)
            evals[k, amp] = with_autocast(bench_model.make_eval(model, pooled), device, dt if amp == "amp" else None)
    rates = {}
    for what, fns in (("train step", steps), ("eval forward", evals)):
        for f in fns.values(): f(); f()                                     # warm-up
        wall, _, _ = bench_model.interleaved_medians(fns, b.repeats, device)
        for (k, amp), t in wall.items(): rates[f"{what}, {amp}, {k}"] = round(b.batch / t, 1)
        p.say(f"{name} {what:12s} " + " | ".join(
            f"{'float32' if amp == 'fp32' else 'AMP ' + str(dt)[6:]}: HF {b.batch / wall['hf', amp]:8.0f}, ours {b.batch / wall['ours', amp]:8.0f} "
            f"samples/s ({wall['hf', amp] / wall['ours', amp]:.2f}x)" for amp in ("fp32", "amp")))
    return rates


def largest_batch(p, name, config, k, model, head, device, b):
    """Doubling search for the largest AMP training-step batch that fits, up to a cap: ((batch, peak GiB) or None, why
    it stopped: "cap", "budget", or the error of the first batch that did not fit, out of memory or another)."""
    import bench_model
    best, size, cap = None, b.start, b.caps[name]
    while size <= cap and p.left() > 15:
        if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
        batch = labels = step = None
        try:
            batch, labels = bench_model.make_batch(config, size, b.tokens, b.boxes, device)
            step = with_autocast(bench_model.make_step(model, head, pooled_fn(k, model, batch), labels, fused_adamw=True),
                                 device, amp_dtype(device))
            step(); bench_model.sync(device); err = None
        except RuntimeError as e: err = f"batch {size}: " + " ".join(str(e).split())[:160]   # (OutOfMemoryError is one)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        del batch, labels, step; model.zero_grad(set_to_none=True); head.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda": torch.cuda.empty_cache()
        if err: return best, err
        best, size = (size, peak), size * 2
    return best, "cap" if size > cap else "budget"


def store_loop(p, ctx, b):
    "The ITM DataLoader over a Flickr30k-shaped store (36 x 1024-d regions) feeding an AMP training step on the device."
    import bench_dataset, bench_model
    from torch.utils.data import DataLoader
    from simplelxmert.dataset import ITMDataset, collate_itm
    from simplelxmert.encoders import LXMERTConfig
    from simplelxmert.features import FeatureStore
    from simplelxmert.training import ITMModel, itm_loss, make_optimizer, model_inputs, trim_padding
    toy = toy_dir(ctx, b.n_images)
    scenes, tok = toy.scenes(), toy.tokenizer()
    store = FeatureStore(bench_dataset.flickr_shaped_store(ctx.tmp / "flickr_shaped", [s.image_id for s in scenes]))
    ds = ITMDataset(toy.records("train"), store, tok, max_len=50, hard_neg_prob=0.5, scenes=scenes)
    torch.manual_seed(0)
    model = ITMModel(LXMERTConfig(vocab_size=len(tok), visual_feat_dim=1024) if not ctx.smoke else
                     LXMERTConfig(**{**TINY, "vocab_size": len(tok), "visual_feat_dim": 1024})).to(ctx.device)
    opt, dt = make_optimizer(model), amp_dtype(ctx.device)
    def step(batch):
        batch = {k: v.to(ctx.device, non_blocking=True) for k, v in trim_padding(batch).items()}
        with torch.autocast(ctx.device.type, dtype=dt):
            loss = itm_loss(model(**model_inputs(batch)), batch["label"])
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    def rate(batches):
        it = iter(batches); step(next(it))                                   # start-up: workers, first kernels
        bench_model.sync(ctx.device); t, n = time.perf_counter(), 0
        for batch in it: step(batch); n += 1
        bench_model.sync(ctx.device)
        return round(n * b.loader_batch / (time.perf_counter() - t), 1)
    one = {k: v.to(ctx.device) for k, v in collate_itm([ds[i] for i in range(b.loader_batch)]).items()}
    rates = {"one batch kept on the device (no loading)": rate([one] * (b.loader_batches + 1))}
    workers = min(8, max(1, (os.cpu_count() or 2) - 1))
    for w in (0, workers):
        dl = DataLoader(ds, batch_size=b.loader_batch, shuffle=True, num_workers=w, collate_fn=collate_itm, drop_last=True,
                        pin_memory=ctx.device.type == "cuda", generator=torch.Generator().manual_seed(0))
        try: rates[f"DataLoader, {w} workers"] = rate(x for _, x in zip(range(b.loader_batches + 1), dl))
        except RuntimeError as e:          # e.g. workers killed by a small /dev/shm in a container
            p.check(False, f"DataLoader with {w} workers: {' '.join(str(e).split())[:200]}")
    p.say(f"feature store -> {ctx.device.type} training loop ({'seed config' if not ctx.smoke else 'tiny config'}, AMP, batch "
          f"{b.loader_batch}, 36 x 1024-d regions): " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + " samples/s")
    return rates


def free(device):
    gc.collect()
    if device.type == "cuda": torch.cuda.empty_cache()


def part_bench(p, ctx):
    """Ours vs Hugging Face at the seed and paper configurations, then the feature store feeding a training loop, then
    the largest batches (the longest and most memory-hungry, last: the budget cuts them first)."""
    b = BENCH["smoke" if ctx.smoke else "full"]
    configs = bench_configs(ctx.smoke)
    p.say(f"batch {b.batch} x {b.tokens} tokens x {b.boxes} boxes; median of {b.repeats} alternating runs; samples/s; "
          f"float32 is PyTorch's default (no TF32 in matrix products)")
    for name, config in configs.items():
        if p.left() < 20: p.say(f"{name}: skipped, the part's time is spent"); p.note = "cut short by its budget"; continue
        p.figures[f"{name} samples/s"] = throughput(p, name, config, contenders(config, ctx.device), ctx.device, b)
        free(ctx.device)
    if p.left() >= 20: p.figures["store loop samples/s"] = store_loop(p, ctx, b); free(ctx.device)
    for name, config in configs.items():
        if p.left() < 20: p.say(f"{name} largest batch: skipped, the part's time is spent"); p.note = "cut short by its budget"; continue
        fits = {}
        for k, (model, head) in contenders(config, ctx.device).items():
            best, stop = largest_batch(p, name, config, k, model, head, ctx.device, b)
            fits[k] = dict(batch=best and best[0], peak_gib=best and best[1] and round(best[1], 1), stopped_by=stop)
        p.figures[f"{name} largest batch"] = fits
        p.say(f"{name} largest AMP training batch (doubling from {b.start}, cap {b.caps[name]}): " + "; ".join(
            f"{'HF' if k == 'hf' else 'ours'} {f['batch']}{'+' if f['stopped_by'] == 'cap' else ''}"
            + (f" ({f['peak_gib']} GiB peak)" if f["peak_gib"] else "")
            + ("" if f["stopped_by"] == "cap" else f", stopped by {f['stopped_by']}") for k, f in fits.items()))
        free(ctx.device)
    p.check(all(v > 0 for k, r in p.figures.items() if k.endswith("samples/s") for v in r.values()), "every figure measured")


# --- main ---------------------------------------------------------------------------------------------------
def write_report(report, out_dir):
    if out_dir is None: return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".gpu_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str)); os.replace(tmp, out_dir / "gpu_report.json")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto (default): CUDA when present, else every part is skipped; cpu: run the parts on the CPU (with --smoke)")
    p.add_argument("--smoke", action="store_true", help="every part tiny (a few steps, tiny models): the driver's code, in seconds")
    p.add_argument("--budget", type=float, default=None, help="seconds for all parts together (default 420, 7 min; "
                   "with --smoke 1200, and no part has a budget of its own: a CPU is slow, and a smoke run checks code, not time)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--out", default=os.environ.get("OUT") or None, help="folder for gpu_report.json and the logs (default $OUT)")
    p.add_argument("--tests", default=None, metavar="EXPR", help="cuda_tests: only the tests pytest -k EXPR selects")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (data, checkpoints)")
    p.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.budget is None: a.budget = 1200 if a.smoke else 420
    unknown = set(a.parts.split(",")) - set(PARTS)
    if unknown: p.error(f"unknown parts {sorted(unknown)}: choose from {','.join(PARTS)}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.ddp_worker: return ddp_worker(a.ddp_worker, a.device)
    t0, cuda = time.time(), torch.cuda.is_available()
    if a.device == "cuda" and not cuda: print("gpu_check: --device cuda, but torch sees no CUDA device", file=sys.stderr); return 2
    device = torch.device("cuda" if cuda and a.device != "cpu" else "cpu")
    run_parts = a.device == "cpu" or cuda
    if device.type == "cpu":   # tiny models on a CPU: one thread each (threads that spin-wait on a loaded machine cost 20x)
        torch.set_num_threads(1); os.environ["OMP_NUM_THREADS"] = "1"
    out = Path(a.out) if a.out else None
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check."))
    ctx = SimpleNamespace(device=device, smoke=a.smoke, tests=a.tests, tmp=tmp, out_file=lambda n: (out / n) if out else tmp / n)
    if out: out.mkdir(parents=True, exist_ok=True)
    env = env_info(device)
    report = dict(started=time.strftime("%Y-%m-%d %H:%M:%S"), device=str(device), smoke=a.smoke, budget_s=a.budget,
                  env=env, parts={})
    print(f"gpu_check: python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), "
          + ", ".join(f"{k} {env.get(k)}" for k in ("transformers", "torchvision", "fastcore", "pytest")), flush=True)
    print(f"gpu_check: device {device}" + (f": {env['gpu']} x{env['gpus']}, {env['capability']}, {env['memory_gib']} GiB, "
          f"bf16 {env['bf16']}, NCCL {env['nccl']}" if cuda else " (no CUDA device)") + (", smoke sizes" if a.smoke else ""), flush=True)
    for name, why in env["missing"].items(): print(f"gpu_check: MISSING {name}: {why}", flush=True)
    broken = {k for k in env["missing"] if k != "pytest"}
    for name in a.parts.split(","):
        budget, minimum = PARTS[name]
        left = a.budget - (time.time() - t0)
        print(f"[{name}]", flush=True)
        if a.smoke: budget = left
        p = Part(name, time.time() + min(budget, left))
        t = time.time()
        try:
            if broken: raise CannotRun(f"cannot run: missing {', '.join(sorted(broken))}")
            if not run_parts: raise Skip("no CUDA device: skipped")
            if name == "cuda_tests" and "pytest" in env["missing"]: raise CannotRun("cannot run: pytest is missing")
            if left < minimum: raise Skip(f"skipped: {left:.0f} s left of the global budget, the part needs at least {minimum}")
            globals()[f"part_{name}"](p, ctx)
            p.status = "fail" if p.failed else "ok"
        except Skip as e: p.status, p.note = "skipped", str(e); p.say(str(e))
        except CannotRun as e: p.status, p.note = "error", str(e)
        except Exception as e:
            p.status, p.note = "error", f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
            p.figures["traceback"] = traceback.format_exc()[-3000:]
            p.say(f"ERROR {p.note}\n{traceback.format_exc()[-1500:]}")
        p.seconds = time.time() - t
        if device.type == "cuda": gc.collect(); torch.cuda.empty_cache()
        print(f"[{name}] {p.status} in {p.seconds:.0f} s (budget {min(budget, max(left, 0)):.0f} s)" + (f": {p.note}" if p.note and p.status != "skipped" else ""), flush=True)
        report["parts"][name] = p.record()
        report["total_s"] = round(time.time() - t0, 1)
        write_report(report, out)
    statuses = {k: v["status"] for k, v in report["parts"].items()}
    report["ok"] = all(s in ("ok", "skipped") for s in statuses.values())      # nothing failed
    report["complete"] = all(s != "skipped" for s in statuses.values()) and not any(v["note"] for v in report["parts"].values())
    write_report(report, out)
    if not a.keep: __import__("shutil").rmtree(tmp, ignore_errors=True)
    else: print(f"gpu_check: kept {tmp}")
    print(f"gpu_check: {'OK' if report['ok'] else 'FAILED'}{'' if report['complete'] or not run_parts else ' (incomplete)'} "
          f"in {report['total_s']:.0f} s of {a.budget:.0f}: "
          + ", ".join(f"{k} {v['status']} {v['seconds']:.0f} s" for k, v in report["parts"].items())
          + (f"; report in {out / 'gpu_report.json'}" if out else ""), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
