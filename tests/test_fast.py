"""Appendix A2's fast paths compute the same functions: dropout's 15-bit masks (the law), packed rows and the heads-first
layout, [CLS]'s W_K/W_V folding, the pooled-only forward (outputs and gradients); the names that moved still import."""
import importlib
import pytest, torch
from simplelxmert.attention import MultiHeadAttention, additive_mask, dropout, split_heads
from simplelxmert.encoders import LXMERT, LXMERTConfig, randomize_weights_, random_batch
from simplelxmert.fast import PackedRows, cls_self_attention, dropout_mask, pooled_only_forward, random_15bit

from conftest import ODD
pytestmark = pytest.mark.usefixtures("one_thread")

# --- names that moved keep importing from where they were --------------------------------------------------------

OLD_ALL = {"attention": ["scaled_dot_product_attention", "additive_mask", "random_15bit", "dropout_mask", "dropout", "Dropout",
                         "split_heads", "merge_heads", "as_additive_mask", "MultiHeadAttention"],
           "encoders": ["LXMERTConfig", "LanguageEmbeddings", "VisualEmbeddings", "AddNorm", "Intermediate", "SelfAttentionSublayer",
                        "CrossAttentionSublayer", "TransformerLayer", "CrossModalityLayer", "Pooler", "Encoders", "LXMERTOutput",
                        "LXMERT", "PackedRows", "cls_self_attention", "randomize_weights_", "random_batch", "compare_with_hf"]}

@pytest.mark.parametrize("module", sorted(OLD_ALL))
def test_every_old_name_still_imports(module):
    "Every name of the module's `__all__` before appendix A2 existed: still there, still in `__all__`, the same object as A2's."
    m = importlib.import_module(f"simplelxmert.{module}")
    fast = importlib.import_module("simplelxmert.fast")
    for name in OLD_ALL[module]:
        assert name in m.__all__, name
        obj = getattr(m, name)
        if hasattr(fast, name): assert obj is getattr(fast, name), name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"): m.nonexistent

# --- dropout's 15-bit masks: the law of inverted dropout ---------------------------------------------------------

def test_dropout_mask_law():
    "Two values, rate t/2^15 overall and per quarter of a draw, neighbours independent, uniform integers, seeded, any shape and dtype."
    torch.manual_seed(0)
    p, t = 0.1, round(0.1 * 2**15)
    mask = dropout_mask((1000, 1000), p)
    assert sorted(mask.unique().tolist()) == pytest.approx([0, 2**15 / (2**15 - t)])
    dropped = (mask == 0).float().view(-1, 4)
    assert dropped.mean().item() == pytest.approx(t / 2**15, abs=1e-3)
    torch.testing.assert_close(dropped.mean(0), torch.full((4,), t / 2**15), atol=3e-3, rtol=0)
    torch.testing.assert_close((dropped[:, :3] * dropped[:, 1:]).mean(0), torch.full((3,), (t / 2**15) ** 2), atol=1e-3, rtol=0)
    assert (dropped[:-1, 3] * dropped[1:, 0]).mean().item() == pytest.approx((t / 2**15) ** 2, abs=1e-3)
    for q in (0.25, 0.5, 0.75): assert (dropout_mask((400, 1000), q) == 0).float().mean().item() == pytest.approx(q, abs=5e-3)
    torch.manual_seed(1); a = dropout_mask((3, 5), 0.3)
    torch.manual_seed(1); assert torch.equal(dropout_mask((3, 5), 0.3), a)
    assert dropout_mask((2, 3), 0.5, dtype=torch.bfloat16).dtype == torch.bfloat16 and dropout_mask((0, 3), 0.5).shape == (0, 3)
    with pytest.raises(ValueError, match="p = 0"): dropout_mask((2, 3), 1e-6)
    r = random_15bit((10_000,))
    assert r.dtype == torch.int16 and int(r.min()) >= 0 and int(r.max()) < 2**15

def test_chapter_02_dropout_is_this_mask():
    x = torch.randn(4, 8)
    torch.manual_seed(2); a = dropout(x, 0.3)
    torch.manual_seed(2); assert torch.equal(a, x * dropout_mask(x.shape, 0.3))

# --- [CLS]'s folded self-attention -------------------------------------------------------------------------------

def test_cls_self_attention_is_row_0_of_the_self_attention():
    torch.manual_seed(0)
    mha = randomize_weights_(MultiHeadAttention(24, 3)).eval()
    x, keep = torch.randn(3, 6, 24), torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    with torch.no_grad():
        full, _ = mha(x, context_mask=keep)
        torch.testing.assert_close(cls_self_attention(mha, x[:, 0], x, additive_mask(keep)), full[:, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(cls_self_attention(mha, x[:, 0], x), mha(x)[0][:, 0], atol=1e-5, rtol=0)   # no mask

def test_pooled_only_forward_is_what_the_model_calls():
    m = randomize_weights_(LXMERT(ODD)).eval()
    b = random_batch(ODD, B=3, T=6, K=5)
    with torch.no_grad(): assert torch.equal(pooled_only_forward(m, **b), m(**b, pooled_only=True).pooled_output)

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


@pytest.mark.parametrize("maps", [True, False], ids=["written-out", "fused"])
def test_heads_first_attention_equals_the_padded_layout(maps):
    "PackedRows.to_heads + attend(merge=False) + from_heads = the [B,H,S,d] attention at every real row, in both paths."
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
