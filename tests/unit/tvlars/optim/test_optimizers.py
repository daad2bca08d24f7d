"""Behaviour every layer-wise optimizer shares, driven by the case table in cases.py."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tvlars import LARS, TVLARS
from tvlars.testing.cases import (
    ALL_ERRORS,
    ALL_INPUTS,
    CASES,
    TinyNet,
    assert_same_parameters,
    batches,
    case_id,
    run_case,
    train_steps,
)


@pytest.mark.parametrize(("case", "err"), ALL_ERRORS, ids=case_id)
def test_error_inputs(case, err):
    with pytest.raises(err.error, match=err.match):
        case.cls(TinyNet().parameters(), **err.kwargs)


@pytest.mark.parametrize(("case", "inp"), ALL_INPUTS, ids=case_id)
def test_loss_falls(case, inp):
    torch.manual_seed(0)
    model = TinyNet()
    opt = case.cls(model.parameters(), **inp.kwargs)
    data = batches(1) * 40  # one fixed batch: the loss must fall on it
    losses = train_steps(model, opt, data)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize(("case", "inp"), ALL_INPUTS, ids=case_id)
def test_foreach_matches_single_tensor(case, inp):
    ref, ref_opt = run_case(case, inp, {"foreach": False})
    got, got_opt = run_case(case, inp, {"foreach": True})
    assert_same_parameters(ref, got, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got_opt.last_trust_ratio, ref_opt.last_trust_ratio, rtol=1e-9, atol=0)
    # the never-used parameter has no state; the frozen layer is untouched
    assert got.unused not in got_opt.state
    torch.testing.assert_close(got.frozen.weight, ref.frozen.weight, rtol=0, atol=0)


@pytest.mark.parametrize(("case", "inp"), [(c, i) for c, i in ALL_INPUTS if i.fused], ids=case_id)
def test_fused_matches_single_tensor(case, inp):
    ref, _ = run_case(case, inp, {"foreach": False})
    got, _ = run_case(case, inp, {"fused": True})
    assert_same_parameters(ref, got, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("case", "inp"), ALL_INPUTS, ids=case_id)
def test_state_dict_round_trip(case, inp):
    torch.manual_seed(0)
    data = batches(6)
    model = TinyNet()
    opt = case.cls(model.parameters(), **inp.kwargs)
    train_steps(model, opt, data[:3])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train_steps(model, opt, data[3:])

    model2 = TinyNet()
    model2.load_state_dict(saved_model)
    opt2 = case.cls(model2.parameters(), **inp.kwargs)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["step"] == 3
    train_steps(model2, opt2, data[3:])
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_load_state_dict_without_newer_keys(case):
    model = TinyNet()
    opt = case.cls(model.parameters(), **case.inputs[0].kwargs)
    train_steps(model, opt, batches(2))
    state = opt.state_dict()
    for group in state["param_groups"]:  # a checkpoint from before these options existed
        for key in ("step", "adapt", "exclude_1d", "foreach", "fused", "gamma_min", "bias_correction"):
            group.pop(key, None)
    opt2 = case.cls(TinyNet().parameters(), **case.inputs[0].kwargs)
    opt2.load_state_dict(state)
    group = opt2.param_groups[0]
    assert group["step"] == 0 and group["adapt"] is True and group["exclude_1d"] is True
    train_steps(model, opt2, batches(1))
    assert opt2.param_groups[0]["step"] == 1


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_deepcopy_steps_identically(case):
    torch.manual_seed(0)
    model = TinyNet()
    opt = case.cls(model.parameters(), **case.inputs[0].kwargs)
    data = batches(4)
    train_steps(model, opt, data[:2])
    model2, opt2 = copy.deepcopy((model, opt))
    assert any(p is model2.conv.weight for p in opt2.param_groups[0]["params"])
    train_steps(model, opt, data[2:])
    train_steps(model2, opt2, data[2:])
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_param_groups_behave_like_separate_optimizers(case):
    kwargs = dict(case.inputs[0].kwargs)
    torch.manual_seed(0)
    model = TinyNet()
    twin = copy.deepcopy(model)
    head_lr = kwargs["lr"] / 3
    grouped = case.cls(
        [{"params": model.conv.parameters()}, {"params": model.head.parameters(), "lr": head_lr}], **kwargs
    )
    separate = [
        case.cls(twin.conv.parameters(), **kwargs),
        case.cls(twin.head.parameters(), **{**kwargs, "lr": head_lr}),
    ]
    for x, y in batches(4):
        for m, opts in ((model, [grouped]), (twin, separate)):
            for o in opts:
                o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            for o in opts:
                o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


class _NoHostSync(TorchDispatchMode):
    """Fails on any op that copies a tensor value to the host (`.item()`, `bool(t)`, `float(t)`, `.tolist()`)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.equal.default):
            raise AssertionError(f"host sync in step(): {func}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("case", "inp"), ALL_INPUTS, ids=case_id)
@pytest.mark.parametrize("foreach", [False, True])
def test_step_reads_nothing_from_the_device(case, inp, foreach):
    model = TinyNet()
    opt = case.cls(model.parameters(), **inp.kwargs, foreach=foreach)
    x, y = batches(1)[0]
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with _NoHostSync():
            opt.step()
    with pytest.raises(AssertionError, match="host sync"), _NoHostSync():
        torch.ones(1).item()  # the guard itself works


def test_sparse_gradients_are_refused():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = TVLARS(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


def test_closure_returns_loss():
    model = TinyNet()
    opt = LARS(model.parameters(), lr=1.0)
    x, y = batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and loss.requires_grad


def test_torch_compile_of_step_matches_eager():
    torch.manual_seed(0)
    model = TinyNet()
    twin = copy.deepcopy(model)
    opt = TVLARS(model.parameters(), lr=5.0, lam=0.05)
    opt_twin = TVLARS(twin.parameters(), lr=5.0, lam=0.05)
    compiled_step = torch.compile(opt_twin.step)
    for x, y in batches(4):
        for m, step, o in ((model, opt.step, opt), (twin, compiled_step, opt_twin)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert opt_twin.param_groups[0]["step"] == 4
