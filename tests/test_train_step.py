"""The train job's step (`nfjobs.models.train_step`): the plain step on CPU; on CUDA, the whole step captured as one
CUDA graph trains exactly as the uncaptured step does (tiny Mamba families), and a step that cannot be captured
falls back with one warning."""

import warnings
from dataclasses import replace

import pytest
import torch

from nfjobs.jobs.train import Config
from nfjobs.models import load_family
from nfjobs.models.train_step import WARMUP, GraphedStep, make_train_step

TINY = {"ginr": dict(patch_size=4, dim=32, pos_emb_dim=8, num_lp=16, depth=1, ff_dim=64, feature_dim=16, head_dim=8,
                     d_state=4, jitter_std=0.0),  # no random query jitter: graph and plain steps see the same numbers
        "jepa": dict(dim=32, depth=1, ff_dim=64, n_freqs=4, d_state=4, recon_hidden=32)}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def _run(family_name: str, backend: str, device: str, steps: int, **cfg_kw) -> tuple[list[float], torch.nn.Module]:
    cfg = Config(model=family_name, batch_size=4, **cfg_kw)
    cfg = replace(cfg, **{family_name: replace(getattr(cfg, family_name), mamba_backend=backend, **TINY[family_name])})
    family = load_family(family_name)
    torch.manual_seed(0)
    model = family.build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=device == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))  # the lr changes every step
    step = torch.zeros((), device=device)
    train_step = make_train_step(family, model, opt, params, cfg, step, torch.device(device))
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        images = torch.rand(4, 3, 32, 32, generator=gen).to(device)
        loss, logs = train_step(images)
        sched.step()
        losses.append(loss.item())
        assert all(torch.isfinite(v).all() for v in logs.values())
    assert int(step) == steps
    return losses, model, train_step


def test_plain_step_on_cpu_trains_and_counts_steps():
    losses, _, train_step = _run("ginr", "pure", "cpu", 3, compile=True, cuda_graph=True)
    assert not isinstance(train_step, GraphedStep)  # no graphs (nor compile) on CPU
    assert all(torch.isfinite(torch.tensor(losses)))


@cuda
@pytest.mark.parametrize(("family", "compiled"), [("ginr", False), ("jepa", False), ("ginr", True)])
def test_captured_step_trains_as_the_plain_step(family, compiled):
    steps = WARMUP + 4
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning
        graphed, model_g, step_g = _run(family, "triton", "cuda", steps, compile=compiled, cuda_graph=True)
    plain, model_p, _ = _run(family, "triton", "cuda", steps, compile=compiled, cuda_graph=False)
    assert isinstance(step_g, GraphedStep) and step_g.graph is not None
    if family == "jepa":  # random context/target split: the graph draws other numbers than the eager steps
        assert all(abs(a - b) < 0.5 * abs(b) for a, b in zip(graphed, plain, strict=True))
        return
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(plain), rtol=2e-3, atol=1e-4)
    for (name, p), q in zip(model_g.named_parameters(), model_p.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=2e-3, atol=2e-4, msg=name)


@cuda
def test_a_step_that_cannot_be_captured_warns_once_and_runs_uncaptured():
    w = torch.zeros(3, device="cuda", requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)

    def body(images, zero_grad=True):
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        loss = (w - images.mean()).square().sum()
        loss.backward()
        if loss.item() < 0:  # a host sync: illegal while capturing
            pass
        opt.step()
        return loss, {}

    step = GraphedStep(body, opt, warmup=1)
    x = torch.ones(2, device="cuda")
    step(x)
    with pytest.warns(UserWarning, match="could not be captured"):
        step(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(x)
    assert step.failed and step.graph is None
    torch.testing.assert_close(w.detach(), torch.full((3,), 1 - 0.8 ** 3, device="cuda"))
