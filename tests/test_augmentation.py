"""The classifier's augmentation on the device: the authors' torchvision operations and magnitudes,
the same random draws, batched colour operations equal to torchvision's per-image ones."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision import transforms

from datadream_lib import augmentation, splits

SIZE = 32


def _images(n=30, seed=0):
    """Smooth images of several sizes (real shots differ in size; synthetic ones are square)."""
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (64, 64) if i % 3 else (40 + i, 70)
        coarse = Image.fromarray((g.random((h // 8, w // 8, 3)) * 255).astype(np.uint8))
        out.append(transforms.functional.pil_to_tensor(coarse.resize((w, h), Image.BICUBIC)))
    return out


def _per_image(images, seed, pil=False):
    """The authors' list applied image by image (torchvision's own modules), same seed."""
    ops = transforms.Compose(augmentation.authors_operations(SIZE))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if pil:
            out = [transforms.functional.pil_to_tensor(ops(transforms.functional.to_pil_image(im))) for im in images]
        else:
            out = [ops(im) for im in images]
    return augmentation.normalize(torch.stack(out))


def _levels(a, b):
    """|a - b| in 0-255 levels (undoing CLIP's normalisation)."""
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    return (a - b).abs() * std * 255


def test_batched_augmentation_equals_torchvision_image_by_image():
    images = _images()
    augment = augmentation.DeviceAugment(SIZE, torch.device("cpu"))
    ours = augment(images, seed=5)
    assert ours.shape == (len(images), 3, SIZE, SIZE) and ours.dtype == torch.float32
    assert _levels(ours, _per_image(images, 5)).max() <= 1.0 + 1e-3  # measured: 0 (identical)
    with torch.random.fork_rng(devices=[]):  # every colour operation was exercised by this batch
        torch.manual_seed(5)
        draws = []
        for image in images:
            augment.per_image(image)
            draws.append(augment._colour_draws())
    jitter, gray, blur, solarize = ([d[k] for d in draws] for k in range(4))
    assert 0 < sum(j is not None for j in jitter) < len(images)
    assert len({tuple(j[0]) for j in jitter if j}) > 1  # several orders of ColorJitter's operations
    assert any(gray) and any(b is not None for b in blur) and any(solarize)


def test_same_draws_as_the_authors_pil_pipeline():
    """The tensor operations differ from PIL's only by interpolation and rounding details."""
    images = _images(seed=1)
    ours = augmentation.DeviceAugment(SIZE, torch.device("cpu"))(images, seed=9)
    diff = _levels(ours, _per_image(images, 9, pil=True)).flatten(1).mean(1)
    assert diff.max() < 3.0  # measured: 0.15-1.7 levels per image
    other = _levels(ours, _per_image(images, 10, pil=True)).flatten(1).mean(1)
    assert other.mean() > 5 * diff.mean()  # other draws: other images


def test_augmentation_is_seeded_by_the_batch_alone():
    images = _images(8)
    augment = augmentation.DeviceAugment(SIZE, torch.device("cpu"))
    torch.manual_seed(123)
    a = augment(images, seed=augmentation.batch_seed(0, 1, 2))
    torch.rand(7)  # the global generator is neither read nor advanced
    state = torch.get_rng_state()
    b = augment(images, seed=augmentation.batch_seed(0, 1, 2))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())
    assert not torch.equal(a, augment(images, seed=augmentation.batch_seed(0, 1, 3)))


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA"])
def test_read_image_decodes_as_the_pil_loader(tmp_path, mode):
    g = np.random.default_rng(0)
    image = Image.fromarray((g.random((20, 30, 3)) * 255).astype(np.uint8)).convert(mode)
    path = tmp_path / "x.png"
    image.save(path)
    assert torch.equal(augmentation.read_image(str(path)), transforms.functional.pil_to_tensor(splits.load_rgb(path)))


def test_clf_blur_pil_is_the_authors_pil_blur_exactly():
    g = np.random.default_rng(3)
    img = torch.from_numpy((g.random((3, 3, 40, 48)) * 255).astype(np.uint8))
    sigma = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    ours = augmentation.pil_gaussian_blur(img, sigma)
    for image, s, got in zip(img, sigma.tolist(), ours):
        want = Image.fromarray(image.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(radius=s))
        assert torch.equal(got, torch.from_numpy(np.asarray(want).copy()).permute(2, 0, 1))
    # the batch path applies it to the blurred images only, with the same draws as the default
    images = _images()
    pil = augmentation.DeviceAugment(SIZE, torch.device("cpu"), blur="pil")(images, seed=5)
    gaussian = augmentation.DeviceAugment(SIZE, torch.device("cpu"))(images, seed=5)
    changed = (pil != gaussian).flatten(1).any(1)
    assert 0 < changed.sum() < len(images)


def test_crop_flip_is_the_lists_crop_and_flip_and_keeps_every_colour():
    """`clf_augment: crop_flip` (the toy world's: its classes are colours) is torchvision's crop and
    flip image by image; a one-colour image keeps its colour, which the authors' list does not."""
    images = _images(12, seed=2)
    ours = augmentation.DeviceAugment(SIZE, torch.device("cpu"), augment="crop_flip")(images, seed=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        ops = transforms.Compose(augmentation.crop_flip_operations(SIZE))
        want = augmentation.normalize(torch.stack([ops(im) for im in images]))
    assert torch.equal(ours, want)
    flat = [torch.tensor([200, 40, 40], dtype=torch.uint8).view(3, 1, 1).expand(3, 48, 48).clone() for _ in range(40)]
    colour = augmentation.normalize(torch.stack(flat[:1]))[0, :, 0, 0]
    kept = augmentation.DeviceAugment(SIZE, torch.device("cpu"), augment="crop_flip")(flat, seed=1)
    assert torch.allclose(kept, colour.view(1, 3, 1, 1).expand_as(kept), atol=1e-5)
    changed = augmentation.DeviceAugment(SIZE, torch.device("cpu"))(flat, seed=1)
    assert (changed - colour.view(1, 3, 1, 1)).abs().flatten(1).amax(1).gt(0.1).sum() > 10
    with pytest.raises(ValueError, match="crop_flip"):
        augmentation.DeviceAugment(SIZE, torch.device("cpu"), augment="none")
