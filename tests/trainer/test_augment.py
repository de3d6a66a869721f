import torch

from mnist_search.trainer.augment import random_affine


def digits(n: int = 64) -> torch.Tensor:
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 6:22, 12:16] = 1.0  # a vertical bar
    return images


def test_augmentation_keeps_shapes_and_changes_images():
    images = digits()
    out = random_affine(images, torch.Generator().manual_seed(0), rotation=15, translate=0.1, scale=(0.9, 1.1))
    assert out.shape == images.shape and out.dtype == images.dtype
    changed = (out - images).abs().flatten(1).amax(1) > 0.1
    assert changed.all()
    # Per-sample parameters: two copies of the same image come out different.
    assert not torch.allclose(out[0], out[1])


def test_no_augmentation_is_the_identity():
    images = digits(4)
    out = random_affine(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out, images, atol=1e-5)


def test_pixels_from_outside_get_the_fill_value():
    images = torch.full((8, 1, 28, 28), 5.0)
    out = random_affine(images, torch.Generator().manual_seed(1), rotation=45, fill=-0.42)
    corners = out[:, 0, 0, 0]
    assert torch.allclose(corners, torch.full_like(corners, -0.42), atol=1e-4)


def test_same_seed_same_augmentation():
    images = digits(8)
    a = random_affine(images, torch.Generator().manual_seed(3), rotation=10, translate=0.05)
    b = random_affine(images, torch.Generator().manual_seed(3), rotation=10, translate=0.05)
    assert torch.equal(a, b)
