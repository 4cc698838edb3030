"""Progress lines of long loops: start, at most one line per interval with the
rate and the time left, end; units resumed from a checkpoint do not count in
the rate; and a real burn-in and limiting run report their steps."""

from __future__ import annotations

import pytest
import torch
from conftest import SMALL_RESNET, StopAt, drawing, recording_plan

from limiting_dynamics.progress import Progress, _duration


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0 s"),
        (59.4, "59 s"),
        (61, "1 min 01 s"),
        (3599, "59 min 59 s"),
        (7380, "2 h 03 min"),
        (float("nan"), "?"),
    ],
)
def test_duration_text(seconds, text):
    assert _duration(seconds) == text


def test_start_interval_gating_eta_and_end():
    lines, clock = [], Clock()
    progress = Progress("limiting run", 100, "steps", lines.append, every=30, clock=clock)
    assert lines == ["limiting run: started (100 steps)"]
    for k in range(1, 21):
        clock.t += 2.0  # 0.5 steps/s
        progress.update(k)
    # a line at 30 s (step 15) only: the next is due at 60 s
    assert lines[1:] == ["limiting run: 15/100 steps, 0.5 steps/s, 2 min 50 s left"]
    progress.end(20)
    assert lines[-1] == "limiting run: done, 20 steps in 40 s (0.5 steps/s)"


def test_every_zero_gives_a_line_after_every_unit():
    lines, clock = [], Clock()
    progress = Progress("burn-in", 3, "steps", lines.append, every=0, clock=clock)
    for k in (1, 2, 3):
        clock.t += 1.0
        progress.update(k)
    progress.end(3)
    assert len(lines) == 5 and lines[3] == "burn-in: 3/3 steps, 1 steps/s, 0 s left"


def test_resumed_units_are_named_and_not_counted_in_the_rate():
    lines, clock = [], Clock()
    progress = Progress("burn-in", 1000, "steps", lines.append, every=30, done=400, clock=clock)
    assert lines == ["burn-in: started (1000 steps, resumed after 400)"]
    clock.t += 30.0
    progress.update(460)  # 60 steps in this process
    assert lines[-1] == "burn-in: 460/1000 steps, 2 steps/s, 4 min 30 s left"
    clock.t += 270.0
    progress.end(1000)
    assert lines[-1] == "burn-in: done, 1000 steps in 5 min 00 s (2 steps/s)"


def test_no_rate_yet_gives_an_unknown_time_left():
    lines = []
    progress = Progress("noise", 10, "gradients", lines.append, every=0, clock=Clock())
    progress.update(0)
    assert lines[-1] == "noise: 0/10 gradients, nan gradients/s, ? left"


def test_a_real_limiting_run_and_its_burn_in_report_progress(digits, one_thread):
    from limiting_dynamics.hyperparameters import Hyperparameters
    from limiting_dynamics.models import build_model
    from limiting_dynamics.training import Numerics, limiting_run

    lines = []
    torch.manual_seed(0)
    limiting_run(
        build_model(SMALL_RESNET, 10, 1),
        digits,
        Hyperparameters(0.05, 32, 0.9, 5e-3, 0),
        steps=6,
        burn_in=4,
        eval_every=20,
        drawing=drawing(),
        device=torch.device("cpu"),
        recording=recording_plan(),
        numerics=Numerics(),
        log=lines.append,
        progress_every=0,
    )
    progress = [line for line in lines if line.startswith(("burn-in: ", "limiting run: "))]
    assert progress[0] == "burn-in: started (4 steps)"
    assert progress[1].startswith("burn-in: 1/4 steps, ") and progress[1].endswith(" left")
    assert any(line.startswith("burn-in: done, 4 steps in ") for line in progress)
    assert "limiting run: started (6 steps)" in progress
    assert progress[-1].startswith("limiting run: done, 6 steps in ") and "steps/s" in progress[-1]
    assert sum(line.startswith("limiting run: ") and "/6 steps, " in line for line in progress) == 6


def test_a_resumed_burn_in_names_the_resumed_steps(digits, tmp_path, one_thread):
    from limiting_dynamics.checkpoints import Checkpointer, ResumeStore
    from limiting_dynamics.errors import Interrupted
    from limiting_dynamics.hyperparameters import Hyperparameters
    from limiting_dynamics.models import build_model
    from limiting_dynamics.training import Numerics, burn_in

    def run(checkpointer, lines):
        torch.manual_seed(0)
        return burn_in(
            build_model(SMALL_RESNET, 10, 1),
            digits,
            Hyperparameters(0.05, 32, 0.9, 5e-3, 2),
            steps=10,
            drawing=drawing(),
            device=torch.device("cpu"),
            checkpointer=checkpointer,
            numerics=Numerics(),
            log=lines.append,
            progress_every=3600,
        )

    quiet = {"log": lambda s: None}
    store = ResumeStore(tmp_path / "burn.pt", {"cell": "c"}, **quiet)
    first = []
    with pytest.raises(Interrupted):
        run(Checkpointer(store, every=0, stop=StopAt(4), **quiet), first)
    assert first == ["burn-in: started (10 steps)"]  # no line within the hour, no end line
    lines = []
    run(Checkpointer(store, every=0, **quiet), lines)
    assert "burn-in: started (10 steps, resumed after 4)" in lines
    assert any(line.startswith("burn-in: done, 10 steps in ") for line in lines)


def test_minibatch_noise_reports_every_gradient():
    from limiting_dynamics.noise import minibatch_noise

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=gen), torch.randint(0, 3, (64,), generator=gen)

    class Batches:
        def next(self):
            idx = torch.randint(0, 64, (8,), generator=gen)
            return x[idx], y[idx]

    seen = []
    minibatch_noise(torch.nn.Linear(5, 3), Batches(), 6, bn_mode="train", on_batch=seen.append)
    assert seen == [1, 2, 3, 4, 5, 6]
