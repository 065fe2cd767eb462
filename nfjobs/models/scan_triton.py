"""Mamba-1 selective scan as Triton kernels: the `triton` backend, fast on CUDA without a compiled extension.

    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B_t,   y_t = h_t C_t + D u_t        (h_t: E × N per sequence)

One program per (sequence, block of channels) walks the sequence, keeping its states in registers, as
`mamba_ssm`'s kernel does. The backward pass recomputes the states into a scratch buffer, then runs the
recurrence in reverse. Triton ships with CUDA builds of torch; with `TRITON_INTERPRET=1` (set before this
module is imported) the same kernels run on CPU, which is how CI tests them.
"""

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

BLOCK_E = 32


@triton.jit
def _scan_fwd(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, y_ptr, h_ptr, L, E,
              N: tl.constexpr, BLOCK: tl.constexpr, STORE_H: tl.constexpr):
    seq, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    e = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, N)
    emask = e < E
    a = tl.load(a_ptr + e[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
    d = tl.load(d_ptr + e, mask=emask, other=0.0)
    h = tl.zeros((BLOCK, N), dtype=tl.float32)
    for t in range(L):
        row = seq * L + t
        u = tl.load(u_ptr + row * E + e, mask=emask, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + row * E + e, mask=emask, other=0.0).to(tl.float32)
        bt = tl.load(b_ptr + row * N + n).to(tl.float32)
        ct = tl.load(c_ptr + row * N + n).to(tl.float32)
        h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
        tl.store(y_ptr + row * E + e, tl.sum(h * ct[None, :], axis=1) + d * u, mask=emask)
        if STORE_H:
            tl.store(h_ptr + (row * E + e[:, None]) * N + n[None, :], h, mask=emask[:, None])


@triton.jit
def _scan_bwd(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, h_ptr, dy_ptr,
              du_ptr, ddt_ptr, da_ptr, db_ptr, dc_ptr, dd_ptr, L, E,
              N: tl.constexpr, BLOCK: tl.constexpr):
    seq, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    nblk = tl.num_programs(1)
    e = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, N)
    emask = e < E
    a = tl.load(a_ptr + e[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
    d = tl.load(d_ptr + e, mask=emask, other=0.0)
    g = tl.zeros((BLOCK, N), dtype=tl.float32)  # dLoss/dh_t, all later steps included
    da = tl.zeros((BLOCK, N), dtype=tl.float32)
    dd = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(L):
        t = L - 1 - i
        row = seq * L + t
        u = tl.load(u_ptr + row * E + e, mask=emask, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + row * E + e, mask=emask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row * E + e, mask=emask, other=0.0).to(tl.float32)
        bt = tl.load(b_ptr + row * N + n).to(tl.float32)
        ct = tl.load(c_ptr + row * N + n).to(tl.float32)
        hmask = emask[:, None] & (n[None, :] < N)
        h = tl.load(h_ptr + (row * E + e[:, None]) * N + n[None, :], mask=hmask, other=0.0)
        h_prev = tl.load(h_ptr + ((row - 1) * E + e[:, None]) * N + n[None, :], mask=hmask & (e[:, None] * 0 + t > 0),
                         other=0.0)
        decay = tl.exp(dt[:, None] * a)
        g += dy[:, None] * ct[None, :]
        part = (seq * nblk + blk) * L + t  # per-block partial sums over channels, reduced by the caller
        tl.store(dc_ptr + part * N + n, tl.sum(dy[:, None] * h, axis=0))
        tl.store(db_ptr + part * N + n, tl.sum(g * (dt * u)[:, None], axis=0))
        g_decay_h = g * decay * h_prev
        tl.store(du_ptr + row * E + e, d * dy + dt * tl.sum(g * bt[None, :], axis=1), mask=emask)
        tl.store(ddt_ptr + row * E + e, tl.sum(g_decay_h * a + g * bt[None, :] * u[:, None], axis=1), mask=emask)
        da += g_decay_h * dt[:, None]
        dd += dy * u
        g = g * decay
    tl.store(da_ptr + (seq * E + e[:, None]) * N + n[None, :], da, mask=emask[:, None])
    tl.store(dd_ptr + seq * E + e, dd, mask=emask)


def _launch_fwd(u, dt, a, b, c, d, store_h: bool):
    bsz, length, e = u.shape
    n = a.shape[1]
    y = torch.empty(bsz, length, e, device=u.device, dtype=torch.float32)
    h = torch.empty(bsz, length, e, n, device=u.device, dtype=torch.float32) if store_h else y
    _scan_fwd[(bsz, triton.cdiv(e, BLOCK_E))](u, dt, a, b, c, d, y, h, length, e, N=n, BLOCK=BLOCK_E,
                                               STORE_H=store_h, num_warps=1)
    return y, h


# Custom ops: torch.compile keeps them whole (no graph break) and traces around them.
@torch.library.custom_op("nfjobs::selective_scan", mutates_args=())
def _scan(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    return _launch_fwd(u, dt, a, b, c, d, store_h=False)[0]


@_scan.register_fake
def _(u, dt, a, b, c, d):
    return u.new_empty(u.shape, dtype=torch.float32)


@torch.library.custom_op("nfjobs::selective_scan_backward", mutates_args=())
def _scan_backward(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, dy: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    bsz, length, e = u.shape
    n, nblk = a.shape[1], triton.cdiv(e, BLOCK_E)
    _, h = _launch_fwd(u, dt, a, b, c, d, store_h=True)
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddt = torch.empty(bsz, length, e, **f32), torch.empty(bsz, length, e, **f32)
    da, dd = torch.empty(bsz, e, n, **f32), torch.empty(bsz, e, **f32)
    db, dc = torch.empty(bsz, nblk, length, n, **f32), torch.empty(bsz, nblk, length, n, **f32)
    _scan_bwd[(bsz, nblk)](u, dt, a, b, c, d, h, dy.contiguous(), du, ddt, da, db, dc, dd, length, e,
                           N=n, BLOCK=BLOCK_E, num_warps=1)
    return du, ddt, da.sum(0), db.sum(1), dc.sum(1), dd.sum(0)


@_scan_backward.register_fake
def _(u, dt, a, b, c, d, dy):
    f32 = dict(dtype=torch.float32)
    return (u.new_empty(u.shape, **f32), u.new_empty(u.shape, **f32), a.new_empty(a.shape, **f32),
            b.new_empty(b.shape, **f32), c.new_empty(c.shape, **f32), d.new_empty(d.shape, **f32))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    inputs = ctx.saved_tensors
    grads = _scan_backward(*inputs, dy)
    return tuple(g.to(x.dtype) for g, x in zip(grads, inputs, strict=True))


_scan.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(u: Float[Tensor, "B L E"], delta: Float[Tensor, "B L E"], a: Float[Tensor, "E N"],
                   b: Float[Tensor, "B L N"], c: Float[Tensor, "B L N"], d: Float[Tensor, " E"]
                   ) -> Float[Tensor, "B L E"]:
    """y of the recurrence above, in float32 (states kept in float32 whatever the inputs' dtype).

    `delta` is Δ after softplus and bias; N (the state size) must be a power of two."""
    n = a.shape[1]
    if n & (n - 1):
        raise ValueError(f"the triton scan needs a power-of-two d_state, got {n}")
    return _scan(u.contiguous(), delta.contiguous(), a.float().contiguous(), b.contiguous(), c.contiguous(),
                 d.float().contiguous())
