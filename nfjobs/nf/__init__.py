"""Neural-field building blocks shared by model families.

- `nfjobs.nf.config`: `NceConfig` (light, no torch);
- `nfjobs.nf.fields`: coordinate grids, Gaussian Fourier features, bilinear sampling, sparse-context selection;
- `nfjobs.nf.views`: random affine views with their known coordinate map (for Soft-InfoNCE);
- `nfjobs.nf.nce`: the Soft-InfoNCE loss.

Coordinates are `(y, x)` in [-1, 1] (row-major: pixel `(i, j)` of an `H×W` image sits at
`(-1 + 2i/(H-1), -1 + 2j/(W-1))`), so a flattened grid follows the raster order of the image.
"""
