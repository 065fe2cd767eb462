"""Pictures of what each trait's prototype finds: per trait, the chosen prototype's top-k test images with the
best-scoring patch outlined, as one PNG grid, and `index.html` linking them all.

An outline is green when the image has the trait and red when it does not. One rule locates a token: it is a
cell of a grid over the image. A cache whose meta.json has `token_grid` (rows, cols) and `token_cells` (cell
per token; a field's latents, e.g. Mamba-GINR's LP tokens on its 16x16 grid of 2x2 patches) says which;
otherwise the tokens are a square grid in row-major order (ViT patches, ResNet cells, 4x4 pixel patches), and
activations that are neither (sparse (x, y, r, g, b) points) get pictures without outlines. Drawing uses PIL
and torchvision (`draw_bounding_boxes`, `make_grid`).
File names are trait indices, never trait names (those come from input tables); every text in the page is
escaped.
"""

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from nfjobs.config import BUILTIN_PIXELS, DataConfig
from nfjobs.scoring.scorers import Scorer
from nfjobs.store.layout import META

TOP_K = 8
"""Test images shown per trait unless the caller says otherwise."""
MIN_SIDE = 96
"""Images smaller than this are enlarged (nearest neighbour) so that outlines and pixels stay visible."""
FOLDER = "pictures"


@dataclass(frozen=True)
class TraitPicture:
    """What one trait's grid shows."""

    trait: int
    name: str
    prototype: int
    test_ap: float
    image_ids: Int[np.ndarray, " k"]
    """Test-split indices of the top-scoring images, best first."""
    scores: Float[np.ndarray, " k"]
    patch: Int[np.ndarray, " k"]
    """Token index of each image's best patch."""
    has_trait: Bool[np.ndarray, " k"]


def _gather(shards: Sequence[np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Activations (len(ids), P, D) of test images `ids` from the shards (in image order)."""
    starts = np.cumsum([0, *(len(s) for s in shards)])
    out = []
    for i in ids:
        s = int(np.searchsorted(starts, i, side="right") - 1)
        out.append(np.asarray(shards[s][i - starts[s]], np.float32))
    return np.stack(out)


@torch.no_grad()
def top_patches(
    scorer: Scorer,
    shards: Sequence[np.ndarray],
    image_scores: Float[Tensor, "N K"],
    prototypes: Int[np.ndarray, " T"],
    traits: Bool[np.ndarray, "N T"],
    names: Sequence[str],
    test_ap: Float[np.ndarray, " T"],
    k: int = TOP_K,
    device: torch.device | str = "cpu",
) -> list[TraitPicture]:
    """Per trait: the `k` test images its prototype scores highest and the patch where it does (each image's
    patches are scored once, however many traits show it)."""
    k = min(k, len(image_scores))
    chosen = image_scores[:, torch.as_tensor(prototypes, device=image_scores.device)]  # (N, T)
    scores, top = chosen.topk(k, dim=0)  # (k, T)
    top, scores = top.T.cpu().numpy(), scores.T.float().cpu().numpy()
    unique = np.unique(top)
    where = {int(i): j for j, i in enumerate(unique)}
    best = np.zeros((len(unique), len(prototypes)), np.int64)  # best patch of each shown image per trait
    needed = torch.as_tensor(prototypes, device=device)
    for s in range(0, len(unique), 16):
        acts = torch.from_numpy(_gather(shards, unique[s : s + 16])).to(device)  # (b, P, D)
        b, p, d = acts.shape
        patch_scores = scorer(acts.reshape(b * p, d)).view(b, p, -1)[:, :, needed]  # (b, P, T)
        best[s : s + b] = patch_scores.argmax(1).cpu().numpy()
    return [TraitPicture(t, str(names[t]) if t < len(names) else str(t), int(prototypes[t]), float(test_ap[t]),
                         top[t], scores[t], best[[where[int(i)] for i in top[t]], t], traits[top[t], t])
            for t in range(len(prototypes))]


def patch_box(patch: int, n_tokens: int, height: int, width: int, grid: tuple[int, int] | None = None,
              cells: Sequence[int] | None = None) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in pixels of token `patch`: cell `cells[patch]` of a `grid` (rows, cols) over the image,
    by default cell `patch` of a square grid of `n_tokens`; None when the tokens are no grid."""
    if grid is None:
        g = math.isqrt(n_tokens)
        if g * g != n_tokens:
            return None
        grid = (g, g)
    rows, cols = grid
    row, col = divmod(int(patch) if cells is None else int(cells[patch]), cols)
    return (col * width // cols, row * height // rows, (col + 1) * width // cols - 1,
            (row + 1) * height // rows - 1)


def token_layout(meta: dict, n_tokens: int) -> tuple[tuple[int, int] | None, list[int] | None]:
    """`(grid, cells)` a cache's meta.json records (None, None when it records none); a cache is an input, so a
    layout that does not fit its tokens is an error."""
    if "token_grid" not in meta:
        return None, None
    grid, cells = meta["token_grid"], meta.get("token_cells")
    ok_grid = (isinstance(grid, list) and len(grid) == 2 and all(type(v) is int and v > 0 for v in grid))
    if not ok_grid or not (isinstance(cells, list) and len(cells) == n_tokens and all(
            type(c) is int and 0 <= c < grid[0] * grid[1] for c in cells)):
        raise ValueError(f"meta.json: token_grid must be [rows, cols] and token_cells {n_tokens} cell indices "
                         "of that grid")
    return (grid[0], grid[1]), cells


def grid(images: UInt8[np.ndarray, "k H W 3"], boxes: Sequence, has_trait: Sequence[bool]
         ) -> UInt8[np.ndarray, "h w 3"]:
    """The images in a row, each with its box outlined (green: has the trait, red: does not)."""
    from torchvision.utils import draw_bounding_boxes, make_grid

    scale = max(1, -(-MIN_SIDE // min(images.shape[1:3])))
    tiles = []
    for image, box, yes in zip(images, boxes, has_trait):
        tile = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
        tile = tile.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        if box is not None:
            x0, y0, x1, y1 = box
            scaled = torch.tensor([[x0 * scale, y0 * scale, (x1 + 1) * scale - 1, (y1 + 1) * scale - 1]])
            tile = draw_bounding_boxes(tile, scaled, colors="lime" if yes else "red", width=max(2, scale))
        tiles.append(tile)
    return make_grid(tiles, nrow=len(tiles), padding=4, pad_value=255).permute(1, 2, 0).numpy()


def write(out_dir: Path, pictures: Sequence[TraitPicture], images: dict[int, np.ndarray], n_tokens: int,
          title: str, token_grid: tuple[int, int] | None = None, cells: Sequence[int] | None = None) -> Path:
    """One `trait_<index>.png` per trait and `index.html` under `out_dir`; returns the index page's path.
    `images` maps test-split index -> uint8 (H, W, 3) image; `token_grid`, `cells` locate tokens (`patch_box`)."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for pic in pictures:
        shown = np.stack([images[int(i)] for i in pic.image_ids])
        h, w = shown.shape[1:3]
        boxes = [patch_box(p, n_tokens, h, w, token_grid, cells) for p in pic.patch]
        file = f"trait_{pic.trait:04d}.png"
        Image.fromarray(grid(shown, boxes, pic.has_trait)).save(out_dir / file)
        hits = int(pic.has_trait.sum())
        rows.append(f"<tr><td>{pic.trait}</td><td>{html.escape(pic.name)}</td><td>{pic.prototype}</td>"
                    f"<td>{pic.test_ap:.3f}</td><td>{hits}/{len(pic.has_trait)}</td>"
                    f'<td><img src="{file}" alt="{html.escape(pic.name, quote=True)}"></td></tr>')
    page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}td{padding:4px;vertical-align:middle}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Per trait: its prototype's top test images, best patch "
            "outlined (green: the image has the trait, red: it does not).</p><table>"
            "<tr><th>#</th><th>trait</th><th>prototype</th><th>test AP</th><th>top images with trait</th>"
            "<th>images</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>\n")
    index = out_dir / "index.html"
    index.write_text(page)
    return index


def data_config(dataset: dict) -> DataConfig:
    """The DataConfig a cache recorded in its meta (fields this version does not know are dropped)."""
    known = {f.name for f in fields(DataConfig)}
    return DataConfig(**{k: v for k, v in dataset.items() if k in known})


def write_for_score(cfg, ctx, scorer: Scorer, result, test_scores: Float[Tensor, "N K"], test_shards,
                    test_traits: Bool[np.ndarray, "N T"], names: Sequence[str], device) -> str:
    """The score job's pictures of its test split under `<run_dir>/pictures/`; returns the index page's path
    relative to the run dir, or "" (and a log line) when the images cannot be read (a cache whose dataset root
    is gone)."""
    import json

    from nfjobs.data import check, open_split

    if cfg.pictures_top_k == 0:
        return ""
    token_grid = cells = None
    if cfg.activations == BUILTIN_PIXELS:
        data, split = cfg.data, cfg.eval_split
    else:
        meta = json.loads((ctx.resolve(cfg.activations) / cfg.eval_split / META).read_text())
        if "dataset" not in meta:
            ctx.log("pictures skipped: the cache's meta.json does not say which images it holds")
            return ""
        data, split = data_config(meta["dataset"]), meta.get("split", cfg.eval_split)
        try:
            token_grid, cells = token_layout(meta, test_shards[0].shape[1])
        except ValueError as err:
            ctx.log(f"pictures skipped: {err}")
            return ""
    problems = check(data, splits=(split,))
    if problems:
        ctx.log(f"pictures skipped: {'; '.join(m for _, m in problems)}")
        return ""
    pictures = top_patches(scorer, test_shards, test_scores, result.prototype, test_traits, names, result.test_ap,
                           k=cfg.pictures_top_k, device=device)
    ids = sorted({int(i) for pic in pictures for i in pic.image_ids})
    reader = open_split(data, split)
    images = dict(zip(ids, (im for batch in reader.batches(ids, 64) for im in batch)))
    title = f"{cfg.scorer}, {test_scores.shape[1]} prototypes, n_train {cfg.n_train}: {cfg.activations} ({split})"
    index = write(Path(ctx.run_dir) / FOLDER, pictures, images, test_shards[0].shape[1], title, token_grid, cells)
    ctx.log(f"pictures of {len(pictures)} traits: {index}")
    return index.relative_to(ctx.run_dir).as_posix()
