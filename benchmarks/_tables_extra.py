"""Renderers of BENCHMARKS.md's calibration tables: DeiT-Tiny and MobileNet-v1 variants (``ablate.py``,
``mobilenet_api.py``), DeiT-Tiny on SMI / DeepInversion / real / noise images (``dfq calibrate``,
``paired_runs.py``, ``calib_variance.py``) and the BN CNNs on inverted images (``cnn_inversion.py``).

Each takes ``[(step name, report, provenance)]`` (see :mod:`_tables`) and returns the markdown of one
table, its figures formatted as the hand-written tables they replace.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

Report = Any
Items = list[tuple[str, Report, dict[str, Any]]]


def signed(x: float, digits: int = 1) -> str:
    """A difference as the tables write it: a sign always (a true minus), zero without one.

    >>> [signed(x) for x in (-1.8000000001, 0.0, -0.04, 0.4)], signed(-0.0004, 3)
    (['−1.8', '0.0', '0.0', '+0.4'], '−0.000')
    """
    text = f"{x:+.{digits}f}"
    if digits == 1 and float(text) == 0:
        return f"{0:.{digits}f}"
    return text.replace("-", "−")


def _delta(top1: float, fp: float) -> str:
    return signed(100 * (top1 - fp))


def _arg(prov: dict[str, Any], option: str, default: str) -> str:
    """The value of ``option`` in a step's recorded command (the script's default when absent)."""
    m = re.search(rf"{re.escape(option)}[ =](\S+)", prov.get("command", ""))
    return m.group(1) if m else default


def _ablate_rows(report: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    rows = {row["variant"]: row for row in report}
    return rows["fp"], rows


# --- DeiT-Tiny W8A8 / W4A8 on 32 images (ablate.py) ----------------------------------------------------

DT_VARIANTS: dict[str, str] = {
    "w8a8:site=softmax/minmax": "min/max everywhere (`--site-calibrator softmax=minmax`)",
    "w8a8:calib=real": "default: min/max, MSE on the softmax output",
    "w8a8:act=mse": "`--calibrator mse`",
    "w8a8:site=softmax/mse+fc2_in/mse": "MSE on `softmax` and `fc2_in`, min/max elsewhere",
    "w8a8:act=percentile": "`--calibrator percentile` (99.99)",
    "w8a8:act=entropy,site=softmax/minmax": "`--calibrator entropy` (TensorRT's KL), softmax min/max",
    "w8a8:act=entropy,site=softmax/entropy": "entropy on every site, the softmax output included",
    "w8a8:drop=softmax+q+k+v": "softmax and q/k/v left in float",
    "w8a8:calib=noise,site=softmax/minmax": "min/max",
    "w4a8:weight=minmax": "min/max weights (`--weight-calibrator minmax`)",
    "w4a8:site=softmax/minmax": "MSE weight clipping, min/max activations",
    "w4a8": "default: MSE weight clipping, softmax MSE",
    "w4a8:calib=noise": "MSE weight clipping",
    "w8a8-paper:calib=real": "min/max (PSAQ-ViT placement)",
    "w8a8-paper:calib=noise": "min/max",
    "w4a8-paper": "min/max",
    "w4a8-paper:calib=noise": "min/max",
}
"""The rows of the DeiT-Tiny table: ``ablate.py`` variant -> its activation ranges, in the table's order."""


def dt_calib_table(reports: Items) -> str:
    """DeiT-Tiny W8A8 / W4A8 variants calibrated on 32 real or noise images, one ``ablate.py`` process."""
    ((_, r, p),) = reports
    fp, rows = _ablate_rows(r)
    n = _arg(p, "--num-calib", "32")
    lines = ["| scheme / numerics | calibration | activation ranges | top-1 | Δ vs FP | agreement | KL |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant, ranges in DT_VARIANTS.items():
        if variant not in rows:
            continue
        m = rows[variant]
        scheme, _, numerics = variant.partition(":")[0].partition("-")
        calib = "noise" if "calib=noise" in variant else "real"
        lines.append(f"| {scheme} {numerics or 'trt'} | {n} {calib} | {ranges} | {100 * m['top1']:.1f} "
                     f"| {_delta(m['top1'], fp['top1'])} | {m['agreement']:.3f} | {m['kl']:.4f} |")  # fmt: skip
    return "\n".join(lines)


def dt_sites_table(reports: Items) -> str:
    """Where the W8A8 error sits (``ablate.py --study sites``): one activation site quantized at a time
    (min/max, the rest float, weights W8), worst first; then the weights alone at 8 and 4 bits."""
    ((_, r, _),) = reports
    fp, rows = _ablate_rows(r)
    every = next(v for v in rows if v.startswith("w8a8:drop=")).split("drop=")[1].split("+")  # the preset's sites
    one = []
    for variant, m in rows.items():
        if variant.startswith("w8a8:site=softmax/minmax,drop="):
            (site,) = set(every) - set(variant.split("drop=")[1].split("+"))
            one.append((m["kl"], f"`{site}` activations (W8 weights)", m))
    one.sort(key=lambda t: -t[0])
    weights = [("W8 weights alone (min/max)", rows[f"w8a8:drop={'+'.join(every)}"]),
               ("W4 weights alone (min/max)", rows[f"w4a8:weight=minmax,drop={'+'.join(every)}"])]  # fmt: skip
    lines = ["| quantized (the rest float) | top-1 | Δ vs FP | agreement | KL |", "|---|---|---|---|---|"]
    for label, m in [(label, m) for _, label, m in one] + weights:
        lines.append(f"| {label} | {100 * m['top1']:.1f} | {_delta(m['top1'], fp['top1'])} | {m['agreement']:.3f} "
                     f"| {m['kl']:.4f} |")  # fmt: skip
    return "\n".join([*lines, "", f"FP top-1 {100 * fp['top1']:.1f}, top-5 {100 * fp['top5']:.1f}."])


def dt_seeds_table(reports: Items) -> str:
    """The same W8A8 variant calibrated on 32-image subsets drawn with different seeds (``seed=`` variants),
    at the crop the step names; the FP row first."""
    ((_, r, p),) = reports
    fp, rows = _ablate_rows(r)
    crop = _arg(p, "--crop-pct", "the model's")
    lines = ["| calibration subset | top-1 | Δ vs FP | agreement | KL |", "|---|---|---|---|---|",
             f"| FP (crop_pct {crop}) | {100 * fp['top1']:.1f} | — | — | — |"]  # fmt: skip
    for variant, m in rows.items():
        if variant == "fp":
            continue
        seed = dict(kv.split("=", 1) for kv in variant.partition(":")[2].split(",") if kv).get("seed", "0")
        lines.append(f"| `{variant.partition(':')[0]}` min/max, {_arg(p, '--num-calib', '32')} real images, seed {seed} "
                     f"| {100 * m['top1']:.1f} | {_delta(m['top1'], fp['top1'])} | {m['agreement']:.3f} | {m['kl']:.4f} |")  # fmt: skip
    return "\n".join(lines)


NOISE_PLACEMENT: dict[str, tuple[str, ...]] = {
    "": (),
    "image": ("image",),
    "pos_embed+pos_add+cls_concat+embed": ("embed", "cls_concat", "pos_embed", "pos_add"),
    "residual": ("residual",),
    "scores": ("scores",),
    "proj_out+fc2_out": ("proj_out", "fc2_out"),
    "logits": ("logits",),
    "head_in+logits": ("head_in", "logits"),
    "qkv_out+scores+residual+proj_out+fc2_out+logits": (
        "qkv_out",
        "scores",
        "residual",
        "proj_out",
        "fc2_out",
        "logits",
    ),
}
"""The rows of the noise-placement study (``ablate.py --study noise-placement``): ``drop=`` -> its sites."""


def _kl3(kl: float) -> str:
    return f"{kl:.3f}" if kl >= 0.1 else f"{kl:.4f}"


def noise_placement_table(reports: Items) -> str:
    """W8A8 ``paper`` numerics on Gaussian noise, one group of sites returned to float at a time."""
    ((_, r, _),) = reports
    _, rows = _ablate_rows(r)
    lines = ["| sites left in float | top-1 | agreement | KL |", "|---|---|---|---|"]
    for drop, sites in NOISE_PLACEMENT.items():
        m = rows.get("w8a8-paper:calib=noise" + (f",drop={drop}" if drop else ""))
        if m is None:
            continue
        label = ", ".join(f"`{s}`" for s in sites) or "none (full PSAQ-ViT placement)"
        lines.append(f"| {label} | {100 * m['top1']:.1f} | {m['agreement']:.3f} | {_kl3(m['kl'])} |")
    return "\n".join(lines)


MB_VARIANTS: dict[str, str] = {
    "w8a8:drop=conv_in+linear_in,bc=0": "W8 weights only, min/max",
    "w8a8:drop=conv_in+linear_in,bc=0,weight=mse": "W8 weights only, MSE",
    "w8a8:bc=0": "W8A8 min/max, no bias correction",
    "w8a8:weight=mse,bc=0": "W8A8 min/max + MSE weights",
    "api": "W8A8 min/max + bias correction (default)",
    "w8a8:act=mse": "W8A8 MSE activations + bias correction",
}
"""The rows of the MobileNet table: ``ablate.py`` variant (``api``: the ``mobilenet_api.py`` run) -> label."""


def mobilenet_table(reports: Items) -> str:
    """MobileNet-v1 0.25 W8A8: the default through the Python API (``run_calibrate`` with the caller's
    model), the variants from ``ablate.py``; Δ against the FP top-1 ``ablate.py`` measured."""
    (_, api, _), (_, r, _) = reports
    fp, rows = _ablate_rows(r)
    rows["api"] = {"top1": api["quant"]["top1"], "agreement": api["agreement"], "kl": api["kl"]}
    lines = ["| variant | top-1 | Δ vs FP | agreement | KL |", "|---|---|---|---|---|"]
    for variant, label in MB_VARIANTS.items():
        if variant in rows:
            m = rows[variant]
            lines.append(f"| {label} | {100 * m['top1']:.1f} | {_delta(m['top1'], fp['top1'])} | {m['agreement']:.3f} "
                         f"| {m['kl']:.4f} |")  # fmt: skip
    lines.append(
        f"\nFP top-1 {100 * fp['top1']:.1f} (`ablate.py`), {100 * api['fp']['top1']:.1f} (the API run)."
    )
    return "\n".join(lines)


# --- DeiT-Tiny on SMI / DeepInversion / real / noise images (dfq calibrate, paired_runs.py, calib_variance.py)

SMI_RUNS: dict[str, str] = {
    "dt-w8a8-real": "real",
    "dt-w8a8-smi": "SMI, kept tokens only (the SMI paper's recipe)",
    "dt-w8a8-smi-dense": "SMI, all tokens (`--dense-calibration`)",
    "dt-w8a8-noise": "Gaussian noise",
    "dt-w8a8-di": "dense DeepInversion (same loop, no pruning)",
    "dt-w8a8-di-random46": "dense DeepInversion, 46 random patches per image kept in calibration",
    "dt-w8a8-di-attention46": "dense DeepInversion, 46 top-attention patches kept in calibration",
    "dt-w8a8-smi64": "SMI (seeds 0 and 1), kept tokens only",
    "dt-w8a8-smi64-dense": "SMI (seeds 0 and 1), all tokens",
}
"""``dfq calibrate`` steps (trt numerics; their ``-paper`` twins drop the parenthesis) -> calibration images."""


def smi_calib_table(reports: Items) -> str:
    """W8A8 DeiT-Tiny calibrated on 32 images of each source (``dfq calibrate`` reports), trt then paper."""
    lines = [
        "| numerics | calibration images | top-1 | Δ vs FP | agreement | KL |",
        "|---|---|---|---|---|---|",
    ]
    for name, r, _ in reports:
        numerics = r["quant_config"]["numerics"]
        label = SMI_RUNS.get(name.replace("-paper", ""), name)
        if numerics != "trt":
            label = label.split(" (")[0]
        n = r.get("calibration", {}).get("num_images", 32)
        q = r["quant"]
        lines.append(f"| {numerics} | {n} {label} | {100 * q['top1']:.1f} | {_delta(q['top1'], r['fp']['top1'])} "
                     f"| {r['agreement']:.3f} | {r['kl']:.4f} |")  # fmt: skip
    return "\n".join(lines)


PAIRED_NAMES = {"dt-w8a8-di": "dense DeepInversion", "dt-w8a8-smi": "SMI, kept tokens",
                "dt-w8a8-smi-dense": "SMI, all tokens", "dt-w8a8-real": "real images",
                "dt-w8a8-noise": "Gaussian noise", "dt-w8a8-smi64": "64 SMI images, kept tokens",
                "dt-w8a8-smi64-dense": "64 SMI images, all tokens"}  # fmt: skip


def paired_table(reports: Items) -> str:
    """Every run against the first on the same images: top-1 and KL differences with bootstrap intervals
    and the McNemar test (``paired_runs.py --json``)."""
    ((_, r, _),) = reports
    base = PAIRED_NAMES.get(r["comparisons"][0]["baseline"], r["comparisons"][0]["baseline"])
    lines = [f"| trt W8A8, vs {base} | top-1 Δ (95% CI) | McNemar (only A right / only B right), p | KL Δ (95% CI) |",
             "|---|---|---|---|"]  # fmt: skip
    for c in r["comparisons"]:
        (t_lo, t_hi), (k_lo, k_hi) = c["top1_ci"], c["kl_ci"]
        lines.append(f"| {PAIRED_NAMES.get(c['run'], c['run'])} | {signed(100 * c['top1_diff'])} pt "
                     f"({signed(100 * t_lo)}, {signed(100 * t_hi)}) | {c['only_run']} / {c['only_baseline']}, "
                     f"p = {c['mcnemar_p']:.2f} | {signed(c['kl_diff'], 3)} ({signed(k_lo, 3)}, {signed(k_hi, 3)}) |")  # fmt: skip
    lines.append(
        f"\nPaired over the same {r['num_images']} images (2000 bootstrap resamples, exact McNemar test)."
    )
    return "\n".join(lines)


VARIANCE_NAMES = {"di": ("dense DeepInversion", "DI"), "smi": ("SMI seed 0, kept tokens", "SMI"),
                  "smi-s1": ("SMI seed 1, kept tokens", "SMI s1"), "smi-dense": ("SMI seed 0, all tokens", "SMI dense"),
                  "smi-s1-dense": ("SMI seed 1, all tokens", "SMI s1 dense"), "real": ("32 real images", "real")}  # fmt: skip


def variance_table(reports: Items) -> str:
    """KL to FP of each source's whole set and of random subsets of it, and each source's difference to the
    first source's over the same draws (``calib_variance.py --json``)."""
    ((_, r, _),) = reports
    rows = r["rows"]
    sources = list(dict.fromkeys(row["source"] for row in rows))
    kls = {s: [row["kl"] for row in rows if row["source"] == s and row["draw"] != "all"] for s in sources}
    full = {s: next(row for row in rows if row["source"] == s and row["draw"] == "all") for s in sources}
    sub = next(row["images"] for row in rows if row["draw"] != "all")
    whole, draws, base = full[sources[0]]["images"], len(kls[sources[0]]), sources[0]
    parts = "halves" if 2 * sub == whole else f"draws of {sub}"
    short = VARIANCE_NAMES.get(base, (base, base))[1]
    lines = [f"| source | whole set ({whole}) | {draws} {parts}: mean ± sd (min–max) | − {short}, same draws: mean "
             f"(min–max) | top-1 over the {parts}: mean (min–max) |", "|---|---|---|---|---|"]  # fmt: skip
    for s in sources:
        k = kls[s]
        top1 = [100 * row["top1"] for row in rows if row["source"] == s and row["draw"] != "all"]
        sd = statistics.stdev(k) if len(k) > 1 else 0.0
        diffs = [a - b for a, b in zip(k, kls[base], strict=True)]
        diff = (
            "—"
            if s == base
            else f"{signed(statistics.mean(diffs), 4)} ({signed(min(diffs), 4)}…{signed(max(diffs), 4)})"
        )
        lines.append(f"| {VARIANCE_NAMES.get(s, (s,))[0]} | {full[s]['kl']:.4f} | {statistics.mean(k):.4f} ± {sd:.4f} "
                     f"({min(k):.4f}–{max(k):.4f}) | {diff} | {statistics.mean(top1):.1f} ({min(top1):.1f}–{max(top1):.1f}) |")  # fmt: skip
    return "\n".join(lines + _range_notes(r.get("ranges"), r.get("range_threshold", 1.25)))


def _range_notes(ranges: dict[str, dict[str, float]] | None, threshold: float) -> list[str]:
    """The activation sites whose whole-set range differs from the first source's by more than ``threshold``
    for some source, with every source's ratio; then the largest ratio elsewhere.

    >>> _range_notes({"di": {"a": 1.0, "b": 2.0}, "smi": {"a": 2.5, "b": 2.2}}, 1.5)[2:]
    ['- `a`: smi 2.50x', 'Every other site within 1.10x–1.10x of di for every source.']
    """
    if not ranges:
        return []
    base, *others = ranges
    off, rest = [], []
    for site, ref in ranges[base].items():
        ratios = {n: ranges[n][site] / ref for n in others if site in ranges[n]}
        if any(x > threshold or x < 1 / threshold for x in ratios.values()):
            off.append(f"- `{site}`: " + ", ".join(f"{n} {x:.2f}x" for n, x in ratios.items()))
        else:
            rest += ratios.values()
    out = ["", f"Whole-set activation ranges against {base}'s, sites off by more than {threshold:g}x for some source:"]
    out += off or ["- none"]
    if rest:
        out.append(f"Every other site within {min(rest):.2f}x–{max(rest):.2f}x of {base} for every source.")
    return out


# --- BN CNNs calibrated on inverted images vs noise vs real (cnn_inversion.py) ---------------------------

_SOURCES = {"real": "real", "noise": "noise", "deepinversion": "DeepInversion", "cmi": "CMI"}


def source_label(source: str, settings: list[str]) -> str:
    """A calibration source with the settings that differ from its defaults, as the tables name it.

    >>> source_label("deepinversion", ["iterations=500", "batch_size=64"]), source_label("cmi", ["ngf=16"])
    ('DeepInversion (500 it.)', 'CMI (ngf 16)')
    """
    named = dict(s.split("=", 1) for s in settings)
    notes = [f"{named['iterations']} it."] if "iterations" in named else []
    notes += [f"ngf {named['ngf']}"] if "ngf" in named else []
    return _SOURCES.get(source, source) + (f" ({', '.join(notes)})" if notes else "")


def _cnn_table(reports: Items, digits: int) -> str:
    ((_, rows, _),) = reports
    lines = ["| calibration | W8A8 top-1 | agreement | KL | W4A8 top-1 | agreement | KL | seconds to make |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for source in dict.fromkeys(row["source"] for row in rows):
        by = {row["scheme"]: row for row in rows if row["source"] == source}
        cells = [
            f"{100 * by[s]['top1']:.{digits}f} | {by[s]['agreement']:.3f} | {by[s]['kl']:.4f}"
            for s in ("w8a8", "w4a8")
        ]
        made = "—" if source == "real" else f"{by['w8a8']['seconds_to_make']:.0f}"
        lines.append(
            f"| {source_label(source, by['w8a8'].get('settings', []))} | {' | '.join(cells)} | {made} |"
        )
    return "\n".join(lines)


def cnn_cifar_table(reports: Items) -> str:
    """CIFAR-10 ResNet-56 W8A8 / W4A8 calibrated on each source (846 images: top-1 to two decimals)."""
    return _cnn_table(reports, 2)


def cnn_mobilenet_table(reports: Items) -> str:
    """MobileNet-v1 0.25 W8A8 / W4A8 calibrated on each source."""
    return _cnn_table(reports, 1)
