"""Classical saliency maps that need no fixation data: the spectral residual and the centre-bias prior.

Labelled baselines for `ser precompute --method NAME`, so a data file without maps (an image folder) can still give
SER its targets, and a learned predictor can be measured against what needs no training.

- `spectral-residual` follows Hou & Zhang, "Saliency Detection: A Spectral Residual Approach" (CVPR 2007): the grey
  image's log-amplitude spectrum L minus its 3x3 local mean is the spectral residual R; the map is |IFFT(exp(R + iP))|^2
  with the original phase P, blurred by a Gaussian and min-max normalised. The paper shrinks images to 64 px width and
  blurs with sigma 8 px. Here an image wider than 64 px (SynthSal's default 64x96, the SER paper's 288x384) is shrunk to
  64 px width at its aspect ratio (bilinear, antialiased) and the map resized back; a narrower one (the demo's 32x48) is
  used as it is, since upsampling adds no information, and sigma scales with the width worked at (8 * w / 64: 6 px at
  48), so the blur is 1/8 of the image's width at every size. Choices the paper leaves open: grey is ITU-R BT.601 luma
  (MATLAB's `rgb2gray`, used by the authors' code); everything lives on the torus the FFT defines: the 3x3 mean wraps
  around the spectrum (the authors' `imfilter(..., 'replicate')` on the unshifted spectrum breaks its Hermitian
  symmetry) and so does the blur (`scipy.ndimage.gaussian_filter(mode="wrap", truncate=3)`; zero padding, MATLAB's
  default, would darken the borders into a second centre prior); a frequency with no amplitude (below 1e-12 of the peak)
  has no phase and adds nothing, so a constant image gives a flat map, stored as all zeros (readers read that as
  uniform). The authors' code blurs with sigma 2.5 px; the paper's text says 8, which is used here.
- `center-bias` is the Gaussian centre prior `ser pretrain-saliency` scores as its baseline
  (`ser_cli.metrics.saliency.center_bias_map`, one implementation): one map for every image, centred, standard
  deviations a quarter of the height and a quarter of the width, so it stretches with the aspect ratio as the centre
  baseline of the MIT saliency benchmark does (a Gaussian fitted to the image's aspect ratio; Judd, Durand & Torralba,
  MIT-CSAIL-TR-2012-001). A quarter keeps about 91 % of the mass inside the image (+-2 sigma on each axis). Stored as
  the prior itself, 255 at the centre (not min-max normalised): it is the density pretrain-saliency scores.

Pure torch, batched, on the CPU (a 64-px FFT costs less than reading the image; the spectrum in float64), so the
stored bytes do not depend on `--device` or on how rows are batched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ser_cli.metrics.saliency import center_bias_map
from ser_cli.runtime.registry import Registry

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, MATLAB rgb2gray
AMPLITUDE_FLOOR = 1e-12  # relative to each spectrum's peak: below it a frequency is absent (no phase)
FLAT = 1e-9  # a map whose range is below this fraction of its peak is flat

CLASSICAL = Registry("saliency method", "--method")


@dataclass(frozen=True)
class ClassicalMethod:
    """A named classical map: uint8 images (B, 3, H, W) -> float64 maps (B, H, W) in [0, 1], with its settings."""

    name: str
    fn: Callable[..., Tensor]
    settings: dict[str, Any] = field(default_factory=dict)

    def __call__(self, images: Tensor) -> Tensor:
        return self.fn(images, **self.settings)


def grey(images: Tensor) -> Tensor:
    """uint8 or [0, 255] images (B, 3, H, W) -> float32 luma (B, H, W) in [0, 1]."""
    x = images.to(torch.float32)
    return (x[:, 0] * LUMA[0] + x[:, 1] * LUMA[1] + x[:, 2] * LUMA[2]) / 255.0


def spectral_residual(grey_maps: Tensor) -> Tensor:
    """Hou & Zhang's saliency before the blur: (B, h, w) float -> |IFFT(exp(R + iP))|^2 (B, h, w) float64."""
    spectrum = torch.fft.fft2(grey_maps.to(torch.float64))  # (B, h, w) complex
    amplitude = spectrum.abs()
    floor = AMPLITUDE_FLOOR * amplitude.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    present = amplitude > floor
    log_amp = amplitude.clamp_min(floor).log()  # (B, h, w)
    padded = F.pad(log_amp[:, None], (1, 1, 1, 1), mode="circular")  # (B, 1, h + 2, w + 2): the spectrum wraps
    residual = log_amp - F.avg_pool2d(padded, 3, stride=1)[:, 0]  # (B, h, w)
    phase = torch.where(present, spectrum / amplitude.clamp_min(floor), torch.zeros_like(spectrum))  # e^{iP}
    return torch.fft.ifft2(residual.exp() * phase).abs() ** 2


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, h, w) on the torus (the inverse FFT's map is periodic), cut at 3 sigma.

    The same as `scipy.ndimage.gaussian_filter(maps[i], sigma, mode="wrap", truncate=3.0)`, at any image size.
    """
    height, width = maps.shape[-2:]
    return torch.einsum("ij,bjk,lk->bil", _circulant(height, sigma), maps, _circulant(width, sigma))


def _circulant(n: int, sigma: float) -> Tensor:
    """(n, n) float64 matrix of a 1-D Gaussian filter with wrap-around: (K @ x)[i] = sum_d g(d) x[(i + d) mod n]."""
    radius = int(3.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1)  # (2r + 1,)
    weights = torch.exp(-0.5 * (taps.double() / sigma) ** 2)
    weights = weights / weights.sum()
    columns = (torch.arange(n)[:, None] + taps[None, :]) % n  # (n, 2r + 1): taps beyond the image wrap around
    return torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, columns, weights.expand(n, -1).contiguous())


def min_max(maps: Tensor) -> Tensor:
    """Each map (B, H, W) rescaled to [0, 1] (MATLAB's mat2gray); a flat map becomes all zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    flat = span <= FLAT * (low.abs() + span)
    return (maps - low) * torch.where(flat, torch.zeros_like(span), 1.0 / torch.where(flat, 1.0, span))


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, *size), bilinear, antialiased when shrinking; unchanged when already that size."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0]


def spectral_residual_maps(images: Tensor, working_width: int = 64, blur_sigma: float = 8.0) -> Tensor:
    """Hou & Zhang's saliency of uint8 images (B, 3, H, W): float32 maps (B, H, W) in [0, 1].

    Args:
        images: RGB images, values in [0, 255].
        working_width: Wider images are shrunk to this width (the paper's 64 px) at their aspect ratio; narrower
            ones are used as they are (upsampling adds no information).
        blur_sigma: Gaussian blur in pixels at `working_width` (the paper's 8), scaled with the width worked at.
    """
    height, width = images.shape[-2:]
    work_w = min(width, working_width)
    work = (max(1, round(work_w * height / width)), work_w)
    small = _resize(grey(images.cpu()), work)  # (B, h, w) float32
    saliency = gaussian_blur(spectral_residual(small), blur_sigma * work_w / working_width)  # (B, h, w) float64
    return min_max(_resize(saliency.float(), (height, width)))  # (B, H, W) float32


def center_bias_maps(images: Tensor, sigma_frac: float = 0.25) -> Tensor:
    """The Gaussian centre prior for every image (B, 3, H, W): float64 maps (B, H, W), peak 1 (not min-max)."""
    height, width = images.shape[-2:]
    prior = center_bias_map(height, width, sigma_frac, dtype=torch.float64)  # (H, W), sum 1
    return (prior / prior.max()).expand(images.shape[0], height, width)


CLASSICAL.register("spectral-residual")(
    ClassicalMethod("spectral-residual", spectral_residual_maps, {"working_width": 64, "blur_sigma": 8.0})
)
CLASSICAL.register("center-bias")(ClassicalMethod("center-bias", center_bias_maps, {"sigma_frac": 0.25}))


def classical_method(name: str) -> ClassicalMethod:
    """The classical method registered as `name` (an unknown name is a one-line UserError listing them)."""
    return CLASSICAL.lookup(name)

