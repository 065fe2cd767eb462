"""GEGLU custom op: the Triton kernels (run by Triton's interpreter on the CPU) compute the torch expression."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nfjobs.nf.geglu import geglu

ROOT = Path(__file__).resolve().parents[1]


def reference(up):
    h, gate = up.double().chunk(2, dim=-1)
    return h * F.gelu(gate)


def test_cpu_path_is_the_torch_expression_with_its_gradient():
    up = torch.randn(3, 5, 2 * 12, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = geglu(up)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref_up = up.detach().double().requires_grad_()
    reference(ref_up).backward(grad.double())
    torch.testing.assert_close(out.double(), reference(up.detach()))
    # a float32 gradient against the float64 one: float32's tolerance (double's 1e-7 failed by 4.7e-7 once in CI)
    torch.testing.assert_close(up.grad, ref_up.grad.float())


KERNEL_CHECK = """
import torch
from nfjobs.nf import geglu as G
from tests.test_geglu import reference
torch.manual_seed(0)
# half widths: a power of two, not one (masked columns), wider than one tile; rows not a multiple of the tile
for shape in [(3, 5, 2 * 24), (7, 2 * 1536), (2, 2 * 2048), (1, 3, 2 * 5)]:
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        up = (torch.randn(shape) * 2).to(dtype)
        grad = torch.randn(*shape[:-1], shape[-1] // 2).to(dtype)
        out = G._geglu_cuda(up)
        ref_up = up.double().requires_grad_()
        ref = reference(ref_up)
        ref.backward(grad.double())
        dup = G._geglu_backward_cuda(up, grad)
        assert out.dtype == dup.dtype == dtype and out.shape == ref.shape and dup.shape == up.shape
        for got, want in ((out, ref.detach()), (dup, ref_up.grad)):
            err = ((got.double() - want).norm() / want.norm()).item()
            assert err < tol, (shape, dtype, err)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="no triton")
def test_triton_kernels_compute_the_function_and_its_gradient():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", KERNEL_CHECK], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_cuda_op_matches_the_expression():
    up = torch.randn(64, 2 * 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = torch.compile(geglu)(up)
    out.float().square().sum().backward()
    ref_up = up.detach().double().requires_grad_()
    reference(ref_up).square().sum().backward()
    assert ((out.double() - reference(up.detach())).norm() / reference(up.detach()).norm()) < 1e-2
    assert ((up.grad.double() - ref_up.grad).norm() / ref_up.grad.norm()) < 2e-2
