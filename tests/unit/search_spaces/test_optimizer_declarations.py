"""The built-in optimizers' declarations agree with the paper presets, and a declaration registered in code is all a
new optimizer needs: a study spec, a comparison arm and the trainer take it."""

from __future__ import annotations

import math
from typing import Annotated

import pytest
import torch

from search_spaces import load, names
from search_spaces.comparison import ComparisonSpec, expand
from search_spaces.spec import StudySpec
from tvlars.optim import OPTIMIZERS, Hyperparameter, OptimizerSpec, SearchRange, get_optimizer, register_optimizer
from tvlars.registry import Bounds, PluginError
from tvlars.train import TrialConfig, run

#: The paper preset whose grids each built-in's reference grids are (LARS without warm-up sweeps TVLARS's LR grid).
PRESET_OF = {"tvlars": "tvlars", "lars": "lars", "lars_warmup": "lars-warmup", "lamb": "lamb"}


@pytest.mark.parametrize("optimizer", sorted(PRESET_OF))
def test_reference_grids_are_the_paper_presets_grids(optimizer):
    spec = get_optimizer(optimizer)
    presets = {n: load(n) for n in names() if n.startswith("paper-cifar10-resnet18-bs") and "-bt-" not in n}
    found = {}
    for name, data in presets.items():
        bs, _, preset_optimizer = name.removeprefix("paper-cifar10-resnet18-bs").partition("-")
        if preset_optimizer == PRESET_OF[optimizer]:
            found[int(bs)] = {k: tuple(p["choices"]) for k, p in data["search_space"].items()}
            fixed = {k: v for k, v in data["fixed"].items() if k not in ("lam", "delay_epochs", "warmup_epochs")}
            assert fixed == dict(spec.official), name
    assert found == {bs: dict(grids) for bs, grids in spec.references.items()}
    # the reference point: each grid's geometric mean
    lrs = found[512]["lr"]
    assert spec.reference(512)["lr"] == pytest.approx(math.exp(sum(map(math.log, lrs)) / len(lrs)), rel=1e-5)


def test_a_declaration_registered_in_code_is_a_study_optimizer_an_arm_and_a_trial():
    def rmsprop(params, lr=1e-2, alpha=0.99, weight_decay=0.0):
        return torch.optim.RMSprop(params, lr=lr, alpha=alpha, weight_decay=weight_decay)

    spec = OptimizerSpec(
        rmsprop,
        (
            Hyperparameter("lr", Annotated[float, Bounds(ge=0)], 1e-2),
            Hyperparameter(
                "rms_alpha",
                Annotated[float, Bounds(gt=0, lt=1)],
                0.99,
                argument="alpha",
                search=SearchRange(0.9, 0.999),
            ),
        ),
        "RMSprop",
        references={128: {"lr": (1e-3, 1e-2)}},
    )
    try:
        entry = register_optimizer("rmsprop_test", spec)
        assert entry.source.endswith("(registered in code)")
        with pytest.raises(PluginError, match="registered twice"):
            register_optimizer("rmsprop_test", spec)
        result = run({"optimizer": "rmsprop_test", "dataset": "synthetic", "epochs": 1, "rms_alpha": 0.9})
        assert result["epochs_run"] == 1
        with pytest.raises(ValueError, match=r"Invalid rms_alpha: 1.5 \(a number > 0, < 1\)"):
            TrialConfig.from_dict({"optimizer": "rmsprop_test", "rms_alpha": 1.5})
        with pytest.raises(ValueError, match=r"rms_alpha: optimizer 'tvlars' does not take it \(.*: rmsprop_test\)"):
            TrialConfig.from_dict({"optimizer": "tvlars", "rms_alpha": 0.9})
        cmp = ComparisonSpec.model_validate(
            {
                "name": "c",
                "workload": {"dataset": "synthetic", "model": "mlp", "epochs": 2},
                "arms": [{"optimizer": "rmsprop_test"}, {"optimizer": "sgd", "lr_center": 0.1}],
                "batch_sizes": [128],
                "tuning_repeats": 1,
            }
        )
        study = StudySpec.model_validate(expand(cmp)[0].spec)
        assert study.search_space["rms_alpha"].low == 0.9 and study.enqueue[0]["lr"] == pytest.approx(10**-2.5)
    finally:  # leave the process's registry as it was
        OPTIMIZERS._entries.pop("rmsprop_test", None)
