"""Mamba backends: selection, pure scan vs the Mamba equations, mamba_ssm vs pure (CUDA only), encoder blocks."""

import pytest
import torch
import torch.nn.functional as F

from nfjobs.models.mamba import BiMamba, SequenceEncoder, make_mamba, mamba_ssm_available, resolve_backend

DIM = 8


def _reference_mamba(layer, x):
    """The Mamba layer written out from mamba_ssm's parameter names and `selective_scan_ref` (sequential scan)."""
    L = x.shape[1]
    xz = layer.in_proj(x)
    u, z = xz.chunk(2, dim=-1)
    u = F.silu(layer.conv1d(u.transpose(1, 2))[..., :L].transpose(1, 2))  # (B, L, E)
    dt_rank = layer.dt_proj.in_features
    d_state = layer.A_log.shape[1]
    dt, b, c = layer.x_proj(u).split([dt_rank, d_state, d_state], dim=-1)
    delta = F.softplus(layer.dt_proj(dt))  # (B, L, E)
    a = -torch.exp(layer.A_log)  # (E, N)
    h = torch.zeros(x.shape[0], u.shape[-1], d_state)
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * a) * h + delta[:, t, :, None] * b[:, t, None, :] * u[:, t, :, None]
        ys.append((h * c[:, t, None, :]).sum(-1) + layer.D * u[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return layer.out_proj(y)


def test_auto_on_cpu_is_pure_and_explicit_choices():
    assert resolve_backend("auto", "cpu") == "pure"
    assert resolve_backend("pure", "cpu") == "pure"
    assert resolve_backend("transformer", "cuda") == "transformer"
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        resolve_backend("mamba_ssm", "cpu")
    with pytest.raises(ValueError, match="valid"):
        resolve_backend("cuda", "cpu")


@pytest.mark.parametrize("length", [7, 16])  # 7: the parallel scan pads to a power of two
def test_pure_scan_computes_the_mamba_equations(length):
    torch.manual_seed(0)
    layer = make_mamba("pure", DIM, d_state=4)
    x = torch.randn(2, length, DIM)
    torch.testing.assert_close(layer(x), _reference_mamba(layer, x), rtol=1e-4, atol=1e-5)


def test_pure_parameters_have_mamba_ssm_names():
    names = {n for n, _ in make_mamba("pure", DIM).named_parameters()}
    assert names == {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                     "dt_proj.bias", "A_log", "D", "out_proj.weight"}


@pytest.mark.skipif(not (mamba_ssm_available() and torch.cuda.is_available()),
                    reason="mamba_ssm vs pure needs mamba_ssm (the `cuda` extra) and a CUDA device; "
                           "here mamba_ssm " + ("imports" if mamba_ssm_available() else "does not import")
                           + " and CUDA is " + ("available" if torch.cuda.is_available() else "absent"))
def test_mamba_ssm_and_pure_compute_the_same_function():
    torch.manual_seed(0)
    fast = make_mamba("mamba_ssm", 64).cuda()
    pure = make_mamba("pure", 64).cuda()
    pure.load_state_dict(fast.state_dict())
    x = torch.randn(2, 100, 64, device="cuda")
    torch.testing.assert_close(fast(x), pure(x), rtol=1e-3, atol=1e-3)


def test_bimamba_is_reversal_symmetric_with_tied_directions():
    torch.manual_seed(0)
    bi = BiMamba("pure", DIM, d_state=4)
    bi.rev.load_state_dict(bi.fwd.state_dict())
    x = torch.randn(2, 9, DIM)
    torch.testing.assert_close(bi(x.flip(1)), bi(x).flip(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["pure", "transformer"])
def test_encoder_final_norm_option(backend):
    torch.manual_seed(0)
    x = torch.randn(2, 6, DIM)
    normed = SequenceEncoder(backend, DIM, depth=2, ff_dim=16, final_norm=True, d_state=4, heads=2)
    raw = SequenceEncoder(backend, DIM, depth=2, ff_dim=16, final_norm=False, d_state=4, heads=2)
    raw.load_state_dict(normed.state_dict(), strict=False)
    out_n, out_r = normed(x), raw(x)
    assert out_n.shape == out_r.shape == x.shape and normed.backend == backend
    torch.testing.assert_close(out_n.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    assert not torch.allclose(out_n, out_r)
