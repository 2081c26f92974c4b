"""The warmup-stable-decay schedule, cooldown branches of a longer run, and the batch-order seed."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import run_tiny, tiny_model_config, tiny_train_config

import fha
from fha.cli import main
from fha.runs.checkpoint import load_checkpoint
from fha.train import loop
from fha.train.schedule import LRSchedule, describe_schedule_change, plot_steps
from fha.train_config import TrainConfig

LR_INIT, LR_MAX, LR_MIN = 1e-5, 0.1, 1e-3
NEW_KEYS = ("cooldown_steps", "cooldown_fraction", "data_seed")


def wsd(**changes) -> TrainConfig:
    # 200 steps: warmup 0-9, stable 10-129, decay 130-169 (40 steps), flat 170-199.
    base = {
        "max_steps": 200,
        "warmup_steps": 10,
        "cooldown_steps": 40,
        "final_flat_steps": 30,
        "lr_init": LR_INIT,
        "lr_max": LR_MAX,
        "lr_min": LR_MIN,
        "anneal_type": "wsd",
    }
    return TrainConfig(**{**base, **changes})


# ---------------------------------------------------------------------- the schedule
def test_wsd_warmup_stable_decay_and_flat_part_by_hand():
    schedule = LRSchedule.from_config(wsd())
    assert schedule.decay_start == 130
    assert schedule(0) == LR_INIT
    assert schedule(5) == pytest.approx(LR_INIT + (LR_MAX - LR_INIT) * 0.5)
    assert all(schedule(s) == LR_MAX for s in range(10, 131))  # stable, and the decay starts at lr_max
    assert schedule(150) == pytest.approx((LR_MAX + LR_MIN) / 2)  # halfway through the decay
    assert schedule(160) == pytest.approx(LR_MAX - 0.75 * (LR_MAX - LR_MIN))
    assert schedule(169) == pytest.approx(LR_MAX - 39 / 40 * (LR_MAX - LR_MIN))
    assert all(schedule(s) == LR_MIN for s in range(170, 200))
    assert schedule.cycle_boundaries() == [130.0, 170.0]
    assert schedule.describe() == (
        "warmup 10 steps (1e-05 -> 0.1); stable at 0.1 to step 130; linear decay to 0.001 over 40 steps "
        "(130 to 170); flat at 0.001 from step 170 to 200"
    )


def test_wsd_lengths_default_to_fractions_of_max_steps():
    config = TrainConfig(max_steps=1000, anneal_type="wsd", final_flat_fraction=0.1)
    assert (config.warmup_length, config.cooldown_length, config.final_flat_length) == (50, 200, 100)
    assert LRSchedule.from_config(config).decay_start == 700
    assert TrainConfig(max_steps=1000, cooldown_fraction=0.25).cooldown_length == 250
    assert TrainConfig(max_steps=1000, cooldown_steps=7).cooldown_length == 7


def test_wsd_rate_before_the_decay_does_not_depend_on_max_steps():
    longest = LRSchedule.from_config(wsd(max_steps=1000, cooldown_steps=None, final_flat_steps=None))
    for budget in (200, 400, 999):
        shorter = LRSchedule.from_config(wsd(max_steps=budget, cooldown_steps=None, final_flat_steps=None))
        assert [shorter(s) for s in range(shorter.decay_start)] == [longest(s) for s in range(shorter.decay_start)]
        assert shorter(shorter.decay_start + 1) < LR_MAX  # ... and the decay itself does
    cosine = [LRSchedule.from_config(wsd(anneal_type="cos", max_steps=m, cooldown_steps=None)) for m in (200, 400)]
    assert cosine[0](20) != cosine[1](20)


def test_wsd_plot_steps_keep_both_corners_of_the_decay():
    schedule = LRSchedule.from_config(wsd(max_steps=10**8, cooldown_steps=None, final_flat_steps=None))
    steps = set(plot_steps(schedule))
    start = schedule.decay_start
    end = start + schedule.cooldown_length
    assert {start - 1, start, end - 1, end} <= steps
    assert schedule(start - 1) == LR_MAX and schedule(end) == LR_MIN


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(num_restarts=2), r"^num_restarts must be 0 with anneal_type='wsd' \(one decay, no restarts\), got 2$"),
        (
            dict(cooldown_steps=161),
            r"^warmup_steps \(10\) \+ cooldown_steps \(161\) \+ final_flat_steps \(30\) = 201 exceed max_steps=200",
        ),
        (dict(cooldown_steps=None, cooldown_fraction=0.9), r"cooldown_steps \(180\) .* = 220 exceed max_steps=200"),
        (
            dict(cooldown_steps=None, cooldown_fraction=0.1, max_steps=9, warmup_steps=0, final_flat_steps=0),
            r"^cooldown_fraction=0.1 of max_steps=9 is 0 steps; anneal_type='wsd' needs a cooldown of at least 1 step",
        ),
        (dict(cooldown_steps=0), r"^cooldown_steps must be 1 or more \(or None for the default\), got 0$"),
        (dict(cooldown_fraction=0.0), r"^cooldown_fraction must be in \(0, 1\), got 0.0$"),
        (dict(cooldown_fraction=1.0), r"^cooldown_fraction must be in \(0, 1\), got 1.0$"),
        (dict(data_seed=-1), r"^data_seed must be a whole number in \[0, 2\*\*32\)"),
        (dict(data_seed=2**32), "data_seed"),
    ],
)
def test_bad_wsd_settings_are_rejected_naming_the_fields(changes, message):
    with pytest.raises(ValueError, match=message):
        wsd(**changes)


def test_cooldown_settings_leave_the_other_schedules_alone():
    cosine = TrainConfig(max_steps=200, num_restarts=3)
    assert LRSchedule.from_config(cosine) == LRSchedule.from_config(cosine.replace(cooldown_fraction=0.5))
    assert describe_schedule_change(cosine, cosine.replace(cooldown_steps=5), 100) is None
    change = describe_schedule_change(wsd(), wsd(cooldown_steps=20), 100)
    assert "cooldown_steps 40 -> 20" in change and "stable at 0.1 to step 150" in change
    assert "the rates differ from step 131 on (0.1 instead of 0.0975)" in change


def test_schedule_cli_draws_wsd(tmp_path, capsys):
    target = tmp_path / "lr.png"
    settings = ["--set", "anneal_type=wsd", "--set", "num_restarts=0", "--set", "cooldown_fraction=0.2"]
    assert main(["schedule", "--preset", "seed-0.3m", *settings, "--plot", str(target)]) == 0
    assert capsys.readouterr().out.startswith(
        "warmup 10 steps (1e-06 -> 0.01); stable at 0.01 to step 70; linear decay to 0.0001 over 20 steps (70 to 90)"
    )
    assert target.read_bytes().startswith(b"\x89PNG")
    assert main(["schedule", "--preset", "seed-0.3m", "--set", "anneal_type=wsd"]) == 2
    assert capsys.readouterr().err == (
        "fha: error: invalid configuration: num_restarts must be 0 with anneal_type='wsd' (one decay, no restarts), "
        "got 3\n"
    )


# ---------------------------------------------------------------------- cooldown branches
LONG, SHORT, BRANCH_AT = 12, 8, 4  # SHORT's decay starts at 8 - 2 - 2 = 4; LONG's at 12 - 3 - 3 = 6
BRANCH_SETTINGS = {
    "warmup_steps": 2,
    "cooldown_fraction": 0.25,
    "final_flat_fraction": 0.25,
    "checkpoint_interval": BRANCH_AT,
}


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


def branch_and_fresh(corpus, tmp_path, anneal_type: str) -> tuple[dict, dict]:
    """The final weights of a SHORT-step branch of a LONG-step run at BRANCH_AT, and of a fresh SHORT-step run."""
    model = tiny_model_config(dropout=0.1)  # the branch must continue the random state too
    settings = {**BRANCH_SETTINGS, "anneal_type": anneal_type}
    run_tiny(corpus, tmp_path / "long", model, max_steps=LONG, **settings)
    branch = fha.train_model(
        resume=tmp_path / "long" / "checkpoints" / f"step-{BRANCH_AT}",
        overrides={"max_steps": SHORT},
        out=tmp_path / "branch",
        device="cpu",
    )
    fresh = run_tiny(corpus, tmp_path / "fresh", model, max_steps=SHORT, **settings)
    assert branch.step == fresh.step == SHORT
    assert branch.load()[2].train == fresh.load()[2].train == tiny_train_config(max_steps=SHORT, **settings)
    return final_weights(branch.run_dir), final_weights(fresh.run_dir)


@pytest.mark.slow
def test_a_wsd_cooldown_branch_equals_a_fresh_run_of_its_budget_bit_for_bit(corpus, tmp_path):
    config = tiny_train_config(max_steps=SHORT, anneal_type="wsd", **BRANCH_SETTINGS)
    assert BRANCH_AT <= LRSchedule.from_config(config).decay_start
    branch, fresh = branch_and_fresh(corpus, tmp_path, "wsd")
    assert branch.keys() == fresh.keys()
    assert all(torch.equal(branch[name], fresh[name]) for name in branch)


@pytest.mark.slow
def test_a_cosine_branch_does_not_equal_a_fresh_run(corpus, tmp_path):
    """The negative control: cosine rates before the branch point depend on max_steps."""
    branch, fresh = branch_and_fresh(corpus, tmp_path, "cos")
    assert not all(torch.equal(branch[name], fresh[name]) for name in branch)


# ---------------------------------------------------------------------- data_seed
def record_setups(monkeypatch) -> list[tuple[dict[str, torch.Tensor], torch.Tensor, int]]:
    """For each run, its initial weights, its first training batch and its sampler's seed."""
    seen = []
    set_up = loop.set_up

    def recording(*args, **kwargs):
        setup = set_up(*args, **kwargs)
        weights = {name: value.clone() for name, value in setup.model.state_dict().items()}
        seen.append((weights, copy.deepcopy(setup.sampler).next_batch()[0], setup.sampler.seed))
        return setup

    monkeypatch.setattr(loop, "set_up", recording)
    return seen


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow
def test_data_seed_sets_the_batch_order_and_seed_the_initial_weights(corpus, tmp_path, monkeypatch):
    seen = record_setups(monkeypatch)
    run_tiny(corpus, tmp_path / "default", max_steps=2)
    run_tiny(corpus, tmp_path / "other-order", max_steps=2, data_seed=5)
    run_tiny(corpus, tmp_path / "other-weights", max_steps=2, seed=1, data_seed=5)
    (weights, batch, sampler_seed), (weights5, batch5, seed5), (weights1, batch1, seed1) = seen
    assert (sampler_seed, seed5, seed1) == (0, 5, 5)
    assert same_weights(weights, weights5) and not torch.equal(batch, batch5)
    assert not same_weights(weights5, weights1) and torch.equal(batch5, batch1)


@pytest.mark.slow
def test_data_seed_none_trains_exactly_as_data_seed_equal_to_seed(corpus, tmp_path):
    assert TrainConfig(seed=3).batch_seed == 3 and TrainConfig(seed=3, data_seed=4).batch_seed == 4
    unset = final_weights(run_tiny(corpus, tmp_path / "unset", seed=3).run_dir)
    same = final_weights(run_tiny(corpus, tmp_path / "same", seed=3, data_seed=3).run_dir)
    other = final_weights(run_tiny(corpus, tmp_path / "other", seed=3, data_seed=4).run_dir)
    assert same_weights(unset, same)
    assert not same_weights(unset, other)


@pytest.mark.slow
def test_configs_and_checkpoints_without_the_new_keys_load_and_resume_as_before(corpus, tmp_path):
    old = {key: value for key, value in TrainConfig(max_steps=50, seed=2).to_dict().items() if key not in NEW_KEYS}
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(old))
    loaded = TrainConfig.from_json(path)
    assert loaded == TrainConfig(max_steps=50, seed=2)
    assert (loaded.data_seed, loaded.batch_seed) == (None, 2)
    assert (loaded.cooldown_steps, loaded.cooldown_length) == (None, 10)

    full = run_tiny(corpus, tmp_path / "full", checkpoint_interval=3)
    checkpoint_config = tmp_path / "full" / "checkpoints" / "step-3" / "train_config.json"
    written = json.loads(checkpoint_config.read_text())
    assert set(NEW_KEYS) <= set(written)
    checkpoint_config.write_text(json.dumps({key: value for key, value in written.items() if key not in NEW_KEYS}))
    resumed = fha.train_model(resume=checkpoint_config.parent, out=tmp_path / "resumed", device="cpu")
    assert load_checkpoint(checkpoint_config.parent).train_config == tiny_train_config(checkpoint_interval=3)
    assert same_weights(final_weights(full.run_dir), final_weights(resumed.run_dir))
