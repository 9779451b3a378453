"""Image DiLED: idx files, the conv codec, learning on Fashion-MNIST, image metrics, the two-stage objective."""

import gzip
import struct

import numpy as np
import pytest
import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.image import ImageCodec
from diled.data.image import fashion_mnist, read_idx, read_image_folder
from diled.metrics.image import (FeatureClassifier, frechet_distance, interpolation_smoothness, psnr,
                                 train_classifier)
from diled.training import train as train_loop


def tiny(objective="diled"):
    torch.manual_seed(0)
    return DiLED(ImageCodec(latent_dim=16, width=16), MLPSkipNet(16, hidden=128, depth=2, time_dim=32),
                 LatentDiffusion("constant", 100), w=1.0, objective=objective)


def test_idx_files_and_fashion_mnist(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4) + data.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    assert (read_idx(tmp_path / "a.gz") == data).all()
    (tmp_path / "bad").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "bad")
    x, y = fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and set(np.unique(y)) == set(range(10))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist("train", tmp_path)


def test_image_folder(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "b.jpg")
    images, paths = read_image_folder(tmp_path, size=28)
    assert images.shape == (2, 28, 28) and len(paths) == 2
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="c.png: cannot read"):
        read_image_folder(tmp_path, size=28)


def test_codec_shapes_and_inputs():
    codec = tiny().codec
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    batch = codec.collate(x)
    assert batch["x"].shape == (3, 1, 28, 28) and 0 <= batch["x"].min() and batch["x"].max() <= 1
    flat = codec.collate([row.tolist() for row in (x.reshape(3, -1) / 255.0)])
    torch.testing.assert_close(flat["x"], batch["x"])
    z = codec.encode(batch)
    assert z.shape == (3, 16) and codec.reconstruction_loss(batch, z).shape == (3,)
    assert codec.decode_images(z).shape == (3, 1, 28, 28) and len(codec.decode(z)[0]) == 784
    with pytest.raises(ValueError, match="1 x 28 x 28"):
        codec.collate(np.zeros((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        codec.collate(np.full((1, 28, 28), 2.0, np.float32))


def test_metrics_on_known_cases():
    a = torch.randn(500, 8, dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-6
    # two Gaussians with equal covariance: the distance is the squared mean difference
    assert frechet_distance(a, a + 2.0) == pytest.approx(4 * 8, rel=1e-6)
    x = torch.rand(4, 1, 28, 28)
    assert torch.isinf(psnr(x, x)).all()
    assert psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1)).item() == pytest.approx(20.0)
    clf = FeatureClassifier().eval()
    frames = torch.linspace(0, 1, 9).view(1, 9, 1, 1, 1) * torch.ones(1, 9, 1, 28, 28)  # black to white
    out = interpolation_smoothness(clf, frames)
    assert out["path_length_ratio"] >= 1.0 - 1e-6 and 0 < out["max_step_share"] <= 1


def test_learns_to_reconstruct_and_generates_new_images():
    x, y = fashion_mnist("train")
    train, test = torch.as_tensor(x[:2000]).float().div(255).unsqueeze(1), torch.as_tensor(x[-500:]).float().div(255).unsqueeze(1)
    model = tiny()

    def mse():
        model.eval()
        with torch.no_grad():
            return float((model.codec.decode_images(model.encode({"x": test})) - test).pow(2).mean())

    before = mse()
    g = torch.Generator().manual_seed(0)
    batches = ({"x": train[torch.randint(0, len(train), (64,), generator=g)]} for _ in iter(int, 1))
    train_loop(model, batches, steps=300, lr=2e-3)
    after = mse()
    assert after < 0.5 * before, (before, after)        # measured 0.169 -> 0.017
    samples = model.codec.decode_images(model.sample_latents(64, steps=20, generator=torch.Generator().manual_seed(0)))
    assert samples.shape == (64, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1
    # not copies: every sample is farther from its nearest training image than a hair
    nearest = torch.cdist(samples.flatten(1), train.flatten(1)).min(1).values
    assert (nearest > 1.0).all(), nearest.min()         # L2 over 784 pixels (measured min 3.0); a copy is 0
    assert samples.std(0).mean() > 0.02                  # and not one image repeated


def test_prior_only_objective_trains_the_prior_on_a_frozen_codec():
    model = tiny(objective="prior_only")
    assert not any(p.requires_grad for p in model.codec.parameters())
    before = {k: v.clone() for k, v in model.codec.state_dict().items()}
    x = torch.rand(8, 1, 28, 28)
    train_loop(model, iter([{"x": x}] * 3), steps=3, lr=1e-2)
    assert all(torch.equal(before[k], v) for k, v in model.codec.state_dict().items())
    out = model({"x": x})
    torch.testing.assert_close(out["loss"], model.w * out["diff"].mean())


def test_feature_classifier_learns():
    x, y = fashion_mnist("test")
    xt = torch.as_tensor(x).float().div(255).unsqueeze(1)
    clf = train_classifier(xt[:3000], torch.as_tensor(y[:3000]), epochs=1)
    with torch.no_grad():
        acc = (clf(xt[-1000:]).argmax(-1) == torch.as_tensor(y[-1000:])).float().mean().item()
    assert acc > 0.6, acc                               # 10 classes; measured 0.72 after one epoch on 3k
