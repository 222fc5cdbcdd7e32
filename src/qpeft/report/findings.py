"""The findings: the trade-offs of a comparison as sentences computed from the measured figures.

No sentence is written unless the numbers it names exist.
"""

from __future__ import annotations

import math
from typing import Any

from qpeft.analysis.significance import significant
from qpeft.report.hardware import constant_output, hardware_findings, p_vs_exact
from qpeft.report.payload import interval, multi_seed, robustness_sets, significance_level, trained, value
from qpeft.report.tables import interval_text, main_metric, noise_label, p_value_text, quality_metrics
from qpeft.report.tuning import at_an_end, end_sentence, is_tuned, learning_rate_sentence


def _ranked(payload: dict[str, Any], key: str, names: list[str] | None = None) -> list[tuple[str, float]]:
    """(method, value) for the methods with a number for ``key``, ascending."""
    names = trained(payload) if names is None else names
    pairs = [(name, value(payload, name, key)) for name in names]
    return sorted([(n, v) for n, v in pairs if v is not None], key=lambda pair: pair[1])


def _g(number: float, digits: int = 3) -> str:
    """A compact human number: thousands separators for large values, ``digits`` significant otherwise."""
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.{digits}g}"


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# ---------------------------------------------------------------------------------------
# Findings: the trade-offs, in words, from the measured numbers


def findings(payload: dict[str, Any]) -> list[str]:
    """One Markdown sentence (or two) per trade-off that the payload has numbers for."""
    sentences = [
        *_quality_findings(payload),
        _efficiency_finding(payload),
        _cost_against_full(payload),
        _convergence_finding(payload),
        _gradient_finding(payload),
        _memory_finding(payload),
        _throughput_finding(payload),
        _latency_finding(payload),
        _capacity_finding(payload),
        *_robustness_findings(payload),
    ]
    sentences = [s for s in sentences if s]
    if sentences and multi_seed(payload):
        sentences.append(f"All figures are means over {len(payload['seeds'])} seeds "
                         f"({', '.join(str(s) for s in payload['seeds'])}); ± is the sample standard deviation.")
    return sentences




def _quality_findings(payload: dict[str, Any]) -> list[str]:
    """Failed methods, the highest score, and, per metric, which rows the paired test separates from the
    reference. Nothing is called better or worse unless the paired bootstrap gives p < alpha."""
    sentences = [f"**{name}** failed and has no scores: {figures.get('error', '')}"
                 for name, figures in payload["methods"].items() if figures.get("status") == "failed"]
    rows = [name for name in payload["methods"] if payload["methods"][name].get("status") != "failed"]
    key, label = main_metric(payload)
    ranked = _ranked(payload, key, rows)[::-1]
    if not ranked:
        return sentences
    if not is_tuned(payload):
        # At untuned learning rates a "best method" may be the method with the luckiest default rate.
        return [*sentences, learning_rate_sentence(payload) + " No method is named best; the paired tests below "
                "compare rows at the rates they trained at.", *_reference_findings(payload)]
    best, best_value = ranked[0]
    ci = payload["methods"][best].get("ci", {})
    text = f"Highest {label}: **{best}**, {best_value:.2f}{interval_text(ci.get(key))}"
    overlapping = [name for name, _ in ranked[1:] if _overlaps(payload, best, name, key)]
    if overlapping:
        text += f"; its interval overlaps {_join(overlapping)}'s, so this ranking alone does not separate them"
    sentences.append(text + ".")
    ends = at_an_end(payload)
    sentences += [end_sentence(name, end) for name, end in ends.items() if name in rows]
    return sentences + _reference_findings(payload)


def _reference_findings(payload: dict[str, Any]) -> list[str]:
    reference = payload.get("analysis", {}).get("reference")
    if not reference:
        return []
    return [s for key, label in quality_metrics(payload) if (s := _against_reference(payload, reference, key, label))]


def _overlaps(payload: dict[str, Any], first: str, second: str, key: str) -> bool:
    a = payload["methods"][first].get("ci", {}).get(key)
    b = payload["methods"][second].get("ci", {}).get(key)
    return bool(a and b and None not in a and None not in b and a[0] <= b[1] and b[0] <= a[1])


def _against_reference(payload: dict[str, Any], reference: str, key: str, label: str) -> str:
    """One sentence: which rows are better, worse or not distinguishable from ``reference`` on ``key``."""
    alpha = significance_level(payload)
    items = value(payload, reference, "test_items")
    reference_value = value(payload, reference, key)
    if reference_value is None:
        return ""
    better, worse, tied = [], [], []
    for name, figures in payload["methods"].items():
        p = (figures.get("p_vs_reference") or {}).get(key)
        score = value(payload, name, key)
        if name == reference or not isinstance(p, (int, float)) or score is None:
            continue
        if not significant(p, alpha):
            tied.append(name)
        else:
            (better if score > reference_value else worse).append(f"{name} (p {p_value_text(p)})")
    if not (better or worse or tied):
        return ""
    parts = [f"better: {_join(better)}" if better else "", f"worse: {_join(worse)}" if worse else "",
             f"not distinguishable on {items:.0f} items: {_join(tied)}" if tied and items else ""]
    return (f"{label} against **{reference}** ({reference_value:.2f}), by the paired bootstrap at p < {alpha:g}: "
            + "; ".join(part for part in parts if part) + ".")


def _efficiency_finding(payload: dict[str, Any]) -> str:
    shares = [(n, v) for n, v in _ranked(payload, "trainable_pct") if v > 0]
    if not shares:
        return ""
    cheapest, share = shares[0]
    count = value(payload, cheapest, "trainable_params")
    text = f"Most parameter-efficient: **{cheapest}** trains {share:.4g}% of the base model's parameters"
    if count is not None:
        text += f" ({count:,.0f})"
    full_count = value(payload, "full", "trainable_params")
    if cheapest != "full" and full_count and count:
        text += f", {full_count / count:,.0f}x fewer than full fine-tuning"
    key, label = main_metric(payload)
    cheap_score = value(payload, cheapest, key)
    if cheap_score is not None:
        interval = interval_text(payload["methods"][cheapest].get("ci", {}).get(key))
        text += f"; its {label} is {cheap_score:.2f}{interval} (the paired tests say how it stands against the others)"
    return text + "."


def _cost_against_full(payload: dict[str, Any]) -> str:
    key, label = main_metric(payload)
    full_score = value(payload, "full", key)
    if full_score is None:
        return ""
    parts = []
    for name in trained(payload):
        score, share = value(payload, name, key), value(payload, name, "trainable_pct")
        if name == "full" or score is None or share is None:
            continue
        interval = interval_text(payload["methods"][name].get("ci", {}).get(key))
        parts.append(f"{name} {score:.2f}{interval} with {share:.4g}% of the parameters")
    if not parts:
        return ""
    full_interval = interval_text(payload["methods"]["full"].get("ci", {}).get(key))
    return (f"{label} beside full fine-tuning's {full_score:.2f}{full_interval} (100% of the parameters): "
            f"{_join(parts)}.")


def _convergence_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "steps_to_margin_pct") or _ranked(payload, "steps_to_margin")
    if not ranked:
        return ""
    margin = payload.get("analysis", {}).get("convergence_margin", 0.05)
    budget = payload.get("experiment", {}).get("train", {}).get("steps")

    def reached(name: str) -> str:
        step, pct = value(payload, name, "steps_to_margin"), value(payload, name, "steps_to_margin_pct")
        return f"step {step:,.0f}" + (f" ({pct:.0f}% of the budget)" if pct is not None else "")

    # A run whose smoothed loss never fell by the margin is "within the margin" from its first step:
    # it is named apart instead of being ranked as the fastest.
    drops = {n: value(payload, n, "loss_drop_pct") for n, _ in ranked}
    flat = [n for n, _ in ranked if drops[n] is not None and drops[n] < 100 * margin]
    moving = [n for n, _ in ranked if n not in flat]
    fastest = moving[0] if moving else None
    if fastest is not None:
        text = (f"Fastest to converge: **{fastest}** came within {100 * margin:g}% of its own best smoothed "
                f"training loss at {reached(fastest)}")
        if budget:
            text = text.replace("of the budget", f"of the {budget:,}-step budget", 1)
        if len(moving) > 1:
            text += "; " + ", ".join(f"{name} at {reached(name)}" for name in moving[1:])
        text += "."
    else:
        text = ""
    if flat:
        text += (f" {_join([f'{n} ({drops[n]:.1f}%)' for n in flat])}: the smoothed training loss fell by less than "
                 f"{100 * margin:g}% over the whole run, so {'it has' if len(flat) == 1 else 'they have'} no "
                 "meaningful convergence step.")
    fractions = payload.get("analysis", {}).get("loss_fractions", [0.25])
    if fractions:
        key = f"loss_at_{round(100 * fractions[0])}pct"
        early = _ranked(payload, key)
        if len(early) > 1:
            text += (f" After {100 * fractions[0]:g}% of the budget the lowest smoothed loss was "
                     f"**{early[0][0]}**'s ({early[0][1]:.3f}).")
    final = _ranked(payload, "final_smoothed_loss")
    if final:
        lowest, lowest_loss = final[0]
        text += f" Lowest training loss at the end: **{lowest}** ({lowest_loss:.3f}, smoothed)"
        fastest_loss = value(payload, fastest, "final_smoothed_loss") if fastest else None
        if lowest != fastest and fastest_loss is not None and fastest_loss > lowest_loss:
            text += f"; {fastest} converged fastest but to a higher loss ({fastest_loss:.3f})"
        text += "."
    return text.strip()


def _gradient_finding(payload: dict[str, Any]) -> str:
    names = [n for n in trained(payload) if value(payload, n, "grad_norm_median") is not None]
    if not names:
        return ""
    bad = [(n, value(payload, n, "non_finite_steps")) for n in names]
    bad = [(n, v) for n, v in bad if v]
    if bad:
        text = "Non-finite loss or gradient norm: " + _join([f"{n} ({v:g} steps)" for n, v in bad]) + "."
    else:
        text = "No method had a step with a non-finite loss or gradient norm."
    ratios = []
    for name in names:
        median, p95 = value(payload, name, "grad_norm_median"), value(payload, name, "grad_norm_p95")
        if median and p95 is not None:
            ratios.append((p95 / median, name))
    ratios.sort()
    if len(ratios) > 1:
        (low, steady), (high, uneven) = ratios[0], ratios[-1]
        text += (f" Gradient flow was steadiest for **{steady}** (95th-percentile gradient norm {low:.2f}x its "
                 f"median) and least steady for **{uneven}** ({high:.2f}x; maximum "
                 f"{_g(value(payload, uneven, 'grad_norm_max') or math.nan)}).")
    elif ratios:
        name = ratios[0][1]
        text += (f" {name}'s gradient norm: median {_g(value(payload, name, 'grad_norm_median'))}, "
                 f"95th percentile {_g(value(payload, name, 'grad_norm_p95'))}.")
    return text


def _memory_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "peak_memory_mb")
    if not ranked:
        return ""
    (least, low), (most, high) = ranked[0], ranked[-1]
    if len(ranked) > 1 and high <= 1.02 * low:
        return f"Peak memory in training was about the same for every method ({low:,.0f} to {high:,.0f} MB)."
    text = f"Least memory in training: **{least}** peaked at {low:,.0f} MB"
    if most != least and high > 0:
        text += f", {low / high:.2f}x the {high:,.0f} MB of {most}, the most"
    return text + "."


def _throughput_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "train_tokens_per_s")
    if not ranked:
        return ""
    (slowest, slow), (fastest, fast) = ranked[0], ranked[-1]
    text = f"Fastest training: **{fastest}** at {fast:,.0f} tokens/s"
    if slowest != fastest and slow > 0:
        text += f"; slowest: {slowest} at {slow:,.0f} tokens/s ({fast / slow:.1f}x slower)"
    return text + "."


def _latency_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "latency_vs_base")
    if not ranked:
        return ""
    settings = payload.get("analysis", {})
    how = ""
    if settings.get("latency_new_tokens") and settings.get("sample_prompts"):
        how = (f" (same process, greedy, {settings['latency_new_tokens']} new tokens for up to "
               f"{settings['sample_prompts']} prompts)")
    text = f"Generation latency per token against the bare base model{how}: "
    text += ", ".join(f"{name} {ratio:.2f}x" + interval_text(interval(payload, name, "latency_vs_base"), "{:.2f}")
                      for name, ratio in ranked) + "."
    return text + _slow_generators(payload, ranked)


SLOW = 1.05  # a method generating more than 5% slower than the base model is called slower


def _slow_generators(payload: dict[str, Any], ranked: list[tuple[str, float]]) -> str:
    """Which methods generate more than 5% slower than the base model: a method is named slower only where its
    interval lies wholly above 1.05x; one whose median is above it and whose interval is not, as inside the
    timing noise."""
    # None in results written before the intervals were
    intervals = {name: interval(payload, name, "latency_vs_base") for name, _ in ranked}
    over = [(name, ratio) for name, ratio in ranked if ratio > SLOW]
    clear = [(name, ratio) for name, ratio in over if intervals[name] is None or intervals[name][0] > SLOW]
    text = ""
    if clear:
        slowest, ratio = clear[-1]
        text += f" **{slowest}** is the slowest to generate, {100 * (ratio - 1):.0f}% slower than the base model"
        bounds = intervals[slowest]
        text += f" ({_interval_words(payload, slowest, bounds)})." if bounds else "."
    noisy = [f"{name} ({ratio:.2f}x, {_interval_words(payload, name, intervals[name])})" for name, ratio in over
             if (name, ratio) not in clear]
    if noisy:
        each = "its interval reaches" if len(noisy) == 1 else "each interval reaches"
        text += (f" {_join(noisy)} measured more than 5% slower than the base model, but {each} {SLOW:.2f}x or "
                 "under: within this run's timing noise (more --latency-repeats would narrow it).")
    if over:
        return text
    unsure = [(name, bounds[1]) for name, bounds in intervals.items() if bounds and bounds[1] > SLOW]
    if unsure:
        name, high = max(unsure, key=lambda pair: pair[1])
        return (f" No method measured more than 5% slower than the base model, but {name}'s interval reaches "
                f"{high:.2f}x: this run cannot rule out more.")
    every = f" (every interval under {SLOW:.2f}x)" if any(intervals.values()) else ""
    return f" No method generates more than 5% slower than the base model{every}."


def _interval_words(payload: dict[str, Any], name: str, bounds: tuple[float, float]) -> str:
    """"98% interval 1.21–1.30x" (the coverage left out where the results do not hold it)."""
    low, high = bounds
    coverage = value(payload, name, "latency_vs_base_coverage")
    return (f"{coverage:.0%} " if coverage is not None else "") + f"interval {low:.2f}–{high:.2f}x"


def _capacity_finding(payload: dict[str, Any]) -> str:
    """Two comparisons, each of one measure: the update Jacobian rank across every per-token
    method, then the effective rank among the linear updates only (QAA has no ΔW, and an
    effective rank is not a Jacobian rank, so the two never share a sentence)."""
    sentences = [_jacobian_rank_sentence(payload), _effective_rank_sentence(payload)]
    text = " ".join(s for s in sentences if s)
    if not text:
        return ""
    without = [name for name in trained(payload) if value(payload, name, "update_jacobian_rank_median") is None
               and value(payload, name, "effective_rank_median") is None
               and not payload["methods"][name].get("capacity_error")]
    if without:
        text += f" {_join(without)} {'has' if len(without) == 1 else 'have'} no weight update to measure."
    return text


def _rank_bound(payload: dict[str, Any], name: str) -> str:
    """What caps a method's update Jacobian rank: its LoRA-style rank r, or a stated bound (QAA's qubits)."""
    rank = payload.get("method_configs", {}).get(name, {}).get("r")
    if isinstance(rank, int):
        return f" (rank r = {rank})"
    bound = value(payload, name, "update_jacobian_rank_bound")
    return f" (of at most {_g(bound)})" if bound is not None else ""


def _jacobian_rank_sentence(payload: dict[str, Any]) -> str:
    names = [n for n in trained(payload) if value(payload, n, "update_jacobian_rank_median") is not None]
    if not names:
        return ""
    parts = [f"{name} {_g(value(payload, name, 'update_jacobian_rank_median'))}{_rank_bound(payload, name)}"
             for name in names]
    text = ("Capacity, as the numerical rank of each update's Jacobian in the layer input (the rank of ΔW for a "
            "linear update), median over modules: " + _join(parts) + ".")
    ranked = _ranked(payload, "update_jacobian_rank_median", names)
    if len(ranked) > 1 and ranked[-1][1] > ranked[-2][1]:
        text += f" The highest-rank update is **{ranked[-1][0]}**'s."
    return text


def _effective_rank_sentence(payload: dict[str, Any]) -> str:
    names = [n for n in trained(payload) if value(payload, n, "effective_rank_median") is not None]
    if not names:
        return ""
    parts = []
    for name in names:
        part = f"{name} {value(payload, name, 'effective_rank_median'):.1f}"
        low, high = value(payload, name, "effective_rank_min"), value(payload, name, "effective_rank_max")
        if low is not None and high is not None and high > low:
            modules = value(payload, name, "capacity_modules") or 0
            part += f" (from {low:.1f} to {high:.1f} over {modules:.0f} modules)"
        parts.append(part)
    text = ("Among the linear updates only, the median effective rank (Roy and Vetterli) of each module's ΔW: "
            + _join(parts) + ".")
    ranked = _ranked(payload, "effective_rank_median", names)
    if len(ranked) > 1 and ranked[-1][1] > ranked[-2][1]:
        text += f" The most evenly spread linear update is **{ranked[-1][0]}**'s."
    return text


def _robustness_findings(payload: dict[str, Any]) -> list[str]:
    """How the quality moved under shots and the simple depolarising model, then the hardware model's findings."""
    key, label = main_metric(payload)
    sentences = []
    for name, rows in robustness_sets(payload).items():
        # the circuit's constant output is no setting a device runs at: the hardware findings weigh it
        floor = constant_output(rows)
        scored = [r for r in rows if isinstance(r.get(key), (int, float)) and not r.get("gate_errors")
                  and r is not floor]
        clean = [r for r in scored if not r.get("shots") and not r.get("depolarizing")]
        noisy = [r for r in scored if r.get("shots") or r.get("depolarizing")]
        if not noisy:
            continue
        reference = clean[0] if clean else max(scored, key=lambda r: r[key])
        # the noisy settings alone: the exact row is the reference, not a candidate for "at worst"
        worst, best = min(noisy, key=lambda r: r[key]), max(noisy, key=lambda r: r[key])
        if worst[key] < reference[key]:
            spread = f"{worst[key]:.2f} at worst ({_setting(worst)})"
        elif worst is best:
            spread = f"{worst[key]:.2f} ({_setting(worst)}), not lower"
        else:
            spread = (f"between {worst[key]:.2f} ({_setting(worst)}) and {best[key]:.2f} ({_setting(best)}), "
                      "none lower")
        kinds = "finite shots" + (" and depolarising noise" if any(r.get("depolarizing") for r in noisy) else "")
        text = (f"Under {kinds}, {name}'s {label} went from {reference[key]:.2f} "
                f"({_setting(reference)}) to {spread} ({_paired_against_exact(payload, noisy, key)})")
        trained_score = value(payload, name, key)
        if trained_score is not None and not clean:
            text += f"; noiselessly it scored {trained_score:.2f}"
        sentences.append(text + ".")
    return sentences + hardware_findings(payload, key, label)


def _paired_against_exact(payload: dict[str, Any], rows: list[dict[str, Any]], key: str) -> str:
    """Which re-evaluations the paired bootstrap against the exact run separates from it (all must have been tested)."""
    p_values = [p_vs_exact(row, key) for row in rows]
    if None in p_values:
        return ("one re-evaluation of the same items each, without an interval: a difference this small may be "
                "the sample's")
    alpha = significance_level(payload)
    separated = [f"{_setting(row)}, p {p_value_text(p)}" for row, p in zip(rows, p_values, strict=True)
                 if significant(p, alpha)]
    return ("each paired with the exact run on the same items, the bootstrap separates "
            + (_join(separated) if separated else f"none of them from it at p < {alpha:g}"))


def _setting(row: dict[str, Any]) -> str:
    shots = "exact expectations" if not row.get("shots") else f"{row['shots']:,} shots"  # null or 0: exact
    noise = noise_label(row)
    return shots if noise == "none" else f"{shots}, {noise}"
