"""The training stages through the CLI: the converge stage is bit-reproducible."""

import torch
from conftest import PLAIN_NUMERICS

from limiting_dynamics.data import datasets as data

MODEL = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}


def test_converge_stage_is_bit_reproducible(tmp_path):
    """The whole stage, initialisation included, depends only on the config's seeds."""
    import json

    from limiting_dynamics.checkpoints import load_checkpoint
    from limiting_dynamics.cli import main

    path = tmp_path / "digits.npz"
    data.save_prepared(
        data.prepare({"name": "digits", "image_size": 8, "channels": 1, "test_fraction": 0.2, "split_seed": 0}), path
    )
    params = json.dumps(
        {
            "device": "cpu",
            "deterministic": True,
            "model": MODEL,
            "numerics": PLAIN_NUMERICS,
            "converge": {
                "checkpoint": None,
                "epochs": 1,
                "lr": 0.1,
                "batch_size": 128,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "sampling": "reshuffle",
                "augment_shift": 1,
                "label_noise": 0.0,
                "seed": 3,
            },
        }
    )
    states = []
    for i in range(2):
        torch.manual_seed(100 + i)  # whatever the global RNG was before must not matter
        assert (
            main(
                [
                    "converge",
                    "--data",
                    str(path),
                    "--params",
                    params,
                    "--out-checkpoint",
                    str(tmp_path / f"t{i}.pt"),
                    "--out-history",
                    str(tmp_path / f"h{i}.nc"),
                ]
            )
            == 0
        )
        states.append(load_checkpoint(tmp_path / f"t{i}.pt")["model"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
