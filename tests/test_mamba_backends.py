"""Mamba backends: selection (a mamba_ssm without its kernel included), pure and triton scans vs the Mamba
equations (triton on CPU through Triton's interpreter), mamba_ssm vs pure vs triton (CUDA only), encoder blocks."""

import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from nfjobs.models import mamba
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
    with pytest.raises(RuntimeError, match="triton scan needs a CUDA device"):
        resolve_backend("triton", "cpu")
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


@pytest.mark.skipif(not (mamba_ssm_available() and torch.cuda.is_available()),
                    reason="needs mamba_ssm with its kernel and a CUDA device")
def test_triton_matches_mamba_ssm_forward_and_backward_in_fp32_and_bf16():
    torch.manual_seed(0)
    ref = make_mamba("mamba_ssm", 256).cuda()
    fast = make_mamba("triton", 256).cuda()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, 512, 256, device="cuda")
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-3, atol=1e-3)
    for name, tol in (("fp32", 1e-3), ("bf16", 3e-2)):
        grads = []
        for layer in (ref, fast):
            layer.zero_grad()
            with torch.autocast("cuda", torch.bfloat16, enabled=name == "bf16"):
                y = layer(x)
            (y.float().square().mean()).backward()
            grads.append((y.float(), {k: p.grad.clone() for k, p in layer.named_parameters()}))
        (y_ref, g_ref), (y_fast, g_fast) = grads
        torch.testing.assert_close(y_fast, y_ref, rtol=tol, atol=tol)
        for k in g_ref:
            scale = g_ref[k].abs().max().clamp_min(1e-6)
            assert (g_fast[k] - g_ref[k]).abs().max() / scale < 5 * tol, (name, k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the triton backend on a GPU needs CUDA")
def test_triton_and_pure_compute_the_same_function_on_cuda():
    torch.manual_seed(0)
    pure = make_mamba("pure", 64).cuda()
    fast = make_mamba("triton", 64).cuda()
    fast.load_state_dict(pure.state_dict())
    x = torch.randn(2, 100, 64, device="cuda", requires_grad=True)
    torch.testing.assert_close(fast(x), pure(x), rtol=1e-3, atol=1e-3)
    (gx_fast,) = torch.autograd.grad(fast(x).square().sum(), x)
    (gx_pure,) = torch.autograd.grad(pure(x).square().sum(), x)
    torch.testing.assert_close(gx_fast, gx_pure, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(torch.compile(fast)(x), pure(x), rtol=1e-3, atol=1e-3)  # the op compiles whole


FAKE_MAMBA = """
import torch
from torch import nn

class Mamba(nn.Module):
    def __init__(self, d_model, d_state=16, d_conv=4, expand=2):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        {forward}
"""


@pytest.fixture
def fake_mamba_ssm(tmp_path, monkeypatch):
    """Installs a small `mamba_ssm` package (and optionally a `selective_scan_cuda` module) into tmp_path."""

    def install(forward: str = "return self.proj(x)", kernel: bool = False):
        pkg = tmp_path / "mamba_ssm"
        pkg.mkdir()
        (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_MAMBA).format(forward=forward))
        if kernel:
            (tmp_path / "selective_scan_cuda.py").write_text("")
        else:  # None in sys.modules makes the import fail, even where a real kernel is installed
            monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
        mamba.backend_problem.cache_clear()

    for name in ("mamba_ssm", "selective_scan_cuda"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield install
    for name in ("mamba_ssm", "selective_scan_cuda"):  # the fakes; monkeypatch then restores any real ones
        sys.modules.pop(name, None)
    mamba.backend_problem.cache_clear()


def test_mamba_ssm_without_its_kernel_is_not_available(fake_mamba_ssm):
    fake_mamba_ssm(kernel=False)
    assert not mamba_ssm_available("cpu")
    assert "selective-scan CUDA kernel does not" in mamba.backend_problem("mamba_ssm", "cpu")
    assert resolve_backend("auto", "cpu") == "pure"
    with pytest.raises(RuntimeError, match="install-mamba-ssm.sh"):
        resolve_backend("mamba_ssm", "cpu")


def test_mamba_ssm_whose_forward_fails_is_not_available(fake_mamba_ssm):
    fake_mamba_ssm(forward='raise RuntimeError("no kernel image is available for execution on the device")',
                   kernel=True)
    assert "no kernel image" in mamba.backend_problem("mamba_ssm", "cpu")
    assert resolve_backend("auto", "cpu") == "pure"


def test_mamba_ssm_that_runs_is_chosen_by_auto_and_recorded(fake_mamba_ssm):
    fake_mamba_ssm(kernel=True)
    assert mamba_ssm_available("cpu") and resolve_backend("auto", "cpu") == "mamba_ssm"
    encoder = SequenceEncoder(resolve_backend("auto", "cpu"), DIM, depth=1, ff_dim=16)
    assert encoder.backend == "mamba_ssm" and encoder(torch.randn(2, 5, DIM)).shape == (2, 5, DIM)


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="runs in a subprocess with TRITON_INTERPRET=1 (Triton's "
                                 "CPU interpreter must be on before triton is imported): see test_triton_on_cpu")


@pytest.mark.slow
def test_triton_on_cpu():
    """Runs this file's `interpreted` tests in a fresh interpreter with Triton's CPU interpreter on."""
    pytest.importorskip("triton")
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "interp"],
                          env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and re.search(r"\b4 passed", proc.stdout), proc.stdout[-3000:] + proc.stderr[-2000:]


def _sequential_scan(u, delta, a, b, c, d):
    h = torch.zeros(u.shape[0], u.shape[2], a.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * a) * h + (delta[:, t] * u[:, t])[..., None] * b[:, t, None, :]
        ys.append((h * c[:, t, None, :]).sum(-1) + d * u[:, t])
    return torch.stack(ys, dim=1)


@interpreted
@pytest.mark.parametrize(("length", "chunks"), [(7, 1), (37, 2), (70, 3)])  # segments of 16: partial ones too
def test_interp_triton_scan_and_its_gradients_match_the_sequential_scan(length, chunks):
    from nfjobs.models import scan_triton

    torch.manual_seed(0)
    bsz, e, n = 2, 40, 4  # 40 channels: a partial block of 32
    args = [torch.randn(bsz, length, e), torch.rand(bsz, length, e) * 0.5, -torch.rand(e, n) * 2,
            torch.randn(bsz, length, n), torch.randn(bsz, length, n), torch.randn(e)]
    args = [x.requires_grad_() for x in args]
    assert scan_triton.plan(bsz, length, e, chunks)[0] == chunks
    y = scan_triton.selective_scan(*args, chunks=chunks)
    y_ref = _sequential_scan(*args)
    torch.testing.assert_close(y, y_ref)
    with torch.no_grad():  # the op without checkpoints
        torch.testing.assert_close(scan_triton.selective_scan(*args, chunks=chunks), y_ref)
    dy = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, args, dy), torch.autograd.grad(y_ref, args, dy), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_scan_plan_adds_chunks_only_where_batch_and_channels_leave_programs_idle():
    pytest.importorskip("triton")
    from nfjobs.models.scan_triton import SEG, TARGET_PROGRAMS, plan

    assert plan(256, 512, 512) == (1, 512)  # 4,096 programs already
    chunks, length = plan(16, 512, 512)
    assert chunks > 1 and 16 * 16 * chunks <= TARGET_PROGRAMS and length % SEG == 0 and chunks * length >= 512
    assert plan(1, 40, 512)[0] == 1  # too short to cut
    assert plan(2, 70, 40, chunks=3) == (3, 32)


@interpreted
def test_interp_triton_layer_computes_the_mamba_equations_and_loads_pure_weights():
    torch.manual_seed(0)
    pure = make_mamba("pure", DIM, d_state=4)
    fast = make_mamba("triton", DIM, d_state=4)
    fast.load_state_dict(pure.state_dict())
    x = torch.randn(2, 9, DIM)
    torch.testing.assert_close(fast(x), _reference_mamba(pure, x), rtol=1e-4, atol=1e-5)
    assert resolve_backend("triton", "cpu") == "triton"  # the interpreter counts as a device it runs on
    assert resolve_backend("auto", "cpu") == "pure"  # but auto never picks it on CPU


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


GPU_SWEEP = """
[[group]]
kind = "train"
model = "{model}"
data = {{ name = "builtin", builtin_n = 16 }}
{family}.mamba_backend = "{backend}"
[group.slurm]
gpus_per_node = {gpus}
"""


@pytest.mark.parametrize(("model", "backend", "gpus", "kernel", "warns"), [
    ("ginr", "auto", 1, False, "mamba_backend=auto"),
    ("jepa", "pure", 1, True, "mamba_backend=pure"),
    ("ginr", "auto", 1, True, None),
    ("ginr", "auto", 0, False, None),
    ("jepa", "transformer", 1, False, None),
])
def test_launch_warns_when_gpu_cells_run_mamba_on_a_slow_path(sweep_file, fake_mamba_ssm, tmp_path, capsys,
                                                              model, backend, gpus, kernel, warns):
    import launch

    fake_mamba_ssm(kernel=kernel)
    path = sweep_file(GPU_SWEEP.format(model=model, family=model, backend=backend, gpus=gpus))
    assert launch.main(["--sweep", str(path), "--dry-run", "--runs-root", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    if warns:
        assert "slower path" in err and warns in err and "1 GPU cell" in err
        assert ("install-mamba-ssm.sh" in err) == (backend == "auto")
    else:
        assert "slower path" not in err
