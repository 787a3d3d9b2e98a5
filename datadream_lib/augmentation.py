"""The classifier's training augmentation (docs/hyperparameters.md §3), run on the device.

The authors' list, per image: RandAugment (2 ops, magnitude 9), RandomResizedCrop (224, scale
0.25-1, bicubic), horizontal flip, ColorJitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2,
Gaussian blur p 0.2 (their own class around PIL's `ImageFilter.GaussianBlur(radius=sigma)`, sigma
0.1-2), solarize (128) p 0.2 (the blur's and solarize's coins from Python's `random`), then CLIP's
normalisation. Our blur is torchvision's Gaussian of std sigma on a `size // 20 | 1` kernel (11 px at
224): a true Gaussian where PIL approximates one with box blurs, within a level on average and 9 at
most (README, "Where we differ"); `clf_blur: pil` applies the authors' PIL blur instead. `authors_transform` is that list on PIL images with torchvision's
blur, in the authors' loader workers' place (the reference of the draws' test and the benchmark): decoding a 512-px PNG and augmenting it takes ~14 ms of a core, so 16 cores feed
~600 images/s to a GPU that trains on 1,440.

Here the loader workers only decode (`read_image`: uint8 tensors), and `DeviceAugment` runs the
same torchvision operations, with the same magnitudes, on the device:
- per image, torchvision's own modules on the tensor: RandAugment, RandomResizedCrop and the flip
  (the images differ in size until the crop; each is a few kernels);
- per batch, the colour operations at 224 px, vectorised with each image's own parameters and in
  each image's own order (ColorJitter's permutation), with the arithmetic of torchvision's tensor
  functions (`adjust_brightness` ... `solarize`); a test compares them image by image.
Every random parameter is drawn on the host with torchvision's own `get_params`, per image in the
authors' order, from a generator seeded by the batch (`seed`): the augmentation no longer depends on
the number of loader workers. The tensor operations differ from the PIL ones by interpolation and
rounding details only (tested: same draws, images within a few levels).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import _functional_tensor as TF  # torchvision's tensor colour functions

from datadream_lib import models, schema
from datadream_lib.splits import load_rgb

BICUBIC = transforms.InterpolationMode.BICUBIC


def test_transform(size: int):
    """CLIP's evaluation transform: the shorter side to `size` (bicubic), a centre crop, CLIP's normalisation."""
    return transforms.Compose([
        transforms.Resize(size, interpolation=BICUBIC), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize(models.CLIP_MEAN, models.CLIP_STD),
    ])
JITTER_P, GRAYSCALE_P, BLUR_P, SOLARIZE_P = 0.8, 0.2, 0.2, 0.2
SOLARIZE_THRESHOLD = 128
BLUR_SIGMA = (0.1, 2.0)


def batch_seed(*words: int) -> int:
    """The seed of one batch's augmentation draws, hashed from (run seed, epoch, step)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, dtype=np.uint64)[0] >> 1)


def blur_kernel_size(size: int) -> int:
    return max(3, (size // 20) | 1)


def crop_flip_operations(size: int) -> list:
    """The list's crop and flip: all of `clf_augment: crop_flip` (no operation that changes a colour)."""
    return [transforms.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=BICUBIC), transforms.RandomHorizontalFlip()]


def geometric_operations(size: int) -> list:
    """The per-image part of the list (before any colour operation): RandAugment, the crop, the flip."""
    return [transforms.RandAugment()] + crop_flip_operations(size)


def authors_operations(size: int) -> list:
    """The authors' augmentation list, as torchvision transforms (PIL images or uint8 tensors)."""
    return geometric_operations(size) + [
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=JITTER_P),
        transforms.RandomGrayscale(p=GRAYSCALE_P),
        transforms.RandomApply([transforms.GaussianBlur(kernel_size=blur_kernel_size(size), sigma=BLUR_SIGMA)], p=BLUR_P),
        transforms.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=SOLARIZE_P),
    ]


def authors_transform(size: int):
    """The authors' training transform on PIL images (what their loader workers run per image)."""
    return transforms.Compose(authors_operations(size) + [transforms.ToTensor(),
                                                          transforms.Normalize(models.CLIP_MEAN, models.CLIP_STD)])


def read_image(path: str) -> torch.Tensor:
    """An image file as a uint8 (3, H, W) tensor: torchvision's decoder (the loader workers' only
    work); PIL where it cannot read the file (CMYK JPEG, palette GIF, ...)."""
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return transforms.functional.pil_to_tensor(load_rgb(path))


def to_device(values, device: torch.device, dtype=None) -> torch.Tensor:
    """A small host tensor on the device without waiting for the device's queued work (a blocking
    copy would make the host wait for the previous training step)."""
    return torch.as_tensor(values, dtype=dtype).to(device, non_blocking=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> CLIP-normalised float: ToTensor's /255, then Normalize."""
    mean = to_device(models.CLIP_MEAN, images.device).view(1, 3, 1, 1)
    std = to_device(models.CLIP_STD, images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


# --- the colour operations, vectorised over a batch with per-image parameters --------------------
# Each follows torchvision's tensor function for uint8 images (transforms/_functional_tensor.py).

def _blend(img1: torch.Tensor, img2: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """TF._blend with one ratio per image (float64 on the host, as torchvision's Python floats)."""
    r = ratio.view(-1, 1, 1, 1)
    return (r.float() * img1 + (1.0 - r).float() * img2).clamp(0, 255).to(torch.uint8)


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    return TF.rgb_to_grayscale(img)  # (B, 1, H, W) uint8, batched already


def adjust_brightness(img, factor):
    return _blend(img, torch.zeros_like(img), factor)


def adjust_contrast(img, factor):
    mean = torch.mean(_grayscale(img).to(torch.float32), dim=(-3, -2, -1), keepdim=True)
    return _blend(img, mean, factor)


def adjust_saturation(img, factor):
    return _blend(img, _grayscale(img), factor)


def adjust_hue(img, factor):
    hsv = TF._rgb2hsv(img.to(torch.float32) / 255.0)
    h, s, v = hsv.unbind(dim=-3)
    h = (h + factor.float().view(-1, 1, 1)) % 1.0
    rgb = TF._hsv2rgb(torch.stack((h, s, v), dim=-3))
    return rgb.mul(255.0 + 1.0 - 1e-3).to(torch.uint8)  # TF.convert_image_dtype(float -> uint8)


def gaussian_blur(img, sigma, kernel_size: int):
    """TF.gaussian_blur with one sigma per image: one grouped convolution for the batch."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=torch.float32, device=img.device)
    pdf = torch.exp(-0.5 * (x / sigma.float().view(-1, 1)).pow(2))
    k1 = pdf / pdf.sum(dim=1, keepdim=True)
    k2 = k1[:, :, None] * k1[:, None, :]  # (B, k, k): torch.mm(k1[:, None], k1[None, :]) per image
    n, c, h, w = img.shape
    weight = k2.repeat_interleave(c, dim=0)[:, None]  # (B*3, 1, k, k)
    pad = kernel_size // 2
    out = F.pad(img.to(torch.float32).reshape(1, n * c, h, w), [pad, pad, pad, pad], mode="reflect")
    out = F.conv2d(out, weight, groups=n * c).reshape(n, c, h, w)
    return torch.round(out).to(torch.uint8)


JITTER_OPERATIONS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # ColorJitter's fn_idx order


def _apply(img: torch.Tensor, mask: torch.Tensor, operation, *args) -> torch.Tensor:
    """img with `operation(img[mask], *per-image args[mask])` written back; the others untouched.
    `mask` and the per-image args are host tensors: choosing the rows never waits for the device."""
    rows = mask.nonzero().flatten()
    if len(rows) == 0:
        return img
    index = to_device(rows, img.device)
    img = img.clone()
    img[index] = operation(img[index], *(to_device(a[rows], img.device) if isinstance(a, torch.Tensor) else a
                                         for a in args))
    return img


def pil_gaussian_blur(img, sigma):
    """The authors' blur: PIL's `ImageFilter.GaussianBlur(radius=sigma)` per image, on the host (it
    approximates a Gaussian with box blurs); uint8 (B, 3, H, W) in and out, on img's device."""
    from PIL import Image, ImageFilter

    out = []
    for image, s in zip(img.cpu(), sigma.tolist()):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(radius=s))
        out.append(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
    return torch.stack(out).to(img.device)


BLURS = schema.FIELDS["clf_blur"].metadata["choices"]
# `clf_augment`: the authors' list, or only its crop and flip, for classes that are colours (the
# toy world's): hue jitter, grayscale, solarize and RandAugment's Color/Solarize/Posterize change
# or erase the class itself (docs/toyworld.md).
AUGMENTATIONS = schema.FIELDS["clf_augment"].metadata["choices"]


class DeviceAugment:
    """The authors' augmentation of a batch of uint8 images (a list: sizes may differ) on `device`;
    returns CLIP-normalised float images (B, 3, size, size). `blur`: "gaussian" (a true Gaussian on
    the device) or "pil" (the authors' PIL blur, on the host, for the blurred images only).
    `augment="crop_flip"`: the list's crop and flip only, no colour operation."""

    def __init__(self, size: int, device: torch.device, blur: str = "gaussian", augment: str = "authors"):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment {augment!r}: one of {AUGMENTATIONS}")
        self.size, self.device = size, device
        self.blur_filter, self.colours = blur, augment == "authors"
        self.per_image = transforms.Compose(geometric_operations(size) if self.colours else crop_flip_operations(size))
        ops = authors_operations(size)
        self.jitter = ops[3].transforms[0]
        self.blur = ops[5].transforms[0]

    def _colour_draws(self) -> tuple:
        """One image's colour draws, in the order and with the calls of the authors' transforms."""
        jitter = None
        if not JITTER_P < torch.rand(1):  # RandomApply: skipped when p < u
            fn_idx, b, c, s, h = transforms.ColorJitter.get_params(self.jitter.brightness, self.jitter.contrast,
                                                                   self.jitter.saturation, self.jitter.hue)
            jitter = (fn_idx.tolist(), (b, c, s, h))
        gray = bool(torch.rand(1) < GRAYSCALE_P)
        sigma = None
        if not BLUR_P < torch.rand(1):
            sigma = transforms.GaussianBlur.get_params(self.blur.sigma[0], self.blur.sigma[1])
        solarize = bool(torch.rand(1).item() < SOLARIZE_P)
        return jitter, gray, sigma, solarize

    def __call__(self, images: list[torch.Tensor], seed: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            crops, draws = [], []
            for image in images:
                crops.append(self.per_image(image.to(self.device, non_blocking=True)))
                if self.colours:
                    draws.append(self._colour_draws())
        return normalize(self.colour(torch.stack(crops), draws) if self.colours else torch.stack(crops))

    def colour(self, img: torch.Tensor, draws: list[tuple]) -> torch.Tensor:
        """ColorJitter (each image's permutation), grayscale, blur, solarize: batched. (Inside
        RandAugment, torchvision's Equalize and AutoContrast read the device; nothing here does.)"""
        n = len(draws)
        order = torch.full((n, 4), -1, dtype=torch.long)
        factors = torch.ones((n, 4), dtype=torch.float64)
        for i, (jitter, _, _, _) in enumerate(draws):
            if jitter is not None:
                order[i] = torch.tensor(jitter[0])
                factors[i] = torch.tensor(jitter[1], dtype=torch.float64)
        for position in range(4):  # the k-th operation of every jittered image, in its own order
            for op_id, operation in enumerate(JITTER_OPERATIONS):
                img = _apply(img, order[:, position] == op_id, operation, factors[:, op_id])
        gray = to_device([d[1] for d in draws], img.device).view(-1, 1, 1, 1)
        img = torch.where(gray, _grayscale(img).expand_as(img), img)
        blur = torch.tensor([d[2] is not None for d in draws])
        sigma = torch.tensor([d[2] or 1.0 for d in draws], dtype=torch.float64)
        if self.blur_filter == "pil":
            img = _apply(img, blur, pil_gaussian_blur, sigma)
        else:
            img = _apply(img, blur, gaussian_blur, sigma, blur_kernel_size(self.size))
        solarize = to_device([d[3] for d in draws], img.device).view(-1, 1, 1, 1)
        return torch.where(solarize & (img >= SOLARIZE_THRESHOLD), 255 - img, img)
