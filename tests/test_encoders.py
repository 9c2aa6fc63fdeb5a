"Parity of simplelxmert's LXMERT with transformers.LxmertModel (outputs, attention maps, gradients, conversion)."
import pytest, torch
import transformers
from simplelxmert.encoders import LXMERT, LXMERTConfig, compare_with_hf, randomize_weights_, random_batch
from simplelxmert.attention import MultiHeadAttention, scaled_dot_product_attention, additive_mask

from conftest import ODD
pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.mark.parametrize("config,shape", [(LXMERTConfig(), (3, 9, 7)), (ODD, (3, 5, 4)), (LXMERTConfig.paper(), (2, 6, 4))],
                         ids=["seed", "odd", "paper"])
def test_parity_with_hf(config, shape):
    B, T, K = shape
    diffs = compare_with_hf(config, B=B, T=T, K=K, seed=2)   # raises on any difference above 1e-5 (grads: 1e-4 relative)
    assert set(diffs) >= {"language_output", "vision_output", "pooled_output", "language_attentions",
                          "vision_attentions", "cross_attentions", "gradients (relative)"}

def test_parity_detects_a_wrong_model():
    "The parity check is not vacuous: break one weight and it fails."
    class Broken(LXMERT):
        @classmethod
        def from_hf(cls, hf_model):
            m = super().from_hf(hf_model)
            with torch.no_grad(): m.encoder.visn_fc.box_layer_norm.bias.add_(0.01)
            return m
    import simplelxmert.encoders as enc
    orig = enc.LXMERT
    enc.LXMERT = Broken
    try:
        with pytest.raises(AssertionError, match="max difference"):
            compare_with_hf(ODD, B=2, T=5, K=4)
    finally: enc.LXMERT = orig

def test_round_trip_and_parameter_count():
    hf = randomize_weights_(transformers.LxmertModel(ODD.to_hf()), seed=5)
    back = LXMERT.from_hf(hf).to_hf()
    sd, sd_back = hf.state_dict(), back.state_dict()
    assert sd.keys() == sd_back.keys()
    assert all(torch.equal(sd[k], sd_back[k]) for k in sd)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(LXMERT(LXMERTConfig())) == n(transformers.LxmertModel(LXMERTConfig().to_hf()))

def test_no_visual_mask_equals_all_ones():
    m = randomize_weights_(LXMERT(ODD)).eval()
    b = random_batch(ODD, B=2, T=5, K=4)
    with torch.no_grad():
        a = m(**{**b, "visual_mask": None})
        c = m(**{**b, "visual_mask": torch.ones(2, 4, dtype=torch.long)})
    torch.testing.assert_close(a.vision_output, c.vision_output, atol=1e-6, rtol=0)

def test_split_equals_forward_and_padding_is_invisible():
    m = randomize_weights_(LXMERT(ODD)).eval()
    b = random_batch(ODD, B=3, T=6, K=5)
    with torch.no_grad():
        out = m(**b)
        split = m.cross(m.encode_language(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                        m.encode_vision(b["visual_feats"], b["visual_pos"], b["visual_mask"]), b["attention_mask"], b["visual_mask"])
        # second example has 3 real tokens and 3 real boxes: run it alone, unpadded
        t, k = int(b["attention_mask"][1].sum()), int(b["visual_mask"][1].sum())
        alone = m(b["input_ids"][1:2, :t], None, b["token_type_ids"][1:2, :t], b["visual_feats"][1:2, :k], b["visual_pos"][1:2, :k])
    torch.testing.assert_close(split.pooled_output, out.pooled_output, atol=1e-6, rtol=0)
    torch.testing.assert_close(alone.pooled_output[0], out.pooled_output[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone.vision_output[0], out.vision_output[1, :k], atol=1e-5, rtol=0)

def test_fused_attention_equals_written_out():
    torch.manual_seed(0)
    att = MultiHeadAttention(32, 4, ctx_dim=24).eval()
    x, ctx = torch.randn(3, 6, 32), torch.randn(3, 5, 24)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    with torch.no_grad():
        a, w = att(x, ctx, keep, output_attentions=True)
        b, none = att(x, ctx, keep)
    assert none is None and w.shape == (3, 4, 6, 5)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert w[1, :, :, 2:].abs().max() == 0                       # padded keys get no weight
    torch.testing.assert_close(w[2], torch.full((4, 6, 5), 0.2))  # empty key set: uniform, as in HF

def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="multiple"): LXMERTConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match="unknown keys"): LXMERTConfig.from_dict({"hidden": 3})
    with pytest.raises(ValueError, match="visual_feats"): LXMERT(ODD)(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"): additive_mask(torch.ones(3))

def test_projections_are_the_three_linear_layers():
    torch.manual_seed(0)
    att = MultiHeadAttention(32, 4, ctx_dim=24)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 3, 24)
    q, = att.projections(x, "q")
    k, v = att.projections(ctx, "kv")
    for t, ref in ((q, att.query(x)), (k, att.key(ctx)), (v, att.value(ctx))): torch.testing.assert_close(t, ref, atol=1e-6, rtol=0)
    self_att = MultiHeadAttention(32, 4)
    for t, lin in zip(self_att.projections(x), (self_att.query, self_att.key, self_att.value)):
        torch.testing.assert_close(t, lin(x), atol=1e-6, rtol=0)

def test_attention_dropout_keeps_the_expectation():
    torch.manual_seed(0)
    S, p = 4000, 0.1
    dropped = scaled_dot_product_attention(torch.zeros(1, 1, 8), torch.zeros(1, S, 8), torch.eye(S)[None], dropout_p=p)[0, 0]
    assert abs((dropped == 0).float().mean().item() - p) < 0.02
    assert abs(dropped.mean().item() * S - 1) < 0.03
    att = MultiHeadAttention(16, 2, dropout=0.5).train()                 # training on a CPU: written out, maps not returned
    x = torch.randn(2, 5, 16)
    out, w = att(x)
    assert w is None and not torch.equal(out, att(x)[0])

def test_dropout_written_out():
    "Chapter 02's Dropout: nn.Dropout's law with p rounded to a multiple of 2^-15, gradient through the same mask, nothing drawn when off."
    from simplelxmert.attention import Dropout
    torch.manual_seed(0)
    x = torch.randn(300, 400, requires_grad=True)
    y = Dropout(0.2)(x)
    kept = y != 0
    p = round(0.2 * 2**15) / 2**15                                   # 0.20001: the probability actually used
    assert abs(1 - kept.float().mean().item() - p) < 0.01
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))          # the expectation kept exactly
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    state = torch.get_rng_state()
    assert Dropout(0.0)(x) is x and Dropout(0.5).eval()(x) is x
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match=r"\[0, 1\)"): Dropout(1.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in LXMERT(ODD).modules())   # the model uses ours everywhere

# --- LXMERTConfig refuses sizes no model can have (a checkpoint's config.json may say anything) ---------------------

@pytest.mark.parametrize("field,value", [("num_attention_heads", 0), ("hidden_size", -8), ("hidden_size", 10**6),
                         ("vocab_size", 10**8), ("l_layers", 65), ("x_layers", -1), ("max_position_embeddings", 10**6),
                         ("intermediate_size", 0), ("visual_feat_dim", 2.5), ("type_vocab_size", True),
                         ("num_attention_heads", "4"), ("hidden_dropout_prob", 1.0), ("attention_probs_dropout_prob", -0.1),
                         ("layer_norm_eps", 0.0), ("initializer_range", float("nan"))])
def test_config_refuses_impossible_sizes(field, value):
    "One line naming the field, from the constructor and from a config.json's dict alike."
    for make in (lambda: LXMERTConfig(**{field: value}), lambda: LXMERTConfig.from_dict({**LXMERTConfig().to_dict(), field: value})):
        with pytest.raises(ValueError, match=f"LXMERTConfig.{field} must be") as e: make()
        assert "\n" not in str(e.value)

def test_config_accepts_the_edges():
    "The bounds are inclusive, layer counts may be 0, and numpy integers (e.g. a feature store's dim) are whole numbers."
    import numpy as np
    LXMERTConfig(vocab_size=10_000_000, hidden_size=16_384, num_attention_heads=1_024, l_layers=64, r_layers=0, x_layers=0,
                 max_position_embeddings=65_536, visual_feat_dim=np.int64(2048), hidden_dropout_prob=0, initializer_range=0)
