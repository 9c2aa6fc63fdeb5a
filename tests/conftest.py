"Fixtures and helpers shared by several test modules."
import contextlib, io, socket
import numpy as np
import pytest
import torch

from simplelxmert.encoders import LXMERTConfig
from simplelxmert.features import FeatureStore, generate_shapes_world

ODD = LXMERTConfig(hidden_size=96, num_attention_heads=3, intermediate_size=200, l_layers=1, r_layers=3, x_layers=2,
                   visual_feat_dim=2048, vocab_size=1000)   # heads of width 32, unequal stacks, paper-sized regions


@pytest.fixture(scope="module")
def one_thread():
    "Small models run faster on one thread, and the test machine is shared."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "A ShapesWorld of 40 scenes (seed 3): (folder, scenes)."
    out = tmp_path_factory.mktemp("world")
    return out, generate_shapes_world(out, 40, seed=3)


def stores_equal(a: FeatureStore, b: FeatureStore):
    "Two stores hold the same entries, settings and records."
    assert sorted(a.ids) == sorted(b.ids) and (a.k, a.dim, a.meta) == (b.k, b.dim, b.meta)
    for i in a.ids: assert a[i] == b[i], i


def toy_checkpoint(root):
    "Toy data (12 images, `root/toy`) and a random-weight 1/1/2-layer checkpoint with feature normalization (`root/ckpt`)."
    from simplelxmert.dataset import make_toy_data
    from simplelxmert.training import ITMModel
    toy = make_toy_data(root/"toy", n_images=12, seed=3)
    store, tok = toy.store(), toy.tokenizer()
    cfg = LXMERTConfig(vocab_size=len(tok), hidden_size=32, num_attention_heads=4, intermediate_size=64,
                       l_layers=1, r_layers=1, x_layers=2, visual_feat_dim=store.dim)
    norm = {"mean": np.linspace(-0.5, 0.5, store.dim).tolist(), "std": np.linspace(0.5, 2, store.dim).tolist()}
    torch.manual_seed(0)
    ITMModel(cfg, feature_norm=norm).save_pretrained(root/"ckpt", tokenizer=tok, extra={"feature_store_meta": store.meta, "max_len": 32})
    return toy


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    "Toy data, a random-weight checkpoint (`toy_checkpoint`) and its `Predictor`: (toy, store, predictor, root)."
    from simplelxmert.inference import Predictor
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("inference")
    toy = toy_checkpoint(root)
    return toy, toy.store(), Predictor.from_pretrained(root/"ckpt", device="cpu"), root


def refusal(cli, argv, *names, code=2) -> str:
    "The one line `cli(argv)` refuses with: exit status `code`, one line on stderr, naming each of `names`."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as e: cli(argv)
    status = e.value.code if isinstance(e.value.code, int) else (print(e.value.code, file=err) or 1)
    text = err.getvalue()
    assert status == code and text.count("\n") == 1 and "Traceback" not in text, (status, text)
    for n in names: assert str(n) in text, (n, text)
    return text


def free_port() -> int:
    "A free TCP port on this machine, for a process group's rendezvous."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]
