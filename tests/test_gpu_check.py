"""tools/gpu_check.sh on a machine without a GPU, as CI runs it: every part says "no CUDA device: skipped" and it exits
0; `--device cpu --smoke` runs every part tiny on the CPU, so that the driver's own code is checked before GPU minutes
are spent on it; fastcore, missing on a bare GPU machine, comes from the wheels in .whl/."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("cuda_tests", "training", "ddp", "bench")
WHEELS = sorted((ROOT / ".whl").glob("fastcore-*.whl"))
HIDE_FASTCORE = '''import importlib.machinery, sys
class HideFastcore:
    "fastcore only from outside this environment's site-packages, as on a machine that lacks it"
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] != "fastcore": return None
        spec = importlib.machinery.PathFinder.find_spec(name, [p for p in (path or sys.path) if "site-packages" not in p])
        if spec is None: raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return spec
sys.meta_path.insert(0, HideFastcore)
'''


def gpu_check(tmp_path, *args, env=None):
    "Run the script as on a CPU machine (no GPU visible) with this Python; its exit status, stdout and JSON report."
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900, env={**os.environ, "PYTHON": sys.executable, "OUT": str(out), "CUDA_VISIBLE_DEVICES": "",
                                         **(env or {})})
    report = out / "gpu_report.json"
    return r, json.loads(report.read_text()) if report.exists() else None


def test_without_a_gpu_every_part_is_skipped(tmp_path):
    r, report = gpu_check(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("no CUDA device: skipped") == len(PARTS)
    assert report["ok"] and {k: v["status"] for k, v in report["parts"].items()} == dict.fromkeys(PARTS, "skipped")
    assert (tmp_path / "out" / "gpu_check.log").read_text() == r.stdout


def test_smoke_runs_every_part_on_the_cpu(tmp_path):
    r, report = gpu_check(tmp_path, "--device", "cpu", "--smoke")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    parts = report["parts"]
    assert {k: (v["status"], v["failed"]) for k, v in parts.items()} == dict.fromkeys(PARTS, ("ok", []))
    tests = parts["cuda_tests"]["figures"]["tests"]
    assert len(tests) == 9 and all(t["outcome"] == "passed" for t in tests), tests
    assert "gradients, full + masked LM" in tests[0]["figures"]
    training = parts["training"]["figures"]
    assert training["fp32 resume"]["bitwise"] and training["fp32 nan"]["saved_steps"] == [4, 4]
    assert parts["ddp"]["figures"]["torchrun x1 vs plain"]["bitwise"] and parts["ddp"]["figures"]["ddp worker"]["bitwise"]
    bench = parts["bench"]["figures"]
    assert len(bench["paper samples/s"]) == 8 and bench["paper largest batch"]["ours"]["batch"] == 8
    for log in ("cuda_tests.log", "ddp_torchrun_x1.log", "ddp_worker.log"): assert (tmp_path / "out" / log).exists()


def test_a_missing_import_is_named(tmp_path):
    "fastcore hidden and no wheel to install it from: the report names it and says where its wheel goes."
    (tmp_path / "hide").mkdir(); (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE_FASTCORE)
    (tmp_path / "empty").mkdir()
    r, report = gpu_check(tmp_path, env={"PYTHONPATH": str(tmp_path / "hide"), "GPU_CHECK_WHEELS": str(tmp_path / "empty")})
    assert r.returncode == 1 and "fastcore is missing" in r.stderr and "MISSING fastcore" in r.stdout
    assert "pip download" in report["env"]["missing"]["fastcore"] and not report["ok"]


@pytest.mark.skipif(not WHEELS, reason="no fastcore wheel in .whl/ (python3 -m pip download --no-deps --only-binary=:all: -d .whl fastcore==VERSION)")
def test_fastcore_comes_from_the_wheel_when_missing(tmp_path):
    (tmp_path / "hide").mkdir(); (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE_FASTCORE)
    r, report = gpu_check(tmp_path, env={"PYTHONPATH": str(tmp_path / "hide")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fastcore is missing: installing" in r.stdout and report["env"]["fastcore"].endswith("(from .whl)")
