"""The comparison report: one inline PNG per plot, Markdown files holding the stored numbers, and a real browser."""

from __future__ import annotations

import base64
import html
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from service.comparisons.report import (
    PLOTS,
    format_difference,
    format_look,
    format_mdd,
    format_p,
    format_spread,
    format_summary,
    reading,
    render_figures,
    render_html,
    render_markdown,
    step_multiplier,
    write_markdown,
)
from service.comparisons.result import ArmResult, ParamRange, RepeatRecord
from service.comparisons.stats import Verdict
from tests.utils.comparisons import chromium, fabricated_result, headless_chromium, rendered_image_widths
from tvlars import phi

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IMG = re.compile(r'<img alt="[^"]*" id="plot-([a-z_]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def result():
    return fabricated_result()


@pytest.fixture(scope="module")
def figures(result):
    return render_figures(result)


@pytest.fixture(scope="module")
def page(result, figures):
    return render_html(result, figures)


def test_html_has_one_valid_inline_png_per_plot_and_no_external_asset(page):
    found = _IMG.findall(page)
    assert [key for key, _ in found] == list(PLOTS)
    for _, data in found:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG_MAGIC)
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width > 200 and height > 100
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_html_escapes_text(result, figures):
    result = fabricated_result(batch_sizes=(64,), n_trials=3, seeds=2)
    result.title = "<script>alert(1)</script> & co"
    page = render_html(result, render_figures(result))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page


def test_tables_hold_the_stored_numbers_formatted_as_in_the_markdown(result, page, tmp_path):
    md_path = write_markdown(result, tmp_path / "out")
    md = md_path.read_text()
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        png = (md_path.parent / name).read_bytes()
        assert png.startswith(PNG_MAGIC)
    assert len(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)) == len(PLOTS)
    arm = result.arm("tvlars", 256)
    summary = arm.rerun
    text = format_summary(summary)
    # the stored numbers by hand: mean and interval in percent with two decimals
    assert (
        f"{100 * summary.mean:.2f} %" in text and f"[{100 * summary.ci_low:.2f}, {100 * summary.ci_high:.2f}]" in text
    )
    assert f"({summary.n_repeats} repeats × {summary.n_seeds} seeds)" in text
    spread = format_spread(summary)
    assert spread == f"{100 * min(summary.repeat_means):.2f}–{100 * max(summary.repeat_means):.2f} % over 3 repeats"
    assert f"| 256 | tvlars | {text} | {spread} |" in md
    assert text in page and spread in page
    for v in result.verdicts():
        d = v.difference
        assert f"({d.n} repeats × {d.n_seeds} seeds)" in format_difference(d)
        assert f"[{100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}]" in format_difference(d)
        assert format_p(d) == f"{d.p_value:.3g}"
        row = (
            f"| {v.batch_size} | {v.arm} − {v.against} | {format_difference(d)} | {format_p(d)} | {d.alpha:.3g} | "
            f"{100 * d.mdd:.2f} pp | {format_look(d, 3)} | primary | {v.verdict.value} |"
        )
        assert row in md
        assert format_difference(d) in page and format_p(d) in page and format_mdd(d) in page
    assert {v.verdict for v in result.verdicts()} >= {Verdict.BETTER, Verdict.UNDECIDED}


def test_the_reading_is_generated_from_the_verdicts(result, page):
    text = reading(result)
    verdicts = result.verdicts()
    counts = {w: sum(v.verdict is w for v in verdicts) for w in Verdict}
    assert text.startswith(f"Of {len(verdicts)} verdicts: ")
    assert all(f"{n} {w.value}" in text for w, n in counts.items() if n)
    for v in verdicts:  # every sentence carries its numbers; no direction without a decided verdict
        d = v.difference
        sentence = f"At batch size {v.batch_size}, {v.arm} against {v.against}: {v.verdict.value}"
        assert sentence in text and f"d̄ = {100 * d.mean:+.2f} pp" in text
        if v.verdict is Verdict.UNDECIDED:
            assert f"{sentence} (d̄ = {100 * d.mean:+.2f} pp" in text and f"MDD {100 * d.mdd:.2f} pp" in text
    assert "no clear difference" not in text and "holds" not in text
    assert html.escape(text) in page and "<h2>Reading</h2>" in page


def test_spending_and_range_sections_show_the_stored_numbers(result, page, tmp_path):
    md = write_markdown(result, tmp_path / "out").read_text()
    for check in result.spending():
        spent = " | ".join(str(check.spent[label]) for label in result.labels)
        assert f"| {check.batch_size} | {check.repeat} | {spent} | {check.spread} | yes (≤ 30) |" in md
    arm = result.arm("lars", 256)
    positions = ", ".join(f"{r.ranges['lr'].position:.2f}" for r in arm.repeats)
    assert "| 256 | lars | lr | [0.18, 18] log |" in md and positions in md
    assert "Spending: tuning epochs per arm" in page and "Range positions" in page


def test_unequal_spending_and_edge_optima_are_flagged():
    result = fabricated_result(batch_sizes=(64,), n_trials=3, seeds=2)
    lamb = result.arm("lamb", 64)
    edge = RepeatRecord(1, ["x"], lamb.repeats[1].epochs_spent + 31, 0.7, {"lr": 0.0011},
                        {"lr": ParamRange(0.001, 0.1, True, 0.0011, 0.02, True, extended=True)})  # fmt: skip
    lamb.repeats[1] = edge
    md = render_markdown(result, {key: f"{key}.png" for key in PLOTS})
    assert "| 64 | 1 |" in md and "NO (> 30)" in md
    (lamb_row,) = [line for line in md.splitlines() if line.startswith("| 64 | lamb | lr |")]
    assert lamb_row.endswith("| repeat 1 | repeat 1 |")  # extended, and in the outer 10 %
    (verdict,) = [v for v in result.verdicts() if v.against == "lamb"]
    assert verdict.verdict is Verdict.INCONCLUSIVE and "unequal spending in repeat 1" in verdict.reason
    page = render_html(result)
    assert '<td class="inconclusive">inconclusive</td>' in page and html.escape(verdict.reason) in page


def test_one_seed_and_one_repeat_are_reported_without_an_interval_or_verdict():
    result = fabricated_result(batch_sizes=(64,), n_trials=3, seeds=1, repeats=1)
    assert format_summary(result.arm("lamb", 64).rerun).endswith("% (n=1, no interval)")
    assert all(v.verdict is Verdict.INCONCLUSIVE and v.difference is None for v in result.verdicts())
    assert "a paired t over repeats needs ≥ 2" in render_html(result)


def test_search_failure_is_shown_for_every_verdict_at_that_batch_size():
    result = fabricated_result(batch_sizes=(64, 512), n_trials=3, seeds=3, levels={"lars": 0.80})
    page = render_html(result)
    failed = [v for v in result.verdicts() if v.verdict is Verdict.SEARCH_FAILURE]
    assert {v.batch_size for v in failed} == {64, 512} and len(failed) == 6
    assert '<td class="inconclusive">inconclusive: search failure</td>' in page
    assert "tuned tvlars is worse than tuned lars" in page and ">worse<" not in page


def test_schedules_convert_lam_steps_and_delay_fraction_as_the_trainer_does():
    tv = ArmResult("tvlars", "tvlars", 512, [1], {"lr": 2.0, "lam_steps": 5.0}, {"alpha": 0.1, "delay_fraction": 0.2},
                   5, 10)  # fmt: skip
    _, values = step_multiplier(tv)  # 50 steps: λ = 5 / 50, delay = 0.2 × 50 = 10 steps
    assert values == pytest.approx(2.0 * phi(np.arange(1, 51, dtype=float), lam=0.1, delay=10, alpha=0.1))


def test_schedules_are_tvlars_lr_times_phi_and_warmup_lars_scaled_lr():
    tv = ArmResult("tvlars", "tvlars", 512, [1], {"lr": 2.0, "lam": 0.01}, {"alpha": 0.1, "delay_epochs": 1}, 5, 10)
    steps, values = step_multiplier(tv)
    assert steps[0] == 1 and steps[-1] == 50
    assert values == pytest.approx(2.0 * phi(np.arange(1, 51, dtype=float), lam=0.01, delay=10, alpha=0.1))
    warm = ArmResult("w", "lars_warmup", 512, [2], {"lr": 0.3}, {"warmup_epochs": 1}, 5, 10)
    _, values = step_multiplier(warm)
    assert values[0] == 0.0 and values[10] == pytest.approx(0.3 * 512 / 256) and values[-1] < values[10]


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_every_image_renders_in_headless_chromium(page, tmp_path):
    widths = rendered_image_widths(page, tmp_path)
    assert len(widths) == len(PLOTS) and all(w > 200 for w in widths), widths
    # and a screenshot of the unmodified page, kept when TVLARS_REPORT_SCREENSHOT names a path
    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")
    shot = Path(os.environ.get("TVLARS_REPORT_SCREENSHOT") or tmp_path / "shot.png")
    subprocess.run(
        [*headless_chromium(tmp_path), "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}",
         html_file.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes().startswith(PNG_MAGIC)


def test_the_cli_verdict_table_shows_the_verdicts_numbers(capsys):
    from dataclasses import asdict

    from service.cli import show_verdicts
    from service.core.jsondata import jsonable

    result = fabricated_result(batch_sizes=(64,), n_trials=3)
    result.primary = ["lamb"]
    verdicts = result.verdicts()
    rows = [jsonable({**asdict(v), "difference": asdict(v.difference)}) for v in verdicts]
    show_verdicts({"name": "c", "arms": [], "verdicts": {"64": rows}})
    out = capsys.readouterr().out
    assert "paired t over tuning repeats" in out and "Holm" not in out
    for v in verdicts:
        d = v.difference
        line = next(x for x in out.splitlines() if f" {v.against} " in x and "64" in x)
        assert f"{100 * d.mean:+.2f} pp" in line and f"{d.alpha:.3g}" in line and f"{100 * d.mdd:.2f} pp" in line
        assert ("primary" if v.primary else "secondary") in line and v.verdict.value in line
