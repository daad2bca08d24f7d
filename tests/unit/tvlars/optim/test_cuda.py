"""The optimizers and the trainer on a CUDA GPU: the same steps as the float64 CPU reference, no host sync inside
``step()``, a trial that trains. Marked ``cuda``: they skip where no GPU is (tests/conftest.py), as on the project's
CPU machine; ``benchmarks/gpu.py`` runs the same checks with timings on a lent GPU."""

from __future__ import annotations

import math

import pytest
import torch

from tvlars import LAMB, LARS, TVLARS
from tvlars.models import resnet18
from tvlars.testing.cases import ALL_INPUTS, assert_same_parameters, case_id, run_case
from tvlars.train import run

pytestmark = pytest.mark.cuda

IMPLS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


@pytest.mark.parametrize("impl", ["single", "foreach"])
@pytest.mark.parametrize(("case", "inp"), ALL_INPUTS, ids=case_id)
def test_cuda_matches_the_float64_cpu_reference(case, inp, impl):
    reference, _ = run_case(case, inp, {"foreach": False})
    model, _ = run_case(case, inp, IMPLS[impl], device="cuda")
    assert_same_parameters(reference, model.cpu(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("case", "inp"), [(c, i) for c, i in ALL_INPUTS if i.fused], ids=case_id)
def test_cuda_fused_matches_the_float64_cpu_reference(case, inp):
    reference, _ = run_case(case, inp, {"foreach": False})
    model, _ = run_case(case, inp, IMPLS["fused"], device="cuda")
    assert_same_parameters(reference, model.cpu(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("cls", [TVLARS, LARS, LAMB], ids=lambda c: c.__name__)
def test_step_makes_no_host_sync(cls, impl):
    torch.manual_seed(0)
    params = [p.detach().cuda().requires_grad_() for p in resnet18().parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    opt = cls(params, lr=1e-3, **IMPLS[impl])
    opt.step()  # state creation (and compilation) may sync; the steps after it must not
    opt.step()
    torch.cuda.synchronize()
    before = [p.detach().clone() for p in params]
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        for _ in range(3):
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    assert all(bool(torch.isfinite(p).all()) for p in params)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resnet18_trial_trains_on_cuda(precision):
    rows = []
    result = run(
        {
            "dataset": "synthetic",
            "dataset_options": {"n_train": 2048, "n_test": 512, "image_size": 32},
            "model": "resnet18",
            "batch_size": 256,
            "epochs": 2,
            "lr": 1.0,
            "precision": precision,
            "device": "cuda",
        },
        rows.append,
    )
    assert result["device"].startswith("cuda:") and not result["diverged"]
    assert len(rows) == 2 and all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result["images_per_s"] > 0
