"""The HTML report: built from a synthetic results payload, checked as text and in headless Chromium."""

from __future__ import annotations

import copy
import math
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from qpeft.analysis.capacity import jacobian_rank, linear_capacity, summarise_capacity
from qpeft.analysis.convergence import convergence_figures, loss_curve
from qpeft.analysis.timing import latency_figures
from qpeft.experiment.results import build_payload
from qpeft.report.findings import findings
from qpeft.report.html import html_report
from qpeft.report.markdown import markdown_report
from qpeft.settings import AnalysisSettings, EvalSettings, Experiment, TrainSettings

ALL_PLOTS = {"plot-loss", "plot-grad-norm", "plot-quality", "plot-efficiency", "plot-capacity-spectra",
             "plot-capacity-rank", "plot-noise", "plot-hardware"}

# method -> (BLEU, ROUGE-L, trainable params, peak MB, tokens/s, latency ratio, loss floor, decay steps)
PROFILES = {
    "full": (60.0, 64.0, 1_000_000, 900.0, 1_000.0, 1.00, 0.60, 15.0),
    "lora": (62.0, 65.0, 8_000, 500.0, 2_500.0, 1.30, 0.70, 25.0),
    "prefix": (40.0, 50.0, 3_000, 480.0, 2_800.0, 1.10, 1.10, 40.0),
    "qaa": (58.0, 62.0, 2_000, 510.0, 2_000.0, 1.60, 0.80, 30.0),
}


def synthetic_seed(seed: int, robustness: bool) -> dict[str, Any]:
    """One seed's analysed figures, built with the real analysis functions on made-up runs."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    figures: dict[str, dict[str, Any]] = {"base": {"bleu": 5.0, "rougeL": 20.0, "bertscore_f1": 80.0, "test_loss": 3.0,
                                                   "trainable_params": 0, "trainable_pct": 0.0, "test_items": 10,
                                                   "latency_ms_per_token": 2.0, "latency_vs_base": 1.0}}
    curves, capacity = {}, {}
    for name, (bleu, rouge, params, memory, speed, latency, floor, tau) in PROFILES.items():
        steps = list(range(1, 101))
        log = {"step": [float(s) for s in steps],
               "loss": [floor + 2.5 * math.exp(-s / tau) + rng.gauss(0, 0.03) for s in steps],
               "grad_norm": [1.0 + 0.5 * math.exp(-s / tau) + abs(rng.gauss(0, 0.1)) for s in steps],
               "elapsed_s": [0.1 * s for s in steps]}
        jitter = rng.gauss(0, 0.5)
        figures[name] = {
            "bleu": bleu + jitter, "rougeL": rouge + jitter, "bertscore_f1": 90.0 + jitter / 10, "test_loss": floor,
            "trainable_params": params, "trainable_pct": 100.0 * params / 1_000_000, "peak_memory_mb": memory,
            "train_tokens_per_s": speed * (1 + rng.gauss(0, 0.02)), "train_seconds": 100.0, "adapter_bytes": 4 * params,
            "generation_ms_per_token": 3.0, "latency_ms_per_token": 2.0 * latency,
            **latency_figures([latency * (1 + rng.gauss(0, 0.01)) for _ in range(7)], 0.95),
            "test_items": 10, **convergence_figures(log, total_steps=100),
        }
        curves[name] = loss_curve(log)
        if name == "full":
            capacity[name] = {f"layers.{i}.q_proj": linear_capacity(torch.randn(24, 16)) for i in range(3)}
        elif name == "lora":
            capacity[name] = {f"layers.{i}.q_proj": linear_capacity(torch.randn(24, 4) @ torch.randn(4, 16))
                              for i in range(3)}
        elif name == "qaa":
            w = torch.randn(4, 16)
            capacity[name] = {f"layers.{i}.q_proj": jacobian_rank(lambda x, w=w: torch.tanh(w @ x), torch.randn(5, 16))
                              for i in range(3)}
            if robustness:
                figures[name]["robustness"] = [
                    {"shots": shots, "depolarizing": p, "bleu": bleu - 100 * p - (0 if shots is None else 2000 / shots)
                     + jitter, "rougeL": rouge - 80 * p + jitter, "bertscore_f1": 90.0 - 5 * p,
                     "predictions_unchanged_pct": 100.0 if (shots or 10**6) >= 1000 and p == 0 else 50.0}
                    for shots in (None, 1000, 100) for p in (0.0, 0.01, 0.05)
                ] + [
                    {"shots": None, "depolarizing": 0.0, "gate_errors": [e / 10, e, e], "device": device,
                     "bleu": 5.0 + (bleu - 5.0) / (1 + 300 * e) + jitter, "rougeL": rouge - 1000 * e,
                     "bertscore_f1": 90.0 - 100 * e, "predictions_unchanged_pct": 100.0 / (1 + 1000 * e)}
                    for e, device in ((1e-2, None), (1e-3, None), (1e-4, None), (1.8e-3, "ibm-heron"))
                ]
                figures[name].update({"prompt_tokens_mean": 40.0, "generated_tokens_mean": 20.0, "qaa_hardware": {
                    "ibm-heron": {"seconds_per_token_per_shot": 0.027, "fidelity_min": 0.0017,
                                  "circuit_runs_per_token": 60}}})
        else:
            capacity[name] = {}
        figures[name].update(summarise_capacity(capacity[name]))
    return {"methods": figures, "curves": curves, "capacity": capacity}


def synthetic_payload(seeds: tuple[int, ...] = (0, 1, 2), robustness: bool = True) -> dict[str, Any]:
    experiment = Experiment(model="tiny", dataset="toy", seed=None if len(seeds) > 1 else seeds[0],
                            train=TrainSettings(steps=100), eval=EvalSettings(bertscore_model="none"))
    per_seed = {str(s): synthetic_seed(s, robustness) for s in seeds}
    configs = {"full": {"learning_rate": 5e-5}, "lora": {"learning_rate": 2e-4, "r": 4},
               "prefix": {"learning_rate": 1e-2}, "qaa": {"learning_rate": 1e-3}}
    return build_payload(experiment, list(seeds), configs, per_seed, AnalysisSettings())


def as_tuned(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload of a comparison whose learning rates were tuned on a 3-point grid (one trial diverged)."""
    grid = [10 ** -0.5, 1.0, 10 ** 0.5]
    payload["tuning"], windows = {}, {}
    for name, config in payload["method_configs"].items():
        rate = config["learning_rate"]
        payload["tuning"][name] = [
            {"factor": grid[0], "learning_rate": rate * grid[0], "validation_loss": 2.1, "status": "ok"},
            {"factor": 1.0, "learning_rate": rate, "validation_loss": 2.0, "status": "ok"},
            {"factor": grid[2], "learning_rate": rate * grid[2], "validation_loss": None, "status": "diverged"},
        ]
        payload["methods"][name]["learning_rate"] = rate
        windows[name] = {"low": rate * grid[0], "high": rate, "points": 2, "of": 3}
    payload["learning_rates"] = {"tuned": True, "grid": grid, "window_share": 0.05, "windows": windows}
    return payload


def plot_ids(html: str) -> set[str]:
    return set(re.findall(r'<img id="(plot-[a-z-]+)"', html))


# --- as text -------------------------------------------------------------------------------------


def test_report_is_self_contained_with_every_plot() -> None:
    html = html_report(synthetic_payload())
    assert plot_ids(html) == ALL_PLOTS
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html))
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    assert "<script" not in html
    for section in ("findings", "summary", "convergence", "quality", "efficiency", "capacity", "noise", "setup"):
        assert f'<section id="{section}">' in html, section
    assert "62.00 ± " in html or "± " in html  # spread over three seeds


def test_zero_shots_means_exact_expectations() -> None:
    payload = synthetic_payload(seeds=(0,))
    for row in payload["methods"]["qaa"]["robustness"]:
        row["shots"] = row["shots"] or 0  # QAAEvalOptions writes shots=0 for exact expectation values
    html = html_report(payload)
    assert "(exact expectations) to" in html
    assert "<td>0</td><td>0</td>" not in html.split('id="table-noise"')[1]


def test_noise_section_only_with_robustness_data() -> None:
    html = html_report(synthetic_payload(robustness=False))
    assert plot_ids(html) == ALL_PLOTS - {"plot-noise", "plot-hardware"}
    assert 'id="noise"' not in html


def test_single_seed_report_has_no_spread() -> None:
    payload = synthetic_payload(seeds=(0,))
    html = html_report(payload)
    assert plot_ids(html) == ALL_PLOTS
    assert " ± " not in html.split('<section id="summary">')[1].split("</section>")[0]
    assert "seed 0;" in markdown_report(payload)


def test_findings_follow_the_measured_numbers() -> None:
    payload = as_tuned(synthetic_payload())
    text = "\n".join(findings(payload))
    lora_bleu = payload["methods"]["lora"]["bleu"]
    assert f"Highest BLEU: **lora**, {lora_bleu:.2f}." in text
    assert "Most parameter-efficient: **qaa**" in text
    assert "Least memory in training: **prefix** peaked at 480 MB" in text
    assert "Fastest training: **prefix**" in text
    assert "**qaa** is the slowest to generate" in text
    assert "Fastest to converge: **full**" in text
    assert "qaa 4 (of at most 4)" in text
    assert "prefix has no weight update to measure" in text
    assert "Under finite shots and depolarising noise, qaa's BLEU" in text
    assert "means over 3 seeds" in text

    changed = copy.deepcopy(payload)
    changed["methods"]["prefix"].update(bleu=99.0, peak_memory_mb=2000.0)
    text = "\n".join(findings(changed))
    assert "Highest BLEU: **prefix**, 99.00." in text
    assert "Least memory in training: **lora** peaked at 500 MB" in text

    # A loss that never fell by the margin "converges" at step 1: it is named apart, not crowned.
    changed["methods"]["qaa"].update(steps_to_margin=1, steps_to_margin_pct=1.0, loss_drop_pct=2.0)
    text = "\n".join(findings(changed))
    assert "Fastest to converge: **full**" in text
    assert "qaa (2.0%): the smoothed training loss fell by less than 5%" in text


def test_findings_claim_a_difference_only_where_the_paired_test_finds_one() -> None:
    payload = as_tuned(synthetic_payload(seeds=(0,)))
    payload["analysis"]["reference"] = "lora"
    methods = payload["methods"]
    methods["lora"].update(bleu=50.0, ci={"bleu": [45.0, 55.0]})
    methods["qaa"].update(bleu=53.0, ci={"bleu": [48.0, 58.0]}, p_vs_reference={"bleu": 0.31})
    methods["full"].update(bleu=60.0, ci={"bleu": [56.0, 64.0]}, p_vs_reference={"bleu": 0.004})
    methods["prefix"].update(bleu=30.0, ci={"bleu": [25.0, 35.0]}, p_vs_reference={"bleu": 0.0004})
    text = "\n".join(findings(payload))
    assert "Highest BLEU: **full**, 60.00 [56.00, 64.00]; its interval overlaps qaa's" in text
    sentence = next(line for line in text.splitlines() if line.startswith("BLEU against **lora**"))
    assert "better: full (p 0.004)" in sentence and "worse: prefix (p < 0.001)" in sentence
    assert "not distinguishable on 10 items: qaa" in sentence
    assert "qaa (p" not in sentence  # no verdict for a difference inside the noise

    methods["full"]["status"], methods["full"]["error"] = "failed", "TrainingDiverged: non-finite loss at step 3"
    text = "\n".join(findings(payload))
    assert "**full** failed and has no scores: TrainingDiverged: non-finite loss at step 3" in text
    assert "Highest BLEU: **qaa**" in text
    report = markdown_report(payload)
    assert "| full | failed: TrainingDiverged" in report
    assert "| qaa | 0.310 |" in report  # the paired-test table


def test_markdown_report_has_the_analysis_sections() -> None:
    report = markdown_report(synthetic_payload())
    for heading in ("## Findings", "## Convergence", "## Efficiency", "## Capacity",
                    "## Under shots, noise and hardware"):
        assert heading in report, heading
    assert "seeds 0, 1, 2 (mean ± sample std over seeds)" in report


# --- in a browser --------------------------------------------------------------------------------

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)

# Appended to a copy of the page: after load, record which images decoded to a real size.
PROBE = """<script>
window.addEventListener("load", () => {
  const ok = [...document.images].filter((i) => i.complete && i.naturalWidth > 0).map((i) => i.id);
  document.body.setAttribute("data-decoded", ok.join(" "));
});
</script>"""


def render(path: Path) -> tuple[str, list[str]]:
    """The DOM after load, and the page's console messages, from headless Chromium."""
    assert CHROMIUM is not None, "needs Chromium: `make install` adds Debian's chromium package"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    return result.stdout, console


def with_probe(html: str, folder: Path) -> Path:
    path = folder / "probe.html"
    path.write_text(html.replace("</body>", PROBE + "</body>"))
    return path


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    html = html_report(synthetic_payload())
    (tmp_path / "report.html").write_text(html)
    dom, console = render(tmp_path / "report.html")
    assert console == []
    assert plot_ids(dom) == ALL_PLOTS
    assert dom.count('<table id="table-') == 5  # summary, convergence, efficiency, capacity, noise

    dom, console = render(with_probe(html, tmp_path))
    assert console == []
    decoded = re.search(r'data-decoded="([^"]*)"', dom)
    assert decoded is not None, "the page's load event never fired"
    assert set(decoded.group(1).split()) == ALL_PLOTS  # every plot is a valid image


@pytest.mark.browser
def test_the_browser_check_does_see_errors(tmp_path: Path) -> None:
    """A control: the same check on a page with a script error and a broken image fails."""
    html = html_report(synthetic_payload(seeds=(0,), robustness=False))
    broken = html.replace('src="data:image/png;base64,iVBOR', 'src="data:image/png;base64,AAAA', 1)
    broken = broken.replace("</body>", "<script>undefinedFunction();</script></body>")
    dom, console = render(with_probe(broken, tmp_path))
    assert any("undefinedFunction" in line for line in console)
    decoded = set(re.search(r'data-decoded="([^"]*)"', dom).group(1).split())
    assert decoded == ALL_PLOTS - {"plot-noise", "plot-hardware", "plot-loss"}


def test_an_untuned_comparison_names_no_best_method_and_says_so() -> None:
    payload = synthetic_payload(seeds=(0,))
    payload["analysis"]["reference"] = "lora"
    text = "\n".join(findings(payload))
    assert "Highest BLEU" not in text and "No method is named best" in text
    assert "Learning rates untuned (not chosen on validation in this comparison: each method's configured rate, " \
           "its default unless set): differences between methods may be learning-rate differences." in text
    assert "Learning rates untuned" in markdown_report(payload)


def test_a_tuned_comparison_reports_its_grid_trials_and_windows() -> None:
    payload = as_tuned(synthetic_payload(seeds=(0,)))
    report = markdown_report(payload)
    assert "Learning rates tuned on validation (grid 3 points, ×0.316 to ×3.16 of each method's default" in report
    assert "**lora**: learning rates within 5% of its best validation loss: 6.32e-05 to 0.0002" in report
    assert "| lora | 0.000632 | diverged |  |  |" in report and "| lora | 0.0002 | 2.0000 | yes |  |" in report
    assert "plot-learning-rates" in plot_ids(html_report(payload))
    assert "plot-learning-rates" not in plot_ids(html_report(synthetic_payload(seeds=(0,))))


def test_a_method_tuned_at_an_end_of_its_rates_is_named_as_possibly_under_tuned() -> None:
    payload = as_tuned(synthetic_payload(seeds=(0,)))
    assert "lowest validation loss is at the" not in "\n".join(findings(payload))  # every best inside its rates
    payload["learning_rates"]["extend"] = 2
    payload["learning_rates"]["edges"] = {"lora": "highest", "full": "lowest", "qaa": None}
    text, report = "\n".join(findings(payload)), markdown_report(payload)
    assert ("**lora**'s lowest validation loss is at the highest learning rate tried: its best rate may be higher "
            "still, so its figures may understate it") in text
    assert "**full**'s lowest validation loss is at the lowest learning rate tried: its best rate may be lower" in text
    assert "**qaa**'s lowest" not in text and "**prefix**'s lowest" not in text
    assert "and up to 2 more past an end of it while a method's best was there" in report
    window = next(line for line in report.splitlines() if line.startswith("- **lora**: learning rates within"))
    assert "**lora**'s lowest validation loss is at the highest learning rate tried" in window


def test_the_tuning_table_marks_the_trials_past_the_grid() -> None:
    payload = as_tuned(synthetic_payload(seeds=(0,)))
    payload["learning_rates"]["extend"] = 2
    lora = payload["tuning"]["lora"]
    lora.append({"factor": 10 ** 0.5 * 10 ** 0.5, "learning_rate": 2e-3, "validation_loss": 1.9, "status": "ok"})
    payload["methods"]["lora"]["learning_rate"] = 2e-3
    report = markdown_report(payload)
    assert "| method | learning rate | validation loss | chosen | past the grid |" in report
    assert "| lora | 0.002 | 1.9000 | yes | yes |" in report
    assert "| lora | 0.000632 | diverged |  |  |" in report  # the grid's top (√10 up to float rounding)
    assert ">past the grid<" in html_report(payload)


def test_the_e2e_challenge_table_appears_only_with_its_figures() -> None:
    from qpeft.report.markdown import markdown_report

    payload = synthetic_payload(seeds=(0,), robustness=False)
    assert "E2E challenge metrics" not in html_report(payload) and "E2E challenge" not in markdown_report(payload)
    payload["methods"]["qaa"].update(bleu_e2e=56.95, nist_e2e=5.2022, meteor_e2e=None, rougeL_e2e=63.47,
                                     cider_e2e=2.3737)
    html, markdown = html_report(payload), markdown_report(payload)
    assert 'id="table-e2e"' in html
    row = next(line for line in markdown.split("## E2E challenge metrics")[1].splitlines() if line.startswith("| qaa"))
    assert row.split("|")[2:7] == [" 56.95 ", " 5.202 ", " – ", " 63.47 ", " 2.374 "]


def test_the_noise_finding_never_calls_the_exact_row_the_worst() -> None:
    from qpeft.report.findings import findings

    payload = synthetic_payload(seeds=(0,), robustness=False)
    payload["methods"]["qaa"]["robustness"] = [
        {"shots": None, "depolarizing": 0.0, "bleu": 52.03}, {"shots": 1000, "depolarizing": 0.0, "bleu": 52.79},
        {"shots": None, "depolarizing": 0.01, "bleu": 54.69}]
    sentence = next(s for s in findings(payload) if s.startswith("Under finite shots"))
    assert "from 52.03 (exact expectations) to between 52.79" in sentence
    assert "and 54.69 (exact expectations, depolarising p = 0.01), none lower" in sentence
    payload["methods"]["qaa"]["robustness"][1]["bleu"] = 40.0
    sentence = next(s for s in findings(payload) if s.startswith("Under finite shots"))
    assert "to 40.00 at worst (1,000 shots)" in sentence


def with_latency(payload: dict[str, Any], ratios: dict[str, list[float]]) -> dict[str, Any]:
    """The payload with each named method's latency figures made from these pairs' ratios."""
    changed = copy.deepcopy(payload)
    for name, pairs in ratios.items():
        changed["methods"][name].update(latency_figures(pairs, 0.95))
    return changed


def test_the_latency_finding_names_a_slow_generator_only_beyond_the_timing_noise() -> None:
    quick = {name: [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01] for name in PROFILES}
    # qaa's median pair is 8% slower, but its pairs spread from 0.97 to 1.25: the interval reaches under 1.05
    noisy = with_latency(synthetic_payload(seeds=(0,)), {**quick, "qaa": [0.97, 1.25, 1.08, 1.02, 1.2, 1.1, 1.04]})
    text = "\n".join(findings(noisy))
    assert "is the slowest to generate" not in text
    assert ("qaa (1.08x, 98% interval 0.97–1.25x) measured more than 5% slower than the base model, but its "
            "interval reaches 1.05x or under") in text
    assert "within this run's timing noise" in text

    two = with_latency(noisy, {"lora": [0.99, 1.2, 1.06, 1.1, 1.02, 1.07, 1.15]})
    text = "\n".join(findings(two))
    assert ("lora (1.07x, 98% interval 0.99–1.20x) and qaa (1.08x, 98% interval 0.97–1.25x) measured more than 5% "
            "slower than the base model, but each interval reaches 1.05x or under") in text

    clear = with_latency(noisy, {"qaa": [1.21, 1.25, 1.28, 1.22, 1.3, 1.24, 1.23]})
    text = "\n".join(findings(clear))
    assert "**qaa** is the slowest to generate, 24% slower than the base model (98% interval 1.21–1.30x)." in text

    # no median over 1.05, but an interval past it: the run does not show every method within 5%
    unsure = with_latency(noisy, {"qaa": [0.95, 1.12, 1.03, 1.0, 1.06, 1.02, 1.01]})
    text = "\n".join(findings(unsure))
    assert "No method generates more than 5% slower" not in text
    assert "No method measured more than 5% slower than the base model, but qaa's interval reaches 1.12x" in text

    text = "\n".join(findings(with_latency(noisy, {"qaa": quick["qaa"]})))
    assert "No method generates more than 5% slower than the base model (every interval under 1.05x)." in text


def test_a_comparisons_latency_pools_the_timing_pairs_of_all_its_seeds() -> None:
    payload = synthetic_payload(seeds=(0, 1, 2))
    seeds = [payload["per_seed"][s]["methods"]["qaa"]["latency_ratios"] for s in ("0", "1", "2")]
    pooled = sorted(r for ratios in seeds for r in ratios)
    qaa = payload["methods"]["qaa"]
    assert sorted(qaa["latency_ratios"]) == pooled and len(pooled) == 21
    assert qaa["latency_vs_base"] == pooled[10]  # the median of the 21 pairs, not the mean of three medians
    assert qaa["latency_vs_base_low"] == pooled[5] and qaa["latency_vs_base_high"] == pooled[15]
    assert "latency_ratios" not in payload["aggregate"]["qaa"] and "latency_vs_base" in payload["aggregate"]["qaa"]
