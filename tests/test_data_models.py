import numpy as np
import pytest
import torch

from limiting_dynamics.checkpoints import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from limiting_dynamics.data import catalog, images
from limiting_dynamics.data import datasets as data
from limiting_dynamics.models import build_model, count_parameters

DIGITS = {"name": "digits", "image_size": 16, "channels": 3, "test_fraction": 0.2, "split_seed": 0}


def test_digits_are_resized_split_stratified_and_round_trip(tmp_path):
    p = data.prepare(DIGITS)
    assert p.x_train.dtype == np.uint8 and p.x_train.shape[1:] == (3, 16, 16)
    assert len(p.y_train) + len(p.y_test) == 1797
    assert len(p.y_train) == catalog.expected_train_size(DIGITS)
    # stratified: every class in both parts, in proportion
    frac = np.bincount(p.y_test) / np.bincount(np.concatenate([p.y_train, p.y_test]))
    assert np.all(np.abs(frac - 0.2) < 0.02)
    # the three channels are the same grey image
    assert np.array_equal(p.x_train[:, 0], p.x_train[:, 2])
    path = tmp_path / "digits.npz"
    data.save_prepared(p, path)
    t = data.load_prepared(path)
    assert t.x_train.shape == (len(p.y_train), 3, 16, 16) and t.x_train.dtype == torch.float32
    assert abs(float(t.x_train[:].mean())) < 1e-4
    assert float(t.x_train[:].std()) == pytest.approx(1.0, abs=0.05)
    assert t.num_classes == 10 and t.in_channels == 3
    # held as uint8, normalised on access: bit-identical to normalising everything up front
    assert t.x_train.raw.dtype == torch.uint8 and len(t.x_train) == len(p.y_train)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in p.channel_stats())
    full = torch.from_numpy(p.x_train).float().div_(255.0).sub_(mean).div_(std)
    idx = torch.tensor([5, 0, 17, 5])
    assert torch.equal(t.x_train[idx], full[idx]) and torch.equal(t.x_train[3:9], full[3:9])
    assert torch.equal(t.x_train[7], full[7]) and t.x_train[7].shape == (3, 16, 16)


def test_split_depends_on_seed_only():
    a = data.prepare({**DIGITS, "image_size": 8, "channels": 1})
    b = data.prepare({**DIGITS, "image_size": 8, "channels": 1})
    c = data.prepare({**DIGITS, "image_size": 8, "channels": 1, "split_seed": 1})
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_native_8px_digits_keep_their_pixels():
    p = data.prepare({**DIGITS, "image_size": 8, "channels": 1})
    from sklearn.datasets import load_digits

    raw = load_digits().images
    assert set(np.unique(p.x_train)) <= set(np.round(np.arange(17) / 16 * 255).astype(np.uint8))
    assert p.x_train.shape[1:] == (1, 8, 8) and raw.shape[1:] == (8, 8)


def test_resnet8_and_torchvision_resnet18():
    r8 = build_model({"arch": "resnet", "blocks": [1, 1, 1], "width": 16, "stem": "cifar"}, 10, 1)
    assert 75_000 < count_parameters(r8) < 80_000
    assert r8(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    r18 = build_model({"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet"}, 10, 1)
    assert count_parameters(r18) == pytest.approx(11.17e6, rel=0.01)
    assert r18(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    cfg = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}
    m = build_model(cfg, 10, 1)
    path = tmp_path / "ck.pt"
    save_checkpoint({"model": m.state_dict()}, path)
    m2 = build_model(cfg, 10, 1)
    load_weights(m2, load_checkpoint(path)["model"], str(path))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    wider = build_model({**cfg, "width": 8}, 10, 1)
    with pytest.raises(CheckpointError, match="do not fit the configured model.*shape mismatch"):
        load_weights(wider, load_checkpoint(path)["model"], str(path))
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="trunc.pt is truncated or damaged"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save(m.state_dict(), tmp_path / "plain.pt")  # a plain torch.save file, cut short: no checksum to
    (tmp_path / "cut.pt").write_bytes((tmp_path / "plain.pt").read_bytes()[:100])  # check, but it cannot load
    with pytest.raises(CheckpointError, match="cut.pt cannot be loaded safely"):
        load_checkpoint(tmp_path / "cut.pt")


def test_random_shift_translates_each_image_and_fills_with_background():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    fill = torch.full((1, 1, 1, 1), -1.0)
    g = torch.Generator().manual_seed(0)
    assert images.random_shift(x, 0, g, fill) is x
    out = images.random_shift(x, 1, torch.Generator().manual_seed(3), fill)
    off = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(3))
    for n in range(2):
        dy, dx = int(off[0, n]) - 1, int(off[1, n]) - 1
        expect = torch.full((4, 4), -1.0)
        for i in range(4):
            for j in range(4):
                si, sj = i + dy, j + dx
                if 0 <= si < 4 and 0 <= sj < 4:
                    expect[i, j] = x[n, 0, si, sj]
        assert torch.equal(out[n, 0], expect)
