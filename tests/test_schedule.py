"""The learning-rate schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest

from fha.cli import main
from fha.train.schedule import LRSchedule, plot_schedule
from fha.train_config import TrainConfig

LR_INIT, LR_MAX, LR_MIN = 1e-5, 0.1, 1e-3


def make(**changes) -> LRSchedule:
    # 200 steps: 10 warmup, 150 annealing in cycles 10, 20, 40, 80 (starts 10, 20, 40, 80), 40 flat.
    base = {
        "max_steps": 200,
        "warmup_steps": 10,
        "final_flat_steps": 40,
        "num_restarts": 3,
        "T_mult": 2.0,
        "lr_init": LR_INIT,
        "lr_max": LR_MAX,
        "lr_min": LR_MIN,
        "anneal_type": "cos",
    }
    return LRSchedule.from_config(TrainConfig(**{**base, **changes}))


def cos_value(progress: float) -> float:
    return LR_MIN + (LR_MAX - LR_MIN) * 0.5 * (1 + math.cos(math.pi * progress))


def test_warmup_is_linear_from_lr_init_to_lr_max():
    schedule = make()
    assert schedule(0) == LR_INIT
    assert schedule(5) == pytest.approx(LR_INIT + (LR_MAX - LR_INIT) * 0.5)
    assert schedule(9) == pytest.approx(LR_INIT + (LR_MAX - LR_INIT) * 0.9)
    assert schedule(10) == pytest.approx(LR_MAX)


def test_restart_lengths_grow_by_t_mult_and_end_at_the_flat_part():
    schedule = make()
    assert schedule.cycle_boundaries() == pytest.approx([10, 20, 40, 80, 160])
    for start, length in [(10, 10), (20, 20), (40, 40), (80, 80)]:
        assert schedule(start) == pytest.approx(LR_MAX)  # each cycle restarts at lr_max
        assert schedule(start + length // 2) == pytest.approx(cos_value(0.5))
        assert schedule(start + length - 1) == pytest.approx(cos_value((length - 1) / length))
        assert schedule(start + length - 1) < schedule(start + length // 2)
    assert [s for s in range(1, 200) if schedule(s) > schedule(s - 1) and s > 10] == [20, 40, 80]
    assert all(schedule(s) == LR_MIN for s in range(160, 200))


def test_linear_annealing():
    schedule = make(anneal_type="lin")
    assert schedule(20) == pytest.approx(LR_MAX)
    assert schedule(25) == pytest.approx(LR_MAX - 0.25 * (LR_MAX - LR_MIN))
    assert schedule(30) == pytest.approx(LR_MAX - 0.5 * (LR_MAX - LR_MIN))
    assert schedule(160) == LR_MIN


def test_equal_cycles_with_t_mult_one_and_a_single_cycle_without_restarts():
    assert make(T_mult=1.0, num_restarts=2).cycle_boundaries() == pytest.approx([10, 60, 110, 160])
    single = make(num_restarts=0)
    assert single.cycle_boundaries() == pytest.approx([10, 160])
    assert single(85) == pytest.approx(cos_value(0.5))


def test_defaults_are_fractions_of_max_steps():
    config = TrainConfig(max_steps=2000)
    assert (config.warmup_length, config.final_flat_length) == (100, 600)
    assert TrainConfig(max_steps=2000, warmup_steps=0).warmup_length == 0


def test_schedule_that_leaves_no_room_to_anneal_is_rejected():
    with pytest.raises(ValueError, match="annealing cycles"):
        TrainConfig(max_steps=100, warmup_steps=60, final_flat_steps=38, num_restarts=3)


def test_plot_and_cli(tmp_path, capsys):
    plot_schedule(make(), tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0
    assert main(["schedule", "--preset", "seed-1m", "--set", "max_steps=400", "--plot", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "warmup 20 steps" in out and (tmp_path / "b.png").is_file()


@pytest.mark.parametrize("t_mult", [math.inf, 1e308])
def test_infinite_or_overflowing_t_mult_is_rejected(t_mult):
    with pytest.raises(ValueError, match="T_mult"):
        TrainConfig(max_steps=200, num_restarts=3, T_mult=t_mult)


def test_every_annealing_cycle_gets_at_least_one_step():
    # 15 annealing steps fit cycles of 1, 2, 4 and 8 steps; 14 would make the first one 0.93 steps
    # long and skip its restart altogether.
    fits = make(max_steps=25, warmup_steps=5, final_flat_steps=5)
    starts = [math.ceil(b) for b in fits.cycle_boundaries()]
    assert starts == [5, 6, 8, 12, 20] and len(set(starts)) == len(starts)
    with pytest.raises(ValueError, match="annealing cycles"):
        make(max_steps=24, warmup_steps=5, final_flat_steps=5)


def test_schedule_plot_goes_into_new_folders_and_bad_formats_are_one_line(tmp_path, capsys):
    from fha.cli import main

    target = tmp_path / "new" / "dir" / "lr.png"
    assert main(["schedule", "--preset", "tiny", "--plot", str(target)]) == 0
    assert target.read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()
    assert main(["schedule", "--preset", "tiny", "--plot", str(tmp_path / "lr.notaformat")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fha: error: ") and len(err.strip().splitlines()) == 1
