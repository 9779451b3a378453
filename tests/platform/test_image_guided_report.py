"""The image report's guided section: a model guided classifier-free (a prior built with the classes) gets
it as a model with a classifier guide does, at the scale measured for its kind."""

import torch

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.image import ImageCodec
from diled.metrics.image import FeatureClassifier
from diled.guidance import guidable_classes
from diled_platform.datatypes.image import guided_classes

CLASSES = [f"class {i}" for i in range(10)]


def test_a_conditional_prior_is_reported_classifier_free(tmp_path):
    torch.manual_seed(0)
    plain = DiLED(ImageCodec(latent_dim=4, width=8), MLPSkipNet(4, hidden=16, depth=1, time_dim=8),
                  LatentDiffusion("linear", 50))
    assert guidable_classes(plain) == []  # nothing to guide with: the report leaves the section out
    model = DiLED(ImageCodec(latent_dim=4, width=8), MLPSkipNet(4, hidden=16, depth=1, time_dim=8, classes=CLASSES),
                  LatentDiffusion("linear", 50)).eval()
    assert guidable_classes(model) == CLASSES
    judge = FeatureClassifier().eval()
    images = torch.rand(40, 1, 28, 28)
    test = (judge.features(images).detach(), torch.arange(40) % 10 // 1)
    test = (test[0].repeat(3, 1), test[1].repeat(3))  # 12 test images a class
    with torch.no_grad():
        out = guided_classes(model, judge, [10] * 10, tmp_path, n=12, steps=5, test=test, unguided_fd=1.0)
    assert out["guidance"] == "classifier-free" and out["guidance_scale"] == 1.5
    assert list(out["by_class"]) == CLASSES and all(v["frechet_vs_class_test"] > 0 for v in out["by_class"].values())
    assert out["max_class_frechet_vs_unguided"] == out["max_class_frechet"]  # against unguided_fd = 1
    assert (tmp_path / "guided_samples.png").is_file()
    again = guided_classes(model, judge, [10] * 10, tmp_path, n=12, steps=5, scale=3.0, test=test, unguided_fd=1.0)
    assert again["guidance_scale"] == 3.0 and again["by_class"] != out["by_class"]
