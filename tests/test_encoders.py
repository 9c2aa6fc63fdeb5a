"Parity of simplelxmert's LXMERT with transformers.LxmertModel (outputs, attention maps, gradients, conversion)."
import pytest, torch
import transformers
from simplelxmert.encoders import LXMERT, LXMERTConfig, compare_with_hf, randomize_weights_, random_batch
from simplelxmert.attention import MultiHeadAttention, scaled_dot_product_attention, additive_mask

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Small models run faster on one thread, and the test machine is shared."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

ODD = LXMERTConfig(hidden_size=96, num_attention_heads=3, intermediate_size=200, l_layers=1, r_layers=3, x_layers=2,
                   visual_feat_dim=2048, vocab_size=1000)

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

# --- the pooled-only path (packed real rows, last cross layer for [CLS] alone) -----------------------------------

def _batch_variants(config, B=4, T=7, K=6, seed=3):
    "The same batch with keep-masks, no masks, additive masks, an image without boxes, and left-padded text."
    b = random_batch(config, B, T, K, seed)
    yield "keep-masks", b
    yield "no masks", {**b, "attention_mask": None, "visual_mask": None}
    yield "additive masks", {**b, "attention_mask": additive_mask(b["attention_mask"]), "visual_mask": additive_mask(b["visual_mask"])}
    empty = b["visual_mask"].clone(); empty[1] = 0
    yield "an image without boxes", {**b, "visual_mask": empty}
    left = b["attention_mask"].flip(1)                    # padding first: position 0 is a padded token for some rows
    yield "left padding", {**b, "attention_mask": left, "input_ids": b["input_ids"].flip(1)}

@pytest.mark.parametrize("config", [LXMERTConfig(vocab_size=1000), ODD, LXMERTConfig(hidden_size=64, num_attention_heads=2,
                         intermediate_size=96, l_layers=1, r_layers=1, x_layers=1, visual_feat_dim=32, vocab_size=100)],
                         ids=["seed", "odd", "one-cross-layer"])
def test_pooled_only_equals_full_forward(config):
    m = randomize_weights_(LXMERT(config), seed=1).eval()
    for name, b in _batch_variants(config):
        with torch.no_grad():
            full, fast = m(**b), m(**b, pooled_only=True)
        assert fast.language_output is None and fast.vision_output is None, name
        torch.testing.assert_close(fast.pooled_output, full.pooled_output, atol=1e-5, rtol=0, msg=lambda s: f"{name}: {s}")

def test_pooled_only_gradients_equal_full_path():
    config = LXMERTConfig(vocab_size=1000, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    m = randomize_weights_(LXMERT(config), seed=2).train()
    b = random_batch(config, B=5, T=10, K=8, seed=5)
    w = torch.randn(5, config.hidden_size)
    grads = []
    for pooled_only in (False, True):
        m.zero_grad(set_to_none=True)
        (m(**b, pooled_only=pooled_only).pooled_output * w).sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert not any(n.startswith("encoder.x_layers.1.visn") for n in grads[1])   # the last vision stream is skipped
    for n in grads[0]:
        scale = max(1.0, grads[0][n].abs().max().item())
        torch.testing.assert_close(grads[1][n] / scale, grads[0][n] / scale, atol=1e-5, rtol=0, msg=lambda s: f"{n}: {s}")

def test_pooled_only_trains_with_dropout():
    m = LXMERT(ODD).train()
    b = random_batch(ODD, B=3, T=5, K=4)
    a, c = m(**b, pooled_only=True).pooled_output, m(**b, pooled_only=True).pooled_output
    assert torch.isfinite(a).all() and not torch.equal(a, c)            # dropout is active
    a.sum().backward()
    assert m.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pooled_only"): m(**b, pooled_only=True, output_attentions=True)

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

@pytest.mark.parametrize("maps", [True, False], ids=["written-out", "fused"])
def test_heads_first_attention_equals_the_padded_layout(maps):
    "PackedRows.to_heads + attend(merge=False) + from_heads = the [B,H,S,d] attention at every real row, in both paths."
    from simplelxmert.encoders import PackedRows
    from simplelxmert.attention import split_heads
    torch.manual_seed(0)
    att = MultiHeadAttention(24, 3).eval()
    keep = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    x = torch.randn(3, 6, 24)
    rows = PackedRows(keep, 3, 6)
    q, k, v = rows.to_heads(att.projections(rows.pack(x), "qkv", split=False), 3, 3)   # [H, B, S, d]
    out, _ = att.attend(q, k, v, rows.head_mask, output_attentions=maps, merge=False)
    ref, _ = att.attend(*(split_heads(t, 3) for t in att.projections(x)), additive_mask(keep), output_attentions=maps)
    torch.testing.assert_close(rows.from_heads(out), rows.pack(ref), atol=1e-6, rtol=0)

def test_pooled_only_without_token_types():
    "No token_type_ids: the packed path embeds zeros, as the full forward does."
    config = LXMERTConfig(vocab_size=1000)
    m = randomize_weights_(LXMERT(config)).eval()
    b = random_batch(config, B=4, T=9, K=7, seed=1); b.pop("token_type_ids")
    with torch.no_grad(): torch.testing.assert_close(m(**b, pooled_only=True).pooled_output, m(**b).pooled_output, atol=1e-5, rtol=0)
