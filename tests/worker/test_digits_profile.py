"""The digits profile: the cached classifier, metrics on real stacked digits vs an untrained generator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from worker_support import checkpoint_bytes

from sqd.errors import ConfigError
from sqd.settings import Settings
from sqd.trainer.checkpoint import load_generator
from sqd.trainer.datasets import StackedDigits
from sqd.worker.digits import DigitsProfile
from sqd.worker.digits_classifier import DigitClassifier, load_classifier, recipe_hash
from sqd.worker.profiles import get_profile
from sqd.worker.sampling import GeneratorSampler


def real_digits(resolution: int = 16):  # noqa: ANN201 - a Sampler
    data = StackedDigits(resolution)
    return lambda n: data.sample(n, torch.Generator().manual_seed(1))


def test_classifier_is_accurate_and_cached_by_recipe(classifier: DigitClassifier, models_dir: Path) -> None:
    assert classifier.accuracy >= 0.95  # held-out 20 % of scikit-learn's digits
    path = models_dir / "digits" / f"classifier-{recipe_hash()}.pt"
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    again = load_classifier(models_dir)  # read back, not retrained
    assert path.stat().st_mtime_ns == mtime
    assert again.accuracy == classifier.accuracy
    for a, b in zip(again.net.state_dict().values(), classifier.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_real_stacked_digits_score_like_the_data(digits_settings: Settings, models_dir: Path) -> None:
    profile = DigitsProfile(digits_settings)
    profile.samples = 2000
    timings: dict[str, float] = {}
    m = profile.evaluate(real_digits(), timings)
    assert set(m) == {"eval/quality", "eval/diversity", "eval/diversity_plugin", "eval/js_lambda",
                      "eval/modes_covered", "eval/reverse_kl", "eval/fid"}
    assert m["eval/quality"] > 0.9
    # 2,000 uniform draws over 1,000 modes hit 1000·(1 − e⁻²) ≈ 865 of them; misreadings only add modes
    assert 780 <= m["eval/modes_covered"] <= 1000
    assert m["eval/reverse_kl"] < 0.7
    assert m["eval/diversity_plugin"] < m["eval/diversity"] <= math.log(1000)
    assert 0 < m["eval/js_lambda"] <= 1
    assert m["eval/fid"] < 20.0  # finite-sample bias of 2,000 vs 10,000 in 192-d; an untrained G is > 1000
    assert {"classify", "fid"} <= set(timings)
    manifest = json.loads((models_dir / "digits" / f"fid-ref-{recipe_hash()}-r16.json").read_text())
    assert manifest["covariance"] == "1/(N-1)"
    assert manifest["n"] == 10_000 and manifest["resolution"] == 16


def test_untrained_generator_scores_far_worse(digits_settings: Settings) -> None:
    profile = DigitsProfile(digits_settings)
    G = load_generator(checkpoint_bytes())
    fake = profile.evaluate(GeneratorSampler(G, 64, 7, torch.device("cpu"), 100), {})
    real = profile.evaluate(real_digits(), {})
    assert fake["eval/fid"] > 10 * real["eval/fid"]
    assert fake["eval/modes_covered"] < real["eval/modes_covered"]
    assert fake["eval/reverse_kl"] > real["eval/reverse_kl"]
    assert all(math.isfinite(v) for v in fake.values())


def test_32px_digits_are_resized_and_get_their_own_reference(digits_settings: Settings, models_dir: Path) -> None:
    profile = DigitsProfile(digits_settings)
    profile.samples = 2000
    m = profile.evaluate(real_digits(32), {})
    assert m["eval/quality"] > 0.85 and m["eval/fid"] < 20.0
    assert (models_dir / "digits" / f"fid-ref-{recipe_hash()}-r32.npz").is_file()


def test_grey_images_are_refused_with_their_shape(digits_settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"expects stacked digits \(n, 3, H, W\), got images of shape \(200, 1, 16"):
        DigitsProfile(digits_settings).evaluate(lambda n: torch.zeros(n, 1, 16, 16), {})


def test_get_profile_names_the_allowed_profiles(digits_settings: Settings) -> None:
    assert get_profile("digits", digits_settings).name == "digits"
    with pytest.raises(ConfigError, match="evaluation profile 'cifar' is not one of digits, faces"):
        get_profile("cifar", digits_settings)
