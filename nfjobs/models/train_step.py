"""The train job's optimisation step, eager, compiled, or captured whole as one CUDA graph.

`make_train_step` returns `step(images) -> (loss, logs)` that runs the family's `training_loss` under autocast
(`torch.compile`d on CUDA when `cfg.compile`), the backward pass, gradient clipping, the optimiser step,
`after_step` and the step counter's increment — everything of a train step but the LR scheduler.

With `cfg.cuda_graph` (off by default until measured on a GPU) on CUDA, for the families in `GRAPH_FAMILIES`, the whole step is captured as one CUDA graph
after `WARMUP` ordinary steps (which compile and create the optimiser's state) and then replayed on a static copy
of each batch: no kernel launches or Python from the host per step, which is what bounds the Mamba families at
the recipes' batch sizes. A graph replays exactly what was captured, so this suits only steps whose shapes are
fixed and whose randomness is drawn on the device (the two Mamba families'; a host-side random choice would be
frozen into the graph, hence the explicit list). The learning rate enters the captured fused AdamW as a device
tensor, refreshed from the scheduler's value before each replay. Where capture fails, one warning says why and
the steps run uncaptured.
"""

import contextlib
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from nfjobs.nf.training import uses_bf16

GRAPH_FAMILIES = frozenset({"ginr", "jepa"})
"""Families whose `training_loss` and `after_step` draw random numbers on the device only and keep every shape
fixed for a fixed batch size, so a captured step is the same computation."""
WARMUP = 3
"""Ordinary steps before the capture: compilation, cuBLAS handles, the optimiser's state."""

Step = Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]


def make_train_step(family, model: torch.nn.Module, opt: torch.optim.Optimizer, params: list[Tensor], cfg,
                    step: Tensor, device: torch.device) -> Step:
    """One optimisation step of the train job (see the module docstring); `step` is the device step counter."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(cfg.precision, device))
    graph = bool(getattr(cfg, "cuda_graph", False)) and device.type == "cuda" and cfg.model in GRAPH_FAMILIES
    loss_fn = family.training_loss
    if cfg.compile and device.type == "cuda":
        mode = "default" if graph and cfg.compile_mode == "reduce-overhead" else cfg.compile_mode
        # dynamic=False: one static graph per batch shape (a symbolic batch broke JEPA's torch.rand(b, n, ...)).
        loss_fn = torch.compile(loss_fn, mode=mode, dynamic=False if cfg.model in GRAPH_FAMILIES else None)
    after_step = getattr(family, "after_step", None)

    def body(images: Tensor, zero_grad: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        with autocast:
            loss, logs = loss_fn(model, images, step, cfg)
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip, foreach=True)
        opt.step()
        if after_step is not None:
            after_step(model, step, cfg)
        step.add_(1)
        return loss, logs

    return GraphedStep(body, opt) if graph else body


class GraphedStep:
    """`body(images)` run `WARMUP` times on a side stream, then captured once and replayed (see the module)."""

    def __init__(self, body: Callable, opt: torch.optim.Optimizer, warmup: int = WARMUP):
        self.body, self.opt, self.warmup = body, opt, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed: str | None = None
        self.static_images: Tensor | None = None
        self.out: tuple[Tensor, dict[str, Tensor]] | None = None
        self.lrs: list[Tensor] = []

    def __call__(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.failed:
            return self.body(images)
        if self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream(images.device)
            side.wait_stream(torch.cuda.current_stream(images.device))
            with torch.cuda.stream(side):
                out = self.body(images)
            torch.cuda.current_stream(images.device).wait_stream(side)
            return out
        if self.graph is None:
            try:
                self._capture(images)
            except Exception as err:  # an op that syncs with the host, a CPU tensor, an unsupported kernel, ...
                self.failed = f"{type(err).__name__}: {err}"
                self.graph = None
                warnings.warn(f"the train step could not be captured as a CUDA graph ({self.failed}); "
                              "running it uncaptured", stacklevel=2)
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize(images.device)
                return self.body(images)
        self.static_images.copy_(images)
        for lr, group in zip(self.lrs, self.opt.param_groups, strict=True):
            lr.fill_(float(group["lr"]))
        self.graph.replay()
        return self.out

    @contextlib.contextmanager
    def _capturable(self):
        """The optimiser with device-tensor learning rates and `capturable` on, restored afterwards (so its state
        dict and the LR scheduler see plain floats)."""
        saved = [(g["lr"], g.get("capturable", False)) for g in self.opt.param_groups]
        try:
            for group, lr in zip(self.opt.param_groups, self.lrs, strict=True):
                lr.fill_(float(group["lr"]))
                group["lr"], group["capturable"] = lr, True
            yield
        finally:
            for group, (lr, capturable) in zip(self.opt.param_groups, saved, strict=True):
                group["lr"], group["capturable"] = lr, capturable

    def _capture(self, images: Tensor) -> None:
        device = images.device
        self.lrs = [torch.zeros((), device=device, dtype=torch.float32) for _ in self.opt.param_groups]
        self.static_images = images.clone()
        self.opt.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients in its pool
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        graph = torch.cuda.CUDAGraph()
        with self._capturable(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.out = self.body(self.static_images, zero_grad=False)
        self.graph = graph
