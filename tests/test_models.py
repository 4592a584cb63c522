"""Patching, positions, masking, objectives and the Transformer backbone."""

import numpy as np
import pytest
import torch

from msmbench.models.checkpoint import build_model, load_checkpoint, model_spec, save_checkpoint
from msmbench.models.objectives import (MaskedSpectrogramModel, masked_mse, objective_config, paper_parameter_count,
                                        random_masking)
from msmbench.models.patching import grid_shape, patchify, sincos_2d, tokens_to_frames, unpatchify
from msmbench.models.registry import backbone_config, backbone_names, build_backbone


def test_patchify_layout_and_inverse():
    spec = torch.arange(200 * 80, dtype=torch.float32).reshape(1, 200, 80)
    p = patchify(spec)
    assert p.shape == (1, 250, 64)
    # token 0 = frames 0-3, bins 0-15; token 1 = frames 0-3, bins 16-31 (time-major tokens)
    assert torch.equal(p[0, 0], spec[0, 0:4, 0:16].reshape(-1))
    assert torch.equal(p[0, 1], spec[0, 0:4, 16:32].reshape(-1))
    assert torch.equal(p[0, 5], spec[0, 4:8, 0:16].reshape(-1))
    assert torch.equal(unpatchify(p, 80), spec)
    with pytest.raises(ValueError, match="multiple"):
        grid_shape(201, 80)


def test_sincos_positions():
    pos = sincos_2d(64, (50, 5))
    assert pos.shape == (251, 64)
    assert torch.all(pos[0] == 0)  # cls position is zero
    # first half encodes frequency, second half time: tokens 1 and 6 share the frequency patch
    assert torch.allclose(pos[1, :32], pos[6, :32]) and not torch.allclose(pos[1, 32:], pos[6, 32:])
    assert torch.allclose(pos[1, 32:], pos[2, 32:]) and not torch.allclose(pos[1, :32], pos[2, :32])
    assert len({tuple(r.tolist()) for r in pos[1:]}) == 250  # all distinct


def test_token_orders():
    B, D = 1, 2
    tokens = torch.arange(250 * D, dtype=torch.float32).reshape(B, 250, D)  # token i has values 2i, 2i+1
    correct = tokens_to_frames(tokens, 5, "frequency_major")
    assert correct.shape == (1, 50, 10)
    assert correct[0, 1].tolist() == tokens[0, 5:10].reshape(-1).tolist()  # time step 1 = tokens 5..9
    official = tokens_to_frames(tokens, 5, "official")
    assert official[0, 1].tolist() == tokens[0, [1, 51, 101, 151, 201]].reshape(-1).tolist()
    # both orders pool to the same multiset of values, but to different vectors
    assert not torch.allclose(correct.mean(1), official.mean(1))
    with pytest.raises(ValueError, match="token order"):
        tokens_to_frames(tokens, 5, "nope")


@pytest.mark.parametrize("ratio,expected_masked", [(0.5, 125), (0.8, 200), (0.75, 188)])
def test_random_masking_counts(ratio, expected_masked):
    mask, ids_keep = random_masking(4, 250, ratio, "cpu", torch.Generator().manual_seed(0))
    assert torch.all(mask.sum(1) == expected_masked)  # int(L * (1 - ratio)) kept, as released
    assert torch.all(ids_keep[:, 1:] > ids_keep[:, :-1])  # kept indices ascend
    assert torch.all(mask.gather(1, ids_keep) == 0)
    m2, _ = random_masking(4, 250, ratio, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(mask, m2)


def test_masked_mse():
    pred, target = torch.zeros(1, 4, 2), torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 9) / 2)
    assert masked_mse(pred, target, None).item() == pytest.approx((1 + 4 + 9 + 0) / 4)


def test_objective_presets():
    official = objective_config("ssast-official")
    assert official.mask_ratio == 0.5 and official.loss_on == "all" and not official.mask_token_has_position
    intended = objective_config("ssast", mask_ratio=0.7)
    assert intended.loss_on == "masked" and intended.mask_ratio == 0.7
    assert objective_config("mae").mask_ratio == 0.8
    with pytest.raises(ValueError, match="mask_ratio"):
        objective_config("ssast", mask_ratio=1.5)
    with pytest.raises(KeyError, match="presets"):
        objective_config("byol")


def _model(objective="ssast-official", backbone="transformer"):
    torch.manual_seed(0)
    return MaskedSpectrogramModel(backbone, backbone_config(backbone, "cpu"), objective_config(objective))


def test_ssast_official_loss_covers_all_patches():
    model = _model("ssast-official")
    spec = torch.randn(2, 200, 80)
    latent, mask, ids_keep = model.forward_encoder(spec, torch.Generator().manual_seed(1))
    assert latent.shape == (2, 251, 64)
    pred = model.forward_decoder(latent, ids_keep)
    assert pred.shape == (2, 250, 64)
    loss = model.forward_loss(spec, pred, mask)
    assert loss.item() == pytest.approx(((pred - patchify(spec)) ** 2).mean().item(), rel=1e-5)


def test_ssast_official_mask_tokens_have_no_position():
    """Released quirk: masked tokens are the bare mask token, identical at every position."""
    model = _model("ssast-official")
    captured = {}
    model.encoder.register_forward_hook(lambda m, i, o: captured.setdefault("x", i[0]))
    _, mask, _ = model.forward_encoder(torch.randn(1, 200, 80), torch.Generator().manual_seed(2))
    masked_tokens = captured["x"][0, 1:][mask[0].bool()]
    assert torch.allclose(masked_tokens, masked_tokens[0].expand_as(masked_tokens))
    model = _model("ssast")
    captured.clear()
    model.encoder.register_forward_hook(lambda m, i, o: captured.setdefault("x", i[0]))
    _, mask, _ = model.forward_encoder(torch.randn(1, 200, 80), torch.Generator().manual_seed(2))
    masked_tokens = captured["x"][0, 1:][mask[0].bool()]
    assert not torch.allclose(masked_tokens, masked_tokens[0].expand_as(masked_tokens))


def test_ssast_masked_loss_ignores_visible_patches():
    model = _model("ssast")
    spec = torch.randn(1, 200, 80)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    latent, mask, ids = model.forward_encoder(spec, gen())
    pred = model.forward_decoder(latent, ids)
    pred_changed = pred.clone()
    pred_changed[0, ~mask[0].bool()] += 100.0  # visible patches' predictions do not count
    assert model.forward_loss(spec, pred, mask).item() == pytest.approx(model.forward_loss(spec, pred_changed, mask).item())


def test_mae_encoder_sees_only_visible_patches():
    model = _model("mae")
    latent, mask, ids_keep = model.forward_encoder(torch.randn(2, 200, 80), torch.Generator().manual_seed(0))
    assert latent.shape == (2, 1 + 50, 64)  # cls + 20% of 250
    assert model.forward_decoder(latent, ids_keep).shape == (2, 250, 64)
    loss, _, _ = model(torch.randn(2, 200, 80))
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.endswith("mask_token"))


@pytest.mark.parametrize("size,millions", [("tiny", 5.4), ("small", 21.5), ("base", 85.8)])
def test_transformer_parameter_counts(size, millions):
    with torch.device("meta"):
        model = MaskedSpectrogramModel("transformer", backbone_config("transformer", size), objective_config("ssast-official"))
    assert paper_parameter_count(model) / 1e6 == pytest.approx(millions, rel=0.02)


def test_sdpa_matches_explicit_attention():
    torch.manual_seed(0)
    fast = build_backbone("transformer", backbone_config("transformer", "cpu", attention="sdpa"))
    ref = build_backbone("transformer", backbone_config("transformer", "cpu", attention="explicit"))
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 251, 64, requires_grad=True)
    y_fast, y_ref = fast(x), ref(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    g_fast = torch.autograd.grad(y_fast.square().sum(), x)[0]
    g_ref = torch.autograd.grad(y_ref.square().sum(), x)[0]
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("option, autograd_value", [("qkv_grad", "packed"), ("mlp_grad", "autograd")])
def test_hand_written_gradients_match_autograd(option, autograd_value):
    """qkv_grad="split" (linear_chunks' backward) and "packed" (autograd through nn.Linear), mlp_grad="fused"
    (linear_gelu's backward) and "autograd" are one model: same outputs, same gradients for every parameter."""
    torch.manual_seed(0)
    fast = build_backbone("transformer", backbone_config("transformer", "cpu"))
    ref = build_backbone("transformer", backbone_config("transformer", "cpu", **{option: autograd_value}))
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 37, 64)
    y_fast, y_ref = fast(x), ref(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-6, atol=1e-6)
    y_fast.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match=option):
        build_backbone("transformer", backbone_config("transformer", "cpu", **{option: "both"}))


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_folded_key_and_value_biases_are_exact(attention):
    """kv_bias="folded" (b_k left out, b_v moved through attention into proj's bias) is the released
    placement ("direct") in float64: same output, same gradient for every parameter, to rounding, with
    trained (nonzero) biases. b_k gets exact zeros, where autograd's gradient for it is zero to rounding: the
    output cannot depend on it."""
    torch.manual_seed(0)
    folded = build_backbone("transformer", backbone_config("transformer", "cpu", attention=attention)).double()
    direct = build_backbone("transformer", backbone_config("transformer", "cpu", attention=attention,
                                                           kv_bias="direct")).double()
    with torch.no_grad():
        for p in folded.parameters():
            p.add_(0.1 * torch.randn_like(p))
    direct.load_state_dict(folded.state_dict())
    x = torch.randn(2, 37, 64, dtype=torch.float64)
    y_folded, y_direct = folded(x), direct(x)
    torch.testing.assert_close(y_folded, y_direct, rtol=1e-12, atol=1e-12)
    y_folded.square().sum().backward()
    y_direct.square().sum().backward()
    D = folded.dim
    for block_folded, block_direct in zip(folded.blocks, direct.blocks):
        g_folded, g_direct = block_folded.attn.qkv.bias.grad, block_direct.attn.qkv.bias.grad
        assert torch.equal(g_folded[D:2 * D], torch.zeros(D, dtype=torch.float64))
        assert g_direct[D:2 * D].abs().max() < 1e-12 * g_direct.abs().max()
        assert g_direct[2 * D:].abs().max() > 1e-3  # the value bias does get a gradient, through proj
    for (name, p), q in zip(folded.named_parameters(), direct.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-11, msg=name)
    with pytest.raises(ValueError, match="kv_bias"):
        build_backbone("transformer", backbone_config("transformer", "cpu", kv_bias="none"))


def test_autocast_residual_stream():
    """residual="autocast" carries the stream in the autocast dtype: identical to float32 without autocast,
    within bf16 rounding of it under autocast, and its blocks' outputs really are bf16."""
    torch.manual_seed(0)
    ref = build_backbone("transformer", backbone_config("transformer", "cpu"))
    low = build_backbone("transformer", backbone_config("transformer", "cpu", residual="autocast"))
    low.load_state_dict(ref.state_dict())
    x = torch.randn(2, 251, 64)
    torch.testing.assert_close(low(x), ref(x), rtol=0, atol=0)
    seen = []
    low.blocks[-1].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref, y_low = ref(x), low(x)
    assert seen == [torch.bfloat16]
    err = (y_low.float() - y_ref.float()).abs().mean() / y_ref.float().abs().mean()
    assert 0 < err < 0.02  # different rounding, same function
    with pytest.raises(ValueError, match="residual"):
        build_backbone("transformer", backbone_config("transformer", "cpu", residual="fp8"))


def test_autocast_residual_stream_is_traced_by_torch_compile():
    """Under torch.compile the autocast check is traced, not frozen: compiled == eager, with and without autocast."""
    torch.manual_seed(0)
    model = build_backbone("transformer", backbone_config("transformer", "cpu", depth=2, residual="autocast"))
    compiled = torch.compile(model, backend="aot_eager")  # dynamo's tracing is what is tested, not codegen
    x = torch.randn(2, 37, 64)
    torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_eager, y_compiled = model(x), compiled(x)
    assert y_compiled.dtype == y_eager.dtype
    torch.testing.assert_close(y_compiled.float(), y_eager.float(), rtol=2e-2, atol=2e-2)


def test_registry_errors():
    assert "transformer" in backbone_names()
    with pytest.raises(KeyError, match="sizes"):
        backbone_config("transformer", "huge")
    with pytest.raises(KeyError, match="allowed"):
        backbone_config("transformer", "cpu", width=3)
    with pytest.raises(KeyError, match="registered"):
        backbone_config("lstm", "cpu")


def test_checkpoint_round_trip(tmp_path):
    spec = model_spec("transformer", "cpu")
    torch.manual_seed(0)
    model = build_model(spec)
    save_checkpoint(tmp_path, model, spec)
    loaded, record = load_checkpoint(tmp_path)
    assert record["spec"] == spec and record["parameters"] == paper_parameter_count(model)
    x = torch.randn(1, 200, 80)
    model.eval()
    torch.testing.assert_close(loaded.forward_features(x), model.forward_features(x))


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a msmbench checkpoint"):
        load_checkpoint(tmp_path)
    spec = model_spec("transformer", "cpu")
    save_checkpoint(tmp_path, build_model(spec), spec)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(tmp_path)


def test_frame_embeddings_shape():
    model = _model().eval()
    emb = model.frame_embeddings(torch.randn(2, 200, 80))
    assert emb.shape == (2, 50, 5 * 64)
    assert np.isfinite(emb.detach().numpy()).all()
