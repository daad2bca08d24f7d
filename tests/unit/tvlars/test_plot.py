import pytest

from tvlars import phi

pytest.importorskip("matplotlib")


def test_phi_curves_draws_every_knob(tmp_path):
    from tvlars.plot import phi_curves

    path = tmp_path / "phi.png"
    fig = phi_curves(total_steps=500, delay=100, lams=(1e-3, 1e-2), path=path)
    assert path.stat().st_size > 10_000
    axes = fig.get_axes()
    assert len(axes) == 5
    lam_lines = axes[0].get_lines()
    assert [line.get_label() for line in lam_lines] == ["lam = 0.001", "lam = 0.01"]
    assert lam_lines[1].get_ydata()[-1] == pytest.approx(phi(500, 1e-2, delay=100))
