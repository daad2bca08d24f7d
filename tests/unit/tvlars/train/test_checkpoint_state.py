"""``tvlars.train.run`` saves and restores a trial's whole state: a run resumed after epoch k reproduces the
uninterrupted run's later epochs exactly (CPU), through a real ``torch.save`` / ``torch.load(weights_only=True)``."""

from __future__ import annotations

import io

import pytest
import torch

from tvlars.train import run

#: Keys that measure time, not training: they differ between any two runs.
TIMING = {"epoch_seconds", "images_per_s", "device"}

BASE = {"dataset": "mnist1d", "model": "mlp", "epochs": 4, "batch_size": 500, "seed": 3, "num_threads": 1}
CASES = {
    # TVLARS: φ depends on the optimizer's step count
    "tvlars": {"optimizer": "tvlars", "lr": 2.0, "lam": 0.01, "delay_epochs": 1},
    # LARS with warm-up: the schedule's position, momentum buffers, and augmentation draws from the generator
    "lars_warmup_augmented": {"optimizer": "lars_warmup", "lr": 1.0, "warmup_epochs": 2, "augment": True},
    "lamb": {"optimizer": "lamb", "lr": 0.01},
}


def serialised(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_run_reproduces_the_uninterrupted_one(case):
    config = {**BASE, **CASES[case]}
    rows, states = [], {}
    run(config, rows.append, save_state=lambda epoch, state: states.__setitem__(epoch, serialised(state)))
    assert sorted(states) == [1, 2, 3, 4]
    for k in (1, 2):
        resumed = []
        result = run(config, resumed.append, state=states[k])
        assert [r["epoch"] for r in resumed] == list(range(k + 1, 5))
        assert [comparable(r) for r in resumed] == [comparable(r) for r in rows[k:]]
        assert [comparable(r) for r in result["history"]] == [comparable(r) for r in rows]
        assert result["epochs_run"] == 4


def test_checkpoint_every_and_off():
    config = {**BASE, **CASES["tvlars"], "epochs": 5, "checkpoint_every": 2}
    saved = []
    run(config, save_state=lambda epoch, state: saved.append(epoch))
    assert saved == [2, 4]
    run({**config, "checkpoint_every": 0}, save_state=lambda epoch, state: saved.append(epoch))
    assert saved == [2, 4]
    with pytest.raises(ValueError, match="checkpoint_every"):
        run({**config, "checkpoint_every": -1})


def test_best_so_far_trackers_survive_a_resume():
    config = {**BASE, **CASES["tvlars"]}
    rows, states = [], {}
    run(config, rows.append, save_state=lambda e, s: states.__setitem__(e, serialised(s)))
    resumed = []
    run(config, resumed.append, state=states[3])
    assert resumed[0]["best_val_acc"] == max(r["val_acc"] for r in rows)
    assert resumed[0]["test_acc_at_best_val"] == rows[-1]["test_acc_at_best_val"]


def test_a_state_of_another_version_is_refused():
    config = {**BASE, **CASES["tvlars"], "epochs": 1}
    states = []
    run(config, save_state=lambda e, s: states.append(s))
    with pytest.raises(ValueError, match="version"):
        run(config, state={**states[0], "version": 99})
