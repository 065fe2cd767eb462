"""GEGLU, `h · gelu(gate)` for `[h, gate] = up.chunk(2, -1)` (exact erf GELU), as one custom op.

On CUDA the forward and backward are Triton kernels that read each `(h, gate)` pair once and write both
gradients from one thread, in float32 registers. torch.compile's own fused backward writes the `[dh, dgate]`
concatenation element by element, evaluating the GELU derivative for both halves, and ran at about a third of
memory bandwidth on an H200 (BENCHMARKS.md). Elsewhere it is the plain torch expression.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch builds: the torch expression everywhere
    triton = None

if triton is not None:

    def _tiles(up: Tensor) -> tuple[int, int, int, int]:
        """Rows, half width, and the (rows, columns) tile of a contiguous `(rows, 2H)` input."""
        half = up.shape[-1] // 2
        block_c = min(1024, triton.next_power_of_2(half))
        return up.numel() // up.shape[-1], half, max(1, 4096 // block_c), block_c


    @triton.jit
    def _geglu_forward_kernel(up, out, rows, half, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
        mask = (r < rows) & (c < half)
        h = tl.load(up + r * 2 * half + c, mask=mask).to(tl.float32)
        g = tl.load(up + r * 2 * half + half + c, mask=mask).to(tl.float32)
        cdf = 0.5 * (1.0 + tl.math.erf(g * 0.7071067811865476))
        tl.store(out + r * half + c, (h * g * cdf).to(out.dtype.element_ty), mask=mask)


    @triton.jit
    def _geglu_backward_kernel(up, grad, dup, rows, half, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
        mask = (r < rows) & (c < half)
        h = tl.load(up + r * 2 * half + c, mask=mask).to(tl.float32)
        g = tl.load(up + r * 2 * half + half + c, mask=mask).to(tl.float32)
        d = tl.load(grad + r * half + c, mask=mask).to(tl.float32)
        cdf = 0.5 * (1.0 + tl.math.erf(g * 0.7071067811865476))
        pdf = tl.exp(-0.5 * g * g) * 0.3989422804014327
        tl.store(dup + r * 2 * half + c, (d * g * cdf).to(dup.dtype.element_ty), mask=mask)
        tl.store(dup + r * 2 * half + half + c, (d * h * (cdf + g * pdf)).to(dup.dtype.element_ty), mask=mask)


    @torch.library.triton_op("nfjobs::geglu", mutates_args=())
    def _geglu_cuda(up: Tensor) -> Tensor:
        rows, half, block_r, block_c = _tiles(up)
        out = up.new_empty(*up.shape[:-1], half)
        grid = (triton.cdiv(rows, block_r), triton.cdiv(half, block_c))
        kernel = torch.library.wrap_triton(_geglu_forward_kernel)
        kernel[grid](up, out, rows, half, BLOCK_R=block_r, BLOCK_C=block_c)
        return out


    @torch.library.triton_op("nfjobs::geglu_backward", mutates_args=())
    def _geglu_backward_cuda(up: Tensor, grad: Tensor) -> Tensor:
        rows, half, block_r, block_c = _tiles(up)
        dup = torch.empty_like(up)
        grid = (triton.cdiv(rows, block_r), triton.cdiv(half, block_c))
        kernel = torch.library.wrap_triton(_geglu_backward_kernel)
        kernel[grid](up, grad, dup, rows, half, BLOCK_R=block_r, BLOCK_C=block_c)
        return dup


    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])


    def _backward(ctx, grad):
        (up,) = ctx.saved_tensors
        return _geglu_backward_cuda(up, grad.contiguous())


    torch.library.register_autograd("nfjobs::geglu", _backward, setup_context=_setup_context)


def geglu(up: Float[Tensor, "*B 2H"]) -> Float[Tensor, "*B H"]:
    """`h · gelu(gate)` for `[h, gate] = up.chunk(2, -1)`: the Triton kernels on CUDA, the torch expression
    elsewhere (same function: `tests/test_geglu.py`)."""
    if up.is_cuda and triton is not None:
        return _geglu_cuda(up.contiguous())
    h, gate = up.chunk(2, dim=-1)
    return h * F.gelu(gate)
