"Hostile and damaged inputs: nothing the kit reads runs code, and every refusal is one line naming its file."
import contextlib, io, json, os, shutil

import pytest, torch

from simplelxmert.features import extract_cli, read_state_dict
from simplelxmert.inference import predict_cli
from simplelxmert.training import LEGACY_STATE_NAME, STATE_NAME, train_cli


class Payload:
    "Unpickling this makes the folder `marker`: it stands for any code a hostile file could run."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.mkdir, (self.marker,))


def payload_bytes(marker) -> bytes:
    "A checkpoint file as a hostile `torch.save` writes it (the pickle runs `os.mkdir(marker)` when loaded)."
    buf = io.BytesIO(); torch.save({"step": 3, "model": Payload(marker)}, buf); return buf.getvalue()


def errors_of(cli, argv) -> str:
    "What a command line tool prints on stderr when it refuses (SystemExit or a non-zero return)."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try: code = cli(argv)
        except SystemExit as e: code = e.code if isinstance(e.code, int) else (print(e.code, file=err) or 1)
    return err.getvalue() if code else ""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    "A finished 3-step run of simplelxmert_train on a 40-image toy world."
    root = tmp_path_factory.mktemp("hostile")
    train_cli(["--data", "toy", "--data-dir", str(root / "toy"), "--n-images", "40", "--out", str(root / "run"), "--quiet",
               "--hidden", "32", "--heads", "2", "--batch-size", "8", "--steps", "3", "--eval-every", "3",
               "--max-val-pairs", "20", "--threads", "1"])
    return root


CHECKPOINT_FILES = ("config.json", "model.safetensors", "history.json", STATE_NAME, "tokenizer/tokenizer.json",
                    "tokenizer/tokenizer_config.json")
# which command reads which file (history.json is rebuilt from the trainer state on resume, not read)
READ_BY = {"resume": {"config.json", STATE_NAME, "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"},
           "predict": {"config.json", "model.safetensors", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"}}


@pytest.mark.parametrize("name", CHECKPOINT_FILES + (LEGACY_STATE_NAME,))
def test_a_pickle_planted_in_a_checkpoint_never_runs(checkpoint, tmp_path, name):
    run, marker = tmp_path / "run", tmp_path / "code_ran"
    shutil.copytree(checkpoint / "run", run)
    if name == LEGACY_STATE_NAME: (run / STATE_NAME).unlink()          # an older run: only the pickled state
    (run / name).write_bytes(payload_bytes(marker))
    image = next((checkpoint / "toy" / "images").glob("*.png"))
    errors = {"resume": errors_of(train_cli, ["--out", str(run), "--resume", "--quiet", "--threads", "1"]),
              "predict": errors_of(predict_cli, [str(run), str(image), "a red circle ."])}
    assert not marker.exists(), f"loading {name} ran code"
    for command, err in errors.items():
        assert err.count("\n") <= 1, f"{command}: not one line: {err}"
        if name in READ_BY[command] or (name == LEGACY_STATE_NAME and command == "resume"):
            assert str(run / name) in err or (name.startswith("tokenizer/") and str(run / "tokenizer") in err), (command, err)


def test_a_pickle_as_detector_weights_never_runs(tmp_path, checkpoint):
    marker = tmp_path / "code_ran"
    weights = tmp_path / "detector.pth"; weights.write_bytes(payload_bytes(marker))
    with pytest.raises(ValueError, match="holds more than tensors"): read_state_dict(weights)
    images = checkpoint / "toy" / "images"
    err = errors_of(extract_cli, [str(images), str(tmp_path / "store"), "--weights", str(weights), "--device", "cpu"])
    assert not marker.exists() and str(weights) in err and err.count("\n") == 1, err
    err = errors_of(extract_cli, [str(images), str(tmp_path / "store"), "--weights", str(tmp_path), "--device", "cpu"])
    assert "is a folder" in err and err.count("\n") == 1, err                     # a folder: named, no traceback
    (tmp_path / "cut.pth").write_bytes(payload_bytes(marker)[:50])
    err = errors_of(extract_cli, [str(images), str(tmp_path / "store"), "--weights", str(tmp_path / "cut.pth")])
    assert "cannot be read" in err and str(tmp_path / "cut.pth") in err and err.count("\n") == 1, err
    plain = {"w": torch.ones(2)}; torch.save(plain, tmp_path / "plain.pth")        # a plain state dict still loads
    assert torch.equal(read_state_dict(tmp_path / "plain.pth")["w"], plain["w"])


def test_trainer_state_is_safetensors_and_json(checkpoint):
    "No pickle in a checkpoint: every file is JSON, safetensors or the tokenizer's JSON."
    from safetensors import safe_open
    run = checkpoint / "run"
    with safe_open(str(run / STATE_NAME), "pt") as f:
        state = json.loads(f.metadata()["simplelxmert_trainer_state"])
        weights = state["model"]                                          # the JSON skeleton names the weights' tensors
        assert state["step"] == 3 and weights and all(v["__tensor__"] in set(f.keys()) for v in weights.values())
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl")) and not list(run.rglob("*.bin"))


def test_one_writer_per_run_folder(checkpoint, tmp_path):
    "A second simplelxmert_train on a folder in use is refused in one line, before it reads or writes there."
    from simplelxmert.store import FolderLock
    run = tmp_path / "run"; shutil.copytree(checkpoint / "run", run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with FolderLock(run, "the run folder"):                       # another run holds it
        err = errors_of(train_cli, ["--out", str(run), "--resume", "--quiet", "--threads", "1"])
    assert "another process is writing to the run folder" in err and err.count("\n") == 1, err
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before           # nothing touched
    assert errors_of(train_cli, ["--out", str(run), "--resume", "--quiet", "--threads", "1"]) == ""   # free again: resumes
