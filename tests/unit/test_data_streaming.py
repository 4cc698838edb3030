"""ImageNet streamed from generated image files: the random-resized-crop geometry,
batches independent of the worker count and resumable from the step, and the
training numerics options on streamed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import drawing, recording_plan
from generated_data import imagenet_stream_config, write_image_folder

from limiting_dynamics import models, training
from limiting_dynamics.data import datasets as data
from limiting_dynamics.data.images import eval_resize
from limiting_dynamics.data.streaming import StreamData, load_train_image, random_resized_crop_box
from limiting_dynamics.errors import CheckpointError, DataError

ARCH = {"arch": "resnet", "blocks": [1], "width": 8, "stem": "cifar"}


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    root = write_image_folder(tmp / "imagenet", n_train=30, n_val=5)
    data.save_prepared(data.prepare(imagenet_stream_config(root)), tmp / "imagenet.npz")
    return tmp / "imagenet.npz"


def _run(d, numerics=training.Numerics(), steps=12, **kw):  # noqa: B008
    torch.manual_seed(0)
    model = models.build_model(ARCH, d.num_classes, d.in_channels)
    hp = training.Hyperparameters(0.05, 8, 0.9, 5e-3, 0)
    return training.limiting_run(
        model,
        d,
        hp,
        steps=steps,
        eval_every=6,
        drawing=drawing(),
        device=torch.device("cpu"),
        numerics=numerics,
        recording=recording_plan(),
        log=lambda s: None,
        **kw,
    )


def test_random_resized_crop_box_matches_torchvision_in_distribution():
    from torchvision.transforms import RandomResizedCrop

    def draws(crop):
        rng = np.random.default_rng(0)
        fractions, ratios = [], []
        for _ in range(3000):
            w, h = int(rng.integers(20, 400)), int(rng.integers(20, 400))
            left, top, right, bottom = crop(w, h)
            assert 0 <= left < right <= w and 0 <= top < bottom <= h
            fractions.append((right - left) * (bottom - top) / (w * h))
            ratios.append((right - left) / (bottom - top))
        return np.asarray(fractions), np.asarray(ratios)

    ours = draws(lambda w, h, rng=np.random.default_rng(1): random_resized_crop_box(w, h, rng))  # noqa: B008
    torch.manual_seed(0)

    def theirs_box(w, h):
        top, left, hh, ww = RandomResizedCrop.get_params(torch.zeros(1, h, w), (0.08, 1.0), (3 / 4, 4 / 3))
        return left, top, left + ww, top + hh

    theirs = draws(theirs_box)
    for a, b in zip(ours, theirs):  # area fraction and aspect ratio: same quartiles within sampling error
        np.testing.assert_allclose(np.quantile(a, [0.25, 0.5, 0.75]), np.quantile(b, [0.25, 0.5, 0.75]), atol=0.04)
    assert ours[0].min() > 0.06 and ours[0].max() <= 1.0 and 0.7 < ours[1].min() and ours[1].max() < 1.45
    # a strip too thin for any allowed ratio falls back to the largest centred crop of ratio 4/3
    assert random_resized_crop_box(400, 10, np.random.default_rng(1)) == (193, 0, 206, 10)


def test_a_training_image_is_a_pure_function_of_its_key(tmp_path):
    from PIL import Image

    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[:, :30, 0] = 255  # left half red, right half black
    Image.fromarray(img).save(tmp_path / "a.png")
    a = load_train_image(tmp_path / "a.png", 16, 3, np.random.default_rng([0, 2, 5, 1]))
    b = load_train_image(tmp_path / "a.png", 16, 3, np.random.default_rng([0, 2, 5, 1]))
    assert a.shape == (3, 16, 16) and a.dtype == np.uint8 and np.array_equal(a, b)
    # flips: red is on the left in about half of the full-width crops
    left_red = [
        load_train_image(tmp_path / "a.png", 16, 3, np.random.default_rng([0, 2, k, 0]))[0, :, 0].mean() > 128
        for k in range(200)
    ]
    assert 0.35 < np.mean(left_red) < 0.65
    (tmp_path / "bad.JPEG").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot be decoded"):
        load_train_image(tmp_path / "bad.JPEG", 16, 3, np.random.default_rng(0))


def test_prepare_packs_the_eval_images_and_lists_the_training_files(streamed):
    d = data.load_prepared(streamed, "cpu")
    assert isinstance(d, StreamData)
    assert d.n_train == 90 and len(d.files) == 90 and all(f.startswith("train/") for f in d.files)
    assert tuple(d.x_train.shape) == (40, 3, 16, 16) and tuple(d.x_test.shape) == (15, 3, 16, 16)
    assert d.num_classes == 3 and d.in_channels == 3 and eval_resize(224) == 256
    # the subset is a seeded draw over all classes, labelled like its files
    labels = dict(zip(d.files, d.labels.tolist()))
    assert set(d.y_train.tolist()) == {0, 1, 2} and labels["train/n02/n02_0.png"] == 1


def test_streamed_batches_are_identical_for_any_worker_count_and_resume_from_the_step(streamed):
    one = data.load_prepared(streamed, "cpu", workers=0).train_batches(8, drawing(), 3)
    two = data.load_prepared(streamed, "cpu", workers=2).train_batches(8, drawing(), 3)
    first = [one.next() for _ in range(13)]  # crosses the epoch boundary (11 batches per epoch)
    second = [two.next() for _ in range(13)]
    for (xa, ya), (xb, yb) in zip(first, second):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape == (8, 3, 16, 16) and abs(float(xa.mean())) < 1.0
    state = two.state_dict()
    assert state["stream"]["step"] == 13
    fresh = data.load_prepared(streamed, "cpu").train_batches(8, drawing(), 3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.next()[0], two.next()[0])
    other = data.load_prepared(streamed, "cpu").train_batches(8, drawing(), 4)
    with pytest.raises(CheckpointError, match="seed 3"):
        other.load_state_dict(state)
    with pytest.raises(DataError, match="augment_shift must be 0"):
        data.load_prepared(streamed, "cpu").train_batches(8, drawing("reshuffle", 2), 3)


def test_a_streamed_run_split_in_two_equals_the_whole_run(streamed):
    d = data.load_prepared(streamed, "cpu")
    whole = _run(d)
    torch.manual_seed(0)
    model = models.build_model(ARCH, d.num_classes, d.in_channels)
    hp = training.Hyperparameters(0.05, 8, 0.9, 5e-3, 0)
    start = training.burn_in(
        model,
        d,
        hp,
        steps=5,
        drawing=drawing(),
        device=torch.device("cpu"),
        numerics=training.Numerics(),
        log=lambda s: None,
    )
    assert start["stream"]["step"] == 5
    torch.manual_seed(0)
    model = models.build_model(ARCH, d.num_classes, d.in_channels)
    rest = training.limiting_run(
        model,
        d,
        hp,
        steps=7,
        eval_every=6,
        drawing=drawing(),
        device=torch.device("cpu"),
        start=start,
        numerics=training.Numerics(),
        recording=recording_plan(),
        log=lambda s: None,
    )
    assert np.array_equal(rest["train_loss"], whole["train_loss"][5:])  # same batches, same numbers


def test_channels_last_and_bf16_autocast_change_rounding_only(streamed):
    d = data.load_prepared(streamed, "cpu")
    base = _run(d)
    cl = _run(d, training.Numerics(channels_last=True))
    bf = _run(d, training.Numerics(autocast="bfloat16"))
    assert cl["numerics"] == "autocast=none; channels_last=true; compile_model=false"
    np.testing.assert_allclose(cl["sq_dist_from_start"], base["sq_dist_from_start"], rtol=1e-4)
    np.testing.assert_allclose(bf["train_loss"][:3], base["train_loss"][:3], rtol=2e-2)
    assert not np.array_equal(bf["train_loss"], base["train_loss"])
