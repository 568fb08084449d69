"""Input preprocessing fitted on the training split and applied to uint8 batches.

Kinds:
- ``scale``: x / 255 (the paper's MNIST setting).
- ``standardize``: per-channel (x/255 - mean) / std (a modern default).
- ``gcn_zca``: the maxout / FitNets CIFAR setting. Global contrast normalisation per image
  on raw 0..255 values, ``z = x - mean(x); z = scale * z / max(sqrt(sqrt_bias + mean(z^2)),
  1e-8)`` with scale=55, sqrt_bias=10 (pylearn2's constants), then pylearn2-style ZCA fitted
  in float64: ``W = V diag(1 / sqrt(e + filter_bias)) V^T`` from the eigendecomposition of
  the training covariance, applied as ``(z - mu) @ W``.
- ``gcn_zca_pylearn2``: the same, with GCN as the authors' data were made
  (pylearn2's ``make_cifar10_gcn_whitened.py`` calls ``CIFAR10(gcn=55.)``, i.e.
  ``global_contrast_normalize(X, scale=55.)`` with its defaults use_std=False, sqrt_bias=0:
  ``z = 55 * z / sqrt(sum(z^2))``, a norm over the 3072 features rather than our RMS, so
  every image has L2 norm 55 instead of RMS ~55; pylearn2/expr/preprocessing.py lines
  63-93). The ZCA's filter_bias 0.1 is then large relative to the data's eigenvalues (their
  mean is ~1 instead of ~3072), so it damps the low-variance directions much more.
- ``lcn``: the maxout SVHN setting. Local contrast normalisation per image and channel with
  a 7x7 gaussian window (sigma 2): subtract the local mean, divide by max(local std, the
  image's mean local std). Uses ``conv2d`` so it runs on any device; it needs no fitting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fitnets.errors import FitnetsError
from fitnets.names import PREPROCESS  # data.preprocess's choices too

_DEFAULTS: dict[str, dict[str, float]] = {
    "scale": {}, "standardize": {},
    "gcn_zca": {"scale": 55.0, "sqrt_bias": 10.0, "filter_bias": 0.1},
    "gcn_zca_pylearn2": {"scale": 55.0, "sqrt_bias": 0.0, "filter_bias": 0.1},
    "lcn": {"kernel_size": 7.0, "sigma": 2.0},
}
_CHUNK = 2048  # images per step while fitting: bounds float64 memory on 50k images


class Preprocess:
    """A fitted preprocessing: ``kind``, float ``params`` and fitted ``tensors``."""

    def __init__(self, kind: str, params: dict[str, float] | None = None,
                 tensors: dict[str, torch.Tensor] | None = None):
        self.kind = kind
        self.params = dict(params or {})
        self.tensors = dict(tensors or {})

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """float32 output of the same shape and device as the uint8 input."""
        if self.kind == "none":  # a Python dataset's tensors, as its transforms made them:
            # float32, or integer token ids (a text model's input_ids) kept as they are
            return x_uint8 if not x_uint8.is_floating_point() else x_uint8.float()
        x = x_uint8.float()
        if self.kind == "scale":
            return x / 255.0
        if self.kind == "standardize":
            mean, std = self.tensors["mean"], self.tensors["std"]
            return (x / 255.0 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        if self.kind in ("gcn_zca", "gcn_zca_pylearn2"):
            z = gcn(x.flatten(1), self.params["scale"], self.params["sqrt_bias"],
                    total=self.kind == "gcn_zca_pylearn2")
            return ((z - self.tensors["mean"]) @ self.tensors["W"]).view_as(x)
        return lcn(x / 255.0, int(self.params["kernel_size"]), self.params["sigma"])

    def state_dict(self) -> dict[str, torch.Tensor | str | float]:
        """Everything needed to rebuild this object (tensors on CPU)."""
        d: dict[str, torch.Tensor | str | float] = {"kind": self.kind}
        d.update({k: float(v) for k, v in self.params.items()})
        d.update({k: v.detach().cpu() for k, v in self.tensors.items()})
        return d

    @classmethod
    def from_state_dict(cls, d: dict) -> Preprocess:
        kind = d.get("kind")
        if kind not in (*PREPROCESS, "none"):  # none: a Python dataset's run
            raise FitnetsError(f"Preprocessing state has kind {kind!r}; expected one of "
                               f"{PREPROCESS}. The checkpoint is damaged or from another tool.")
        params = {k: float(v) for k, v in d.items() if k != "kind"
                  and not isinstance(v, torch.Tensor)}
        tensors = {k: v for k, v in d.items() if isinstance(v, torch.Tensor)}
        return cls(kind, params, tensors)

    def to(self, device: torch.device | str) -> Preprocess:
        """Move fitted tensors to ``device`` (in place) and return self."""
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        return self

    def __repr__(self) -> str:
        return f"Preprocess(kind={self.kind!r}, params={self.params})"


def gcn(x: torch.Tensor, scale: float = 55.0, sqrt_bias: float = 10.0,
        total: bool = False) -> torch.Tensor:
    """Global contrast normalisation of each row of (N, D) ``x`` (formula in module doc).

    ``total``: pylearn2's default norm, sqrt(sqrt_bias + sum(z^2)), where a row whose
    divisor (norm / scale) is below 1e-8 is left undivided, instead of our sqrt(sqrt_bias +
    mean(z^2))."""
    z = x - x.mean(dim=1, keepdim=True)
    if total:
        divisor = torch.sqrt(sqrt_bias + z.pow(2).sum(dim=1, keepdim=True)) / scale
        return z / torch.where(divisor < 1e-8, torch.ones_like(divisor), divisor)
    norm = torch.sqrt(sqrt_bias + z.pow(2).mean(dim=1, keepdim=True)).clamp_min(1e-8)
    return scale * z / norm


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """(size, size) gaussian window summing to 1."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def lcn(x: torch.Tensor, kernel_size: int = 7, sigma: float = 2.0) -> torch.Tensor:
    """Local contrast normalisation of float (N, C, H, W), per image and channel."""
    c = x.shape[1]
    k = gaussian_kernel(kernel_size, sigma).to(x.device, x.dtype).expand(c, 1, -1, -1)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        # Dividing by the window's in-image weight keeps border means unbiased by the padding.
        s = F.conv2d(t, k, padding=kernel_size // 2, groups=c)
        return s / F.conv2d(torch.ones_like(t[:1]), k, padding=kernel_size // 2, groups=c)

    centred = x - local_mean(x)
    std = local_mean(centred.pow(2)).clamp_min(0).sqrt()
    floor = std.mean(dim=(2, 3), keepdim=True)  # flat regions are not blown up
    return centred / torch.maximum(std, floor).clamp_min(1e-4)


def _chunks(x: torch.Tensor):
    # at most _CHUNK images and 2**25 values (256 MiB of float64) a step: 224px images too
    step = max(1, min(_CHUNK, 2**25 // max(1, x[0].numel())))
    for i in range(0, len(x), step):
        yield x[i:i + step].double()


def _fit_standardize(x: torch.Tensor) -> dict[str, torch.Tensor]:
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    sq = torch.zeros_like(s)
    for b in _chunks(x):
        b = b / 255.0
        s += b.sum(dim=(0, 2, 3))
        sq += b.pow(2).sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / count
    std = (sq / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-8)
    return {"mean": mean.float(), "std": std.float()}


def fit_zca(rows, dim: int, filter_bias: float) -> dict[str, torch.Tensor]:
    """ZCA from an iterable of float64 (n, dim) chunks: mean and whitening matrix W."""
    s = torch.zeros(dim, dtype=torch.float64)
    xtx = torch.zeros(dim, dim, dtype=torch.float64)
    n = 0
    for b in rows:
        s += b.sum(0)
        xtx += b.T @ b
        n += len(b)
    mean = s / n
    cov = xtx / n - torch.outer(mean, mean)
    e, v = torch.linalg.eigh(cov + filter_bias * torch.eye(dim, dtype=torch.float64))
    w = (v * e.clamp_min(1e-12).rsqrt()) @ v.T
    return {"mean": mean.float(), "W": w.float()}


def fit_preprocess(kind: str, x_train_uint8: torch.Tensor, **options) -> Preprocess:
    """Fit preprocessing ``kind`` (one of PREPROCESS) on uint8 (N, C, H, W) training images."""
    if kind not in PREPROCESS:
        raise FitnetsError(f"Unknown preprocessing {kind!r}; choose one of "
                           f"{', '.join(PREPROCESS)}.")
    bad = sorted(set(options) - set(_DEFAULTS[kind]))
    if bad:
        raise FitnetsError(f"Unknown option(s) {', '.join(bad)} for preprocessing {kind!r}; "
                           f"valid: {', '.join(_DEFAULTS[kind]) or 'none'}.")
    params = {**_DEFAULTS[kind], **{k: float(v) for k, v in options.items()}}
    x = x_train_uint8.cpu()
    tensors: dict[str, torch.Tensor] = {}
    if kind == "standardize":
        tensors = _fit_standardize(x)
    elif kind in ("gcn_zca", "gcn_zca_pylearn2"):
        flat = x.flatten(1)
        rows = (gcn(b, params["scale"], params["sqrt_bias"], kind == "gcn_zca_pylearn2")
                for b in _chunks(flat))
        tensors = fit_zca(rows, flat.shape[1], params["filter_bias"])
    return Preprocess(kind, params, tensors).to(x_train_uint8.device)
