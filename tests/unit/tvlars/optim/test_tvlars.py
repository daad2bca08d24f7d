"""TVLARS against the paper's formula and the official code; LAMB against the official LAMB; φ; the factory."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from tvlars import LAMB, LARS, TVLARS, create_optimizer, param_groups, phi
from tvlars.optim import get_optimizer_info, list_optimizers
from tvlars.testing.cases import TinyNet, assert_same_parameters, batches, step_together
from tvlars.testing.official import OfficialLAMB, OfficialTVLARS


# float32 at a milder lr: at lr 3 the 1-D parameters (plain SGD) grow to hundreds and amplify float32 rounding
@pytest.mark.parametrize(("dtype", "lr", "tol"), [(torch.float64, 3.0, 1e-12), (torch.float32, 1.0, 1e-4)])
def test_official_parity_over_40_steps(dtype, lr, tol):
    torch.manual_seed(0)
    ours_model = TinyNet(big_weight=True).to(dtype)
    assert ours_model.head.weight.norm() > 10  # the official clamp of 10 is in play
    official_model = copy.deepcopy(ours_model)
    lam = 5e-3
    ours = TVLARS(ours_model.parameters(), lr=lr, lam=lam, alpha=0.1, delay=0, gamma_min=0, norm_clip=10)
    official = OfficialTVLARS(official_model.parameters(), lr=lr, lmbda=lam)
    data = batches(40, dtype, seed=1)
    for x, y in data:
        step_together(((ours_model, ours), (official_model, official)), x, y)
        # the same applied ratio, every step (the official log keeps 0/0 = nan where its guard then applies 1)
        logged = torch.tensor(official.ratio_log[-1], dtype=torch.float64)
        applied = torch.where(torch.isfinite(logged), logged, torch.ones_like(logged))
        torch.testing.assert_close(ours.last_trust_ratio, applied.mean().to(dtype), rtol=tol, atol=0)
    assert_same_parameters(official_model, ours_model, rtol=tol, atol=tol)
    assert ours.param_groups[0]["step"] == 40 == official.step_cnt


def test_paper_form_two_steps_by_hand():
    # w = (3, 4), |w| = 5; g = 0.2 w, |g| = 1; no weight decay, so d = g.
    w = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    g = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    opt = TVLARS([w], lr=1.0, momentum=0.9, weight_decay=0.0, eta=0.1, lam=0.5, delay=2, alpha=1.0, gamma_min=0.1)
    # t = 1: phi = 1 / (1 + e^{-0.5}) + 0.1 = 0.7224593; q1 = 0.1 * phi * 5 / 1 = 0.3612297; b1 = q1 g
    w.grad = g.clone()
    opt.step()
    q1 = 0.1 * (1 / (1 + math.exp(-0.5)) + 0.1) * 5.0
    assert q1 == pytest.approx(0.3612297, abs=1e-7)
    torch.testing.assert_close(w.detach(), torch.tensor([[3 - 0.6 * q1, 4 - 0.8 * q1]], dtype=torch.float64))
    # t = 2: phi = 1/2 + 0.1 = 0.6; |w1| = 5 (1 - 0.2 q1); q2 = 0.1 * 0.6 * |w1|; b2 = 0.9 q1 g + q2 g
    w.grad = g.clone()
    opt.step()
    q2 = 0.1 * 0.6 * 5.0 * (1 - 0.2 * q1)
    assert q2 == pytest.approx(0.2783262, abs=1e-7)
    total = q1 + 0.9 * q1 + q2
    assert total == pytest.approx(0.9646626, abs=1e-7)
    torch.testing.assert_close(w.detach(), torch.tensor([[3 - 0.6 * total, 4 - 0.8 * total]], dtype=torch.float64))


def test_paper_form_with_weight_decay_and_zero_norm_guard():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    zero = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))  # |w| = 0: ratio 1, a plain momentum step
    w.grad = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    zero.grad = torch.ones(2, 2, dtype=torch.float64)
    opt = TVLARS([w, zero], lr=0.5, weight_decay=0.1, eta=0.01, lam=1e-3)
    opt.step()
    d = torch.tensor([[1.3, 0.4]], dtype=torch.float64)  # g + 0.1 w
    q = 0.01 * phi(1, 1e-3) * 5.0 / d.norm().item()
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0]], dtype=torch.float64) - 0.5 * q * d)
    torch.testing.assert_close(zero.detach(), torch.full((2, 2), -0.5, dtype=torch.float64))


def test_tvlars_with_unit_phi_is_lars():
    torch.manual_seed(0)
    a = TinyNet()
    b = copy.deepcopy(a)
    tv = TVLARS(a.parameters(), lr=15.0, lam=0.0, alpha=0.0, gamma_min=0.0)
    pairs = ((a, tv), (b, LARS(b.parameters(), lr=15.0)))
    for x, y in batches(8):
        step_together(pairs, x, y)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_lamb_matches_the_official_lamb():
    torch.manual_seed(0)
    ours_model = TinyNet(big_weight=True)
    official_model = copy.deepcopy(ours_model)
    ours = LAMB(
        ours_model.parameters(), lr=0.01, weight_decay=0.01, bias_correction=False, norm_clip=10, exclude_1d=False
    )
    official = OfficialLAMB(official_model.parameters(), lr=0.01, weight_decay=0.01)
    for x, y in batches(25, seed=2):
        step_together(((ours_model, ours), (official_model, official)), x, y)
    assert_same_parameters(official_model, ours_model, rtol=1e-5, atol=1e-6)


def test_lamb_bias_correction_first_step_is_sign_sized():
    # With bias correction the first Adam step is g / (|g| + eps) = ±1 per element.
    w = nn.Parameter(torch.tensor([2.0, -1.0, 0.5]))
    w.grad = torch.tensor([0.3, -0.2, 0.0])
    LAMB([w], lr=0.1, exclude_1d=False).step()
    u = torch.tensor([1.0, -1.0, 0.0])
    ratio = torch.tensor([2.0, -1.0, 0.5]).norm() / u.norm()
    torch.testing.assert_close(w.detach(), torch.tensor([2.0, -1.0, 0.5]) - 0.1 * ratio * u, rtol=1e-5, atol=1e-6)


def test_foreach_handles_mixed_dtypes_in_one_group():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(5, 2, dtype=torch.float64))]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    opts = [TVLARS(params, lr=3.0, foreach=True), TVLARS(twins, lr=3.0, foreach=False)]
    for step in range(3):
        for ps, o in zip((params, twins), opts, strict=True):
            for p in ps:
                p.grad = torch.full_like(p, 0.1 * (step + 1))
            o.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(opts[0].last_trust_ratio, opts[1].last_trust_ratio, rtol=1e-6, atol=0)


# φ


def test_phi_official_special_case_and_shape():
    assert phi(1, 1e-3, alpha=0.1) == pytest.approx(1 / (0.1 + math.exp(1e-3)))
    t = np.arange(1, 20001)
    values = phi(t, lam=1e-3, delay=5000, alpha=1.0, gamma_min=0.05)
    assert values[0] == pytest.approx(1 / (1 + math.exp(-4.999)) + 0.05)
    assert np.all(np.diff(values) < 0)  # decays monotonically
    assert values[-1] == pytest.approx(0.05, abs=1e-6)  # to the floor
    assert phi(5000, 1e-3, delay=5000) == pytest.approx(0.5)  # half-way point at t = d_e (alpha = 1)
    assert phi(10**9, 1.0, gamma_min=0.2) == 0.2  # no overflow
    torch.testing.assert_close(
        phi(torch.tensor([1.0, 5000.0]), 1e-3, 5000), torch.tensor(phi([1, 5000], 1e-3, 5000)).float()
    )


def test_phi_equals_what_tvlars_applies():
    opt = TVLARS([nn.Parameter(torch.ones(2, 2))], lam=0.01, delay=3, alpha=0.5, gamma_min=0.01)
    assert opt.current_phi() == pytest.approx(phi(1, 0.01, 3, 0.5, 0.01))
    for _ in range(7):
        opt.param_groups[0]["params"][0].grad = torch.ones(2, 2)
        opt.step()
    assert opt.current_phi() == pytest.approx(phi(7, 0.01, 3, 0.5, 0.01))


# factory and param groups


def test_create_optimizer_registry():
    names = list_optimizers()  # sorted; with any installed plugin's (make install adds the example's lion)
    assert names == sorted(names) and {"adamw", "lamb", "lars", "lars_warmup", "sgd", "tvlars"} <= set(names)
    model = TinyNet()
    opt = create_optimizer("TVLARS", model, lr=2.0, lam=1e-4, weight_decay=1e-3)
    assert isinstance(opt, TVLARS) and opt.defaults["lam"] == 1e-4
    plain, decay = opt.param_groups
    assert plain["weight_decay"] == 0.0 and plain["adapt"] is False
    assert decay["weight_decay"] == 1e-3
    assert all(p.ndim <= 1 for p in plain["params"]) and all(p.ndim > 1 for p in decay["params"])
    assert not any(p is model.frozen.weight for g in opt.param_groups for p in g["params"])
    sgd = create_optimizer("sgd", model, lr=0.1)
    assert isinstance(sgd, torch.optim.SGD) and "adapt" not in sgd.param_groups[0]
    assert sgd.param_groups[1]["momentum"] == 0.9
    assert get_optimizer_info("lamb").has_betas and not get_optimizer_info("lamb").has_momentum


def test_create_optimizer_errors():
    with pytest.raises(ValueError, match=r"Unknown optimizer: 'adam' \(choose from adamw, lamb, lars, lars_warmup"):
        create_optimizer("adam", TinyNet(), lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid hyperparameter for lars: lam \(accepts lr, momentum"):
        create_optimizer("lars", TinyNet(), lr=0.1, lam=1e-3)
    with pytest.raises(ValueError, match=r"Invalid lam: -1"):
        create_optimizer("tvlars", TinyNet(), lam=-1)


def test_param_groups_like_timm():
    class WithSkip(TinyNet):
        def no_weight_decay(self):
            return {"head.weight"}

    plain, decay = param_groups(WithSkip(), weight_decay=1e-4, no_weight_decay=["conv.weight"])
    plain_ids = {id(p) for p in plain["params"]}
    model_params = dict(WithSkip().named_parameters())
    assert len(plain["params"]) == 6  # bn.weight, bn.bias, head.bias, head.weight, conv.weight, unused (1-d)
    assert decay["params"] == [] or all(id(p) not in plain_ids for p in decay["params"])
    assert "frozen.weight" in model_params  # frozen exists but is left out of both groups
    _, decay_all = param_groups(TinyNet(), exclude_1d=False)
    assert any(p.ndim == 1 for p in decay_all["params"])  # 1-d weights of BN now decay


def test_tvlars_imports_with_only_torch_and_numpy():
    # Block every third-party top-level module except torch, numpy and what torch itself needs.
    code = r"""
import sys, importlib.abc
ALLOWED = {"torch", "torchgen", "functorch", "numpy", "tvlars", "typing_extensions", "sympy", "mpmath",
           "filelock", "jinja2", "markupsafe", "networkx", "fsspec", "packaging", "opt_einsum", "optree"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"blocked third-party import: {name}", name=name)
sys.meta_path.insert(0, Block())
import tvlars, tvlars.optim, tvlars.schedules
from tvlars import TVLARS, LARS, LAMB, phi
SERVICE_SIDE = {"ray", "optuna", "fastapi", "service", "search_spaces"}
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in SERVICE_SIDE))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok []"
