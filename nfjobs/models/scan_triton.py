"""Mamba-1 selective scan as Triton kernels: the `triton` backend, fast on CUDA without a compiled extension.

    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B_t,   y_t = h_t C_t + D u_t        (h_t: E × N per sequence)

One program per (sequence, chunk of time steps, block of channels) walks its chunk, keeping its states in
registers, as `mamba_ssm`'s kernel does. The forward time loop is unrolled `SEG` steps at a time, so each
segment's loads (which do not depend on the state) can be issued before its arithmetic chain (the backward's
reverse loop is not unrolled: compiled for sm_90 it then spilled, `bench/mamba_bench.py --resources`).

- **Chunks** (sequence parallelism, for small batches where batch × channel blocks leave the GPU idle): the
  sequence is cut into `chunks` pieces; a first kernel computes each chunk's end state from a zero start and
  its Σ Δ (the chunk's decay is exp(A Σ Δ)), and each chunk's program combines those of the chunks before it
  into its start state. The backward pass does the same for dLoss/dh in reverse.
- **Checkpoints** instead of every state: the forward pass (when gradients are needed) stores the state every
  `SEG` steps (B · L/SEG · E · N floats, saved for the backward); the backward recomputes one segment at a time
  from its checkpoint into a per-program scratch of SEG states, then runs the recurrence back over it. The
  earlier version reran the whole forward pass storing all B · L · E · N float32 states (4.3 GB at B 256,
  L 512, E 512, N 16) and read them back.

Triton ships with CUDA builds of torch; with `TRITON_INTERPRET=1` (set before this module is imported) the same
kernels run on CPU, which is how CI tests them.
"""

import os

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

BLOCK_E = 32
SEG = 16
"""Time steps per unrolled segment; a checkpoint every SEG steps."""
TARGET_PROGRAMS = int(os.environ.get("NFJOBS_SCAN_TARGET_PROGRAMS", "1024"))
"""Chunks are added (powers of two) while batch × channel blocks × chunks stays within this many programs."""


@triton.jit
def _fwd_summary(u_ptr, dt_ptr, a_ptr, b_ptr, hl_ptr, ds_ptr, L, E, T,
                 N: tl.constexpr, BLOCK: tl.constexpr, SEG: tl.constexpr):
    """Chunk c (< the last, so T full steps): its end state from a zero start, and Σ Δ over it."""
    seq, c, blk = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    nch = tl.num_programs(1) + 1
    e = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, N)
    emask = e < E
    a = tl.load(a_ptr + e[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
    h = tl.zeros((BLOCK, N), dtype=tl.float32)
    s = tl.zeros((BLOCK,), dtype=tl.float32)
    t0 = c * T
    for sg in range(T // SEG):
        for j in tl.static_range(SEG):
            row = seq * L + t0 + sg * SEG + j
            u = tl.load(u_ptr + row * E + e, mask=emask, other=0.0).to(tl.float32)
            dt = tl.load(dt_ptr + row * E + e, mask=emask, other=0.0).to(tl.float32)
            bt = tl.load(b_ptr + row * N + n).to(tl.float32)
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
            s += dt
    at = (seq * nch + c) * E + e
    tl.store(hl_ptr + at[:, None] * N + n[None, :], h, mask=emask[:, None])
    tl.store(ds_ptr + at, s, mask=emask)


@triton.jit
def _scan_fwd(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, y_ptr, hl_ptr, ds_ptr, ck_ptr, L, E, T,
              N: tl.constexpr, BLOCK: tl.constexpr, SEG: tl.constexpr, STORE_CK: tl.constexpr):
    seq, c, blk = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    nch = tl.num_programs(1)
    e = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, N)
    emask = e < E
    a = tl.load(a_ptr + e[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
    d = tl.load(d_ptr + e, mask=emask, other=0.0)
    h = tl.zeros((BLOCK, N), dtype=tl.float32)
    for cc in range(c):  # the start state: earlier chunks' end states, carried through their decays
        at = (seq * nch + cc) * E + e
        ds = tl.load(ds_ptr + at, mask=emask, other=0.0)
        hl = tl.load(hl_ptr + at[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
        h = tl.exp(ds[:, None] * a) * h + hl
    t0 = c * T
    nseg = (tl.minimum(T, L - t0) + SEG - 1) // SEG
    nseg_all = (L + SEG - 1) // SEG
    for sg in range(nseg):
        ts = t0 + sg * SEG
        if STORE_CK:  # the state before step ts
            at = (seq * nseg_all + ts // SEG) * E + e
            tl.store(ck_ptr + at[:, None] * N + n[None, :], h, mask=emask[:, None])
        for j in tl.static_range(SEG):
            t = ts + j
            ok, ok_n = (e * 0 + t) < L, (n * 0 + t) < L  # vectors: the interpreter masks with no scalars
            row = seq * L + t
            m = emask & ok
            u = tl.load(u_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            dt = tl.load(dt_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            bt = tl.load(b_ptr + row * N + n, mask=ok_n, other=0.0).to(tl.float32)
            ct = tl.load(c_ptr + row * N + n, mask=ok_n, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
            tl.store(y_ptr + row * E + e, tl.sum(h * ct[None, :], axis=1) + d * u, mask=m)


@triton.jit
def _bwd_summary(dt_ptr, a_ptr, c_ptr, dy_ptr, gl_ptr, ds_ptr, L, E, T,
                 N: tl.constexpr, BLOCK: tl.constexpr, SEG: tl.constexpr):
    """Chunk c + 1 (chunks 1 … last): dLoss/dh entering the step before it from its own outputs alone
    (carried back through its decays), and its Σ Δ."""
    seq, c, blk = tl.program_id(0).to(tl.int64), tl.program_id(1) + 1, tl.program_id(2)
    nch = tl.num_programs(1) + 1
    e = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, N)
    emask = e < E
    a = tl.load(a_ptr + e[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
    g = tl.zeros((BLOCK, N), dtype=tl.float32)
    s = tl.zeros((BLOCK,), dtype=tl.float32)
    t0 = c * T
    nseg = (tl.minimum(T, L - t0) + SEG - 1) // SEG
    for sg in range(nseg):
        ts = t0 + (nseg - 1 - sg) * SEG
        for jj in tl.static_range(SEG):
            t = ts + SEG - 1 - jj
            ok, ok_n = (e * 0 + t) < L, (n * 0 + t) < L  # vectors: the interpreter masks with no scalars
            row = seq * L + t
            m = emask & ok
            dt = tl.load(dt_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            ct = tl.load(c_ptr + row * N + n, mask=ok_n, other=0.0).to(tl.float32)
            g = (g + dy[:, None] * ct[None, :]) * tl.exp(dt[:, None] * a)
            s += dt
    at = (seq * nch + c) * E + e
    tl.store(gl_ptr + at[:, None] * N + n[None, :], g, mask=emask[:, None])
    tl.store(ds_ptr + at, s, mask=emask)


@triton.jit
def _scan_bwd(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, ck_ptr, dy_ptr, gl_ptr, ds_ptr, scr_ptr,
              du_ptr, ddt_ptr, da_ptr, db_ptr, dc_ptr, dd_ptr, L, E, T,
              N: tl.constexpr, BLOCK: tl.constexpr, SEG: tl.constexpr):
    seq, c, blk = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    nch, nblk = tl.num_programs(1), tl.num_programs(2)
    e = blk * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, N)
    emask = e < E
    a = tl.load(a_ptr + e[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
    d = tl.load(d_ptr + e, mask=emask, other=0.0)
    g = tl.zeros((BLOCK, N), dtype=tl.float32)  # dLoss/dh of the next step, times that step's decay
    for i in range(nch - 1 - c):  # what the later chunks' outputs carry back into this one
        cc = nch - 1 - i
        at = (seq * nch + cc) * E + e
        ds = tl.load(ds_ptr + at, mask=emask, other=0.0)
        gl = tl.load(gl_ptr + at[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
        g = tl.exp(ds[:, None] * a) * g + gl
    da = tl.zeros((BLOCK, N), dtype=tl.float32)
    dd = tl.zeros((BLOCK,), dtype=tl.float32)
    scr = scr_ptr + ((seq * nch + c) * nblk + blk) * (SEG * BLOCK * N) + (e[:, None] - blk * BLOCK) * N + n[None, :]
    t0 = c * T
    nseg = (tl.minimum(T, L - t0) + SEG - 1) // SEG
    nseg_all = (L + SEG - 1) // SEG
    for sg in range(nseg):
        ts = t0 + (nseg - 1 - sg) * SEG
        at = (seq * nseg_all + ts // SEG) * E + e
        h0 = tl.load(ck_ptr + at[:, None] * N + n[None, :], mask=emask[:, None], other=0.0)
        h = h0
        for j in tl.static_range(SEG):  # this segment's states again, into the scratch (slot j: after step ts + j)
            t = ts + j
            ok, ok_n = (e * 0 + t) < L, (n * 0 + t) < L  # vectors: the interpreter masks with no scalars
            row = seq * L + t
            m = emask & ok
            u = tl.load(u_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            dt = tl.load(dt_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            bt = tl.load(b_ptr + row * N + n, mask=ok_n, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
            if j < SEG - 1:
                tl.store(scr + j * (BLOCK * N), h)
        tl.debug_barrier()
        for jj in range(SEG):  # not unrolled: 16 steps' loads in flight spill registers here
            r = SEG - 1 - jj
            t = ts + r
            ok, ok_n = (e * 0 + t) < L, (n * 0 + t) < L  # vectors: the interpreter masks with no scalars
            row = seq * L + t
            m = emask & ok
            u = tl.load(u_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            dt = tl.load(dt_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * E + e, mask=m, other=0.0).to(tl.float32)
            bt = tl.load(b_ptr + row * N + n, mask=ok_n, other=0.0).to(tl.float32)
            ct = tl.load(c_ptr + row * N + n, mask=ok_n, other=0.0).to(tl.float32)
            has_prev = (e[:, None] * 0 + n[None, :] * 0 + r) > 0
            h_prev = tl.where(has_prev, tl.load(scr + (r - 1) * (BLOCK * N), mask=has_prev, other=0.0), h0)
            decay = tl.exp(dt[:, None] * a)
            g += dy[:, None] * ct[None, :]  # dLoss/dh_t, all later steps included
            part = (seq * nblk + blk) * L + t  # per-block partial sums over channels, reduced by the caller
            tl.store(dc_ptr + part * N + n, tl.sum(dy[:, None] * h, axis=0), mask=ok_n)
            tl.store(db_ptr + part * N + n, tl.sum(g * (dt * u)[:, None], axis=0), mask=ok_n)
            g_decay_h = g * decay * h_prev
            tl.store(du_ptr + row * E + e, d * dy + dt * tl.sum(g * bt[None, :], axis=1), mask=m)
            tl.store(ddt_ptr + row * E + e, tl.sum(g_decay_h * a + g * bt[None, :] * u[:, None], axis=1), mask=m)
            da += g_decay_h * dt[:, None]
            dd += dy * u
            g = g * decay
            h = h_prev
        tl.debug_barrier()  # the next segment overwrites the scratch
    at = (seq * nch + c) * E + e
    tl.store(da_ptr + at[:, None] * N + n[None, :], da, mask=emask[:, None])
    tl.store(dd_ptr + at, dd, mask=emask)


def plan(bsz: int, length: int, e: int, chunks: int = 0) -> tuple[int, int]:
    """(chunks, chunk length) for a scan: `chunks` 0 picks them (powers of two while batch × channel blocks ×
    chunks stays within TARGET_PROGRAMS, each chunk at least 2 SEG long); the length is a multiple of SEG."""
    if chunks <= 0:
        base, chunks = bsz * triton.cdiv(e, BLOCK_E), 1
        while base * chunks * 2 <= TARGET_PROGRAMS and length >= chunks * 2 * 2 * SEG:
            chunks *= 2
    seg_len = triton.cdiv(triton.cdiv(length, chunks), SEG) * SEG
    return triton.cdiv(length, seg_len), seg_len


def _forward(u, dt, a, b, c, d, chunks: int, store_ck: bool):
    bsz, length, e = u.shape
    n, nblk = a.shape[1], triton.cdiv(e, BLOCK_E)
    nch, seg_len = plan(bsz, length, e, chunks)
    f32 = dict(device=u.device, dtype=torch.float32)
    y = torch.empty(bsz, length, e, **f32)
    hl, ds = torch.empty(bsz, nch, e, n, **f32), torch.empty(bsz, nch, e, **f32)
    ck = torch.empty(bsz, triton.cdiv(length, SEG), e, n, **f32) if store_ck else y.new_empty(0)
    if nch > 1:
        _fwd_summary[(bsz, nch - 1, nblk)](u, dt, a, b, hl, ds, length, e, seg_len, N=n, BLOCK=BLOCK_E, SEG=SEG,
                                           num_warps=1)
    _scan_fwd[(bsz, nch, nblk)](u, dt, a, b, c, d, y, hl, ds, ck if store_ck else y, length, e, seg_len, N=n,
                                BLOCK=BLOCK_E, SEG=SEG, STORE_CK=store_ck, num_warps=1)
    return y, ck


# Custom ops: torch.compile keeps them whole (no graph break) and traces around them.
@torch.library.custom_op("nfjobs::selective_scan", mutates_args=())
def _scan(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, chunks: int) -> Tensor:
    return _forward(u, dt, a, b, c, d, chunks, store_ck=False)[0]


@_scan.register_fake
def _(u, dt, a, b, c, d, chunks):
    return u.new_empty(u.shape, dtype=torch.float32)


@torch.library.custom_op("nfjobs::selective_scan_ck", mutates_args=())
def _scan_ck(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, chunks: int
             ) -> tuple[Tensor, Tensor]:
    """y and the checkpoints (the state before every SEG-th step) that the backward pass starts from."""
    return _forward(u, dt, a, b, c, d, chunks, store_ck=True)


@_scan_ck.register_fake
def _(u, dt, a, b, c, d, chunks):
    bsz, length, e = u.shape
    return (u.new_empty(u.shape, dtype=torch.float32),
            u.new_empty((bsz, (length + SEG - 1) // SEG, e, a.shape[1]), dtype=torch.float32))


@torch.library.custom_op("nfjobs::selective_scan_backward", mutates_args=())
def _scan_backward(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, ck: Tensor, dy: Tensor,
                   chunks: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    bsz, length, e = u.shape
    n, nblk = a.shape[1], triton.cdiv(e, BLOCK_E)
    nch, seg_len = plan(bsz, length, e, chunks)
    f32 = dict(device=u.device, dtype=torch.float32)
    dy = dy.contiguous()
    gl, ds = torch.empty(bsz, nch, e, n, **f32), torch.empty(bsz, nch, e, **f32)
    if nch > 1:
        _bwd_summary[(bsz, nch - 1, nblk)](dt, a, c, dy, gl, ds, length, e, seg_len, N=n, BLOCK=BLOCK_E, SEG=SEG,
                                           num_warps=1)
    scratch = torch.empty(bsz * nch * nblk * SEG * BLOCK_E * n, **f32)
    du, ddt = torch.empty(bsz, length, e, **f32), torch.empty(bsz, length, e, **f32)
    da, dd = torch.empty(bsz, nch, e, n, **f32), torch.empty(bsz, nch, e, **f32)
    db, dc = torch.empty(bsz, nblk, length, n, **f32), torch.empty(bsz, nblk, length, n, **f32)
    _scan_bwd[(bsz, nch, nblk)](u, dt, a, b, c, d, ck, dy, gl, ds, scratch, du, ddt, da, db, dc, dd, length, e,
                                seg_len, N=n, BLOCK=BLOCK_E, SEG=SEG, num_warps=1)
    return du, ddt, da.sum((0, 1)), db.sum(1), dc.sum(1), dd.sum((0, 1))


@_scan_backward.register_fake
def _(u, dt, a, b, c, d, ck, dy, chunks):
    f32 = dict(dtype=torch.float32)
    return (u.new_empty(u.shape, **f32), u.new_empty(u.shape, **f32), a.new_empty(a.shape, **f32),
            b.new_empty(b.shape, **f32), c.new_empty(c.shape, **f32), d.new_empty(d.shape, **f32))


def _setup_context(ctx, inputs, output):
    *tensors, chunks = inputs
    ctx.save_for_backward(*tensors, output[1])
    ctx.chunks = chunks
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, dy, _dck):
    *inputs, ck = ctx.saved_tensors
    grads = _scan_backward(*inputs, ck, dy, ctx.chunks)
    return (*(g.to(x.dtype) for g, x in zip(grads, inputs, strict=True)), None)


_scan_ck.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(u: Float[Tensor, "B L E"], delta: Float[Tensor, "B L E"], a: Float[Tensor, "E N"],
                   b: Float[Tensor, "B L N"], c: Float[Tensor, "B L N"], d: Float[Tensor, " E"], chunks: int = 0
                   ) -> Float[Tensor, "B L E"]:
    """y of the recurrence above, in float32 (states kept in float32 whatever the inputs' dtype).

    `delta` is Δ after softplus and bias; N (the state size) must be a power of two. `chunks` cuts the sequence
    into that many pieces scanned in parallel (0: by `plan`)."""
    n = a.shape[1]
    if n & (n - 1):
        raise ValueError(f"the triton scan needs a power-of-two d_state, got {n}")
    args = (u.contiguous(), delta.contiguous(), a.float().contiguous(), b.contiguous(), c.contiguous(),
            d.float().contiguous(), chunks)
    if torch.is_grad_enabled() and any(x.requires_grad for x in args[:6]):
        return _scan_ck(*args)[0]
    return _scan(*args)
