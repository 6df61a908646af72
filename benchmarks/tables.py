"""The benchmark tables of the README and the docs, rendered from ``benchmarks/results/*.json``: a
figure in the documentation is the figure in its results file.

A table stands in a Markdown file between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``.
The command-line reference (``<!-- cli:reference -->``) is rendered the same way from the real
argument parser, so every option, default and help text in docs/cli.md is the parser's.

    python -m benchmarks.tables            # rewrite every table of README.md and docs/*.md
    python -m benchmarks.tables --check    # exit 1 naming the tables that differ from their results

The docs build renders the results tables again (``docs/hooks.py``), so a changed results file
changes the site; the test suite runs ``--check`` (results and command line: it imports the
package), so the committed Markdown never lags behind.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"  # where the figures come from (this file's own checkout)
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z_-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
CLI_BLOCK = re.compile(r"(<!-- cli:reference -->\n)(?P<body>.*?)(<!-- /cli:reference -->)", re.S)
REGISTRY_BLOCK = re.compile(r"(<!-- registry:(?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /registry:(?P=name) -->)", re.S)


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _when(payload: dict) -> str:
    info = payload.get("device_info", {})
    return f"{info.get('cpu') or info.get('device', '?')}, torch {info.get('torch', '?').split('+')[0]}, {info.get('time', '?')[:10]}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def data() -> str:
    payload = _load("data-cpu--2-cores.json")
    rows = []
    for r in payload["rows"]:
        memory = "—" if "64px" in r["set"] else f"{r['beyond_model_mb']:,.0f} MB"
        side = r["set"].split("-")[-1].replace("px", "")
        name = f"{r['images']:,} " + ("images 32×32, ImageNet npz" if r["set"].startswith("imagenet") else f"PNGs {side}×{side}")
        warm = f"{r['warm_s']:.1f} s" + (" (every start)" if r["loader"] == "baseline" else "")
        rows.append([name, "cached" if r["loader"] == "cached" else payload["baseline"], f"{r['cold_s']:.1f} s", warm,
                     f"{r['decode_per_core']:,.0f} /s", memory])  # fmt: skip
    s = payload["summary"]
    rows.append([f"{s['imagenet_images']:,} images 32×32, ImageNet npz", payload["baseline"], "cannot read it",
                 f"~{s['baseline_extrapolated_start_s_at_imagenet']:.0f} s at its folder rate", "—", "—"])  # fmt: skip
    header = ["data", "loader", "cold start (decode + cache)", "warm start (to the first step)", "decoding per core", "peak RSS beyond the model"]
    return _table(header, rows) + f"\n{_when(payload)}; `python -m benchmarks.bench_data`.\n"


def sampling() -> str:
    rows = []
    for name in ("sampling-target-cpu--2-cores.json", "sampling-cpu--2-cores.json"):
        for r in _load(name)["rows"]:
            naive = f"{r['naive_s']:.1f} s" + ("*" if r["naive_extrapolated"] else " (full run)")
            speedup = f"**{r['speedup']:.0f}×**" + (f", {r['identical_pixels']:.0%} pixels identical" if "identical_pixels" in r else "")
            rows.append([r["model"], r["batch"], r["image"].replace("x", "×"), f"{r['forward_s']:.3f} s", f"{r['cached_s']:.3f} s",
                         f"**{r['cached_over_forward']:.2f}**", naive, speedup])  # fmt: skip
    header = ["model", "batch", "image", "one batched forward", "cached", "**cached / forward**", "naive", "speed-up"]
    return (
        _table(header, rows)
        + f"\n{_when(_load('sampling-cpu--2-cores.json'))}; `python -m benchmarks.bench_sampling` (`--target` for the first row).\n"
    )


def checkpoint_activations() -> str:
    payload = _load("checkpoint_activations-cpu--2-cores.json")
    plain, ckpt = payload["rows"]
    s = payload["summary"]
    rows = [["plain", f"{plain['saved_activation_mb']:,.0f} MB", f"{plain['peak_step_mb']:,.0f} MB", f"{plain['step_s']:.1f} s"],
            ["`--checkpoint-activations`", f"{ckpt['saved_activation_mb']:,.0f} MB (**{s['saved_activation_ratio']:.1%}**)",
             f"{ckpt['peak_step_mb']:,.0f} MB (**{s['peak_step_ratio']:.0%}**)", f"{ckpt['step_s']:.1f} s (×{s['step_time_ratio']:.2f})"]]  # fmt: skip
    header = ["", "saved activations (autograd's own tensors)", "peak memory of a step (process, above its start)", "step time"]
    config = f"{plain['model']}, batch {plain['batch']}, {plain['size']}×{plain['size']}"
    return _table(header, rows) + f"\n{config}; {_when(payload)}; `python -m benchmarks.bench_checkpoint_activations`.\n"


def conditional_vs_per_class() -> str:
    payload = _load("conditional-vs-per-class-cpu--2-cores.json")
    by_key = {(s["dataset"], s["steps"], s["method"]): s for s in payload["summary"]}
    rows = []
    for v in payload["verdicts"]:
        c, p = by_key[(v["dataset"], v["steps"], "conditional")], by_key[(v["dataset"], v["steps"], "per-class")]
        rows.append([v["dataset"], v["steps"], f"{c['mean_accuracy']:.1%} / {c['worst_accuracy']:.1%}, {c['mean_test_bpd']:.3f}",
                     f"{p['mean_accuracy']:.1%} / {p['worst_accuracy']:.1%}, {p['mean_test_bpd']:.3f}",
                     f"{v['accuracy_winner']}, by {v['accuracy_points']:.1f} points"])  # fmt: skip
    header = ["data", "total steps", "conditional: mean / worst accuracy, bits/dim", "per-class: mean / worst accuracy, bits/dim", "which wins"]
    seeds = sorted({r["seed"] for r in payload["rows"]})
    return _table(header, rows) + f"\nseeds {seeds[0]}–{seeds[-1]}; {_when(payload)}; `python -m benchmarks.bench_conditional_vs_per_class`.\n"


def ood() -> str:
    payload = _load("ood-cpu--2-cores.json")
    rows = [[s["in_set"], s["out_set"], f"{s['mean_auroc_bpd']:.3f} ({s['worst_auroc_bpd']:.3f})", f"{s['mean_auroc_llr']:.3f} ({s['worst_auroc_llr']:.3f})"]
            for s in payload["summary"]]  # fmt: skip
    header = ["in-distribution", "out-of-distribution", "AUROC, bits/dim: mean (worst)", "AUROC, likelihood ratio: mean (worst)"]
    return _table(header, rows) + f"\n{payload['summary'][0]['seeds']} seeds; {_when(payload)}; `python -m benchmarks.bench_ood`.\n"


def train_step_cpu() -> str:
    payload = _load("train_step-cpu-cpu--2-cores.json")
    rows = []
    for r in payload["rows"]:
        versus = f"{r['speed_vs_port_compiled']:.2f}× ({r['rounds_ahead_of_port_compiled']})" if "speed_vs_port_compiled" in r else "—"
        rows.append([r["variant"], f"{r['step_s']:.3f} s", f"{r['speed_vs_ours_eager']:.2f}×", f"{r.get('speed_vs_port', float('nan')):.2f}×", versus,
                     r["graphs"] if r["graphs"] is not None else "—", f"{r['compile_s']:.0f} s" if r["compile_s"] is not None else "—"])  # fmt: skip
    header = ["variant", "step (median)", "vs our eager", "vs the port's eager", "vs the port compiled (rounds ahead)", "graphs", "compile"]
    c = payload["config"]
    config = f"{c['nr_resnet']}/{c['nr_filters']}/{c['nr_logistic_mix']}, batch {c['batch']}, {c['image']}×{c['image']}, {c['rounds']} rounds"
    return _table(header, rows) + f"\n{config}; {_when(payload)}; `python -m benchmarks.bench_train_step --cpu --port DIR`.\n"


def headline() -> str:
    """The README's one small table: the figure each claim of the package rests on."""
    target = _load("sampling-target-cpu--2-cores.json")["rows"][0]
    step = {r["variant"]: r for r in _load("train_step-cpu-cpu--2-cores.json")["rows"]}["ours, torch.compile"]
    data_summary = _load("data-cpu--2-cores.json")["summary"]
    quality = _load("quality-digits-cpu--2-cores.json")
    digits = quality["summary"]
    rows = [
        ["cached sampler vs naive (1/40/5, 16 images 32×32)", f"**{target['speedup']:.0f}×** faster, {target['identical_pixels']:.0%} of pixels identical",
         _when(_load("sampling-target-cpu--2-cores.json"))],
        ["compiled training step vs the PyTorch port compiled (1/40/5)", f"**{step['speed_vs_port_compiled']:.2f}×** ({step['rounds_ahead_of_port_compiled']} rounds ahead)",
         _when(_load("train_step-cpu-cpu--2-cores.json"))],
        [f"warm start at {data_summary['imagenet_images']:,} images (ImageNet npz)", f"**{data_summary['warm_start_s']:.1f} s** to the first step",
         _when(_load("data-cpu--2-cores.json"))],
        [f"held-out Bayes accuracy on digits ({digits['model']}, {digits['steps']} steps, {digits['seeds']} seeds; the CI guard's recipe)",
         f"**{digits['mean_accuracy']:.1%}** mean, {digits['worst_accuracy']:.1%} worst", _when(quality)],
    ]  # fmt: skip
    return _table(["measured", "result", "machine, torch, date"], rows)


def data_open_check() -> str:
    payload = _load("data-open-check-cpu--2-cores.json")
    s = payload["summary"]
    rows = [[f"{w} ({payload['baseline'] if w == 'before' else 'checksums checked at every open'})", f"{s[w]['cold_s']:.1f} s",
             f"{s[w]['warm_median_s']:.2f} s ({s[w]['warm_min_s']:.2f}–{s[w]['warm_max_s']:.2f})"] for w in ("before", "after")]  # fmt: skip
    table = _table(["data cache", "cold start", "warm start: median (min–max)"], rows)
    return table + (
        f"\n{payload['images']:,} ImageNet-32 npz images, {len(s['after']['rounds'])} interleaved rounds; after / before (medians): "
        f"{s['warm_median_after_over_before']:.2f}; {_when(payload)}; `python -m benchmarks.bench_data --warm-ab {payload['baseline']}`.\n"
    )


def quality_digits() -> str:
    payload = _load("quality-digits-cpu--2-cores.json")
    rows = [[r["seed"], f"{r['accuracy']:.1%}", f"{r['raw_accuracy']:.1%}"] for r in payload["rows"]]
    s = payload["summary"]
    rows.append(
        [
            "**mean / worst**",
            f"**{s['mean_accuracy']:.1%} / {s['worst_accuracy']:.1%}**",
            f"{s['mean_raw_accuracy']:.1%} / {s['worst_raw_accuracy']:.1%}",
        ]
    )
    header = ["seed", "held-out accuracy, averaged weights (what classify uses)", "raw weights"]
    return _table(header, rows) + f"\n{s['model']}, {s['steps']} steps; {_when(payload)}; `python -m benchmarks.quality_digits`.\n"


# -- figures in prose: <!-- figure:NAME -->TEXT<!-- /figure:NAME --> ---------------------------------------

FIGURE = re.compile(r"(<!-- figure:(?P<name>[a-z_.-]+) -->)(?P<body>.*?)(<!-- /figure:(?P=name) -->)", re.S)


def _quality_figure(key: str):
    return lambda: f"{_load('quality-digits-cpu--2-cores.json')['summary'][key]:.1%}"


FIGURES = {
    "digits.mean": _quality_figure("mean_accuracy"),
    "digits.worst": _quality_figure("worst_accuracy"),
    "digits.best": _quality_figure("best_accuracy"),
    "digits.raw-mean": _quality_figure("mean_raw_accuracy"),
    "digits.raw-worst": _quality_figure("worst_raw_accuracy"),
    "warm-start": lambda: f"{_load('data-cpu--2-cores.json')['summary']['warm_start_s']:.1f} s",
}


def _filled(pattern: re.Pattern, renderers: dict, what: str, text: str) -> str:
    """``text`` with every block ``pattern`` finds (its opening, ``name``, body and closing) holding
    ``renderers[name]()`` anew; an unknown name is a KeyError naming it."""

    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in renderers:
            raise KeyError(f"no {what} named {name!r} (known: {', '.join(renderers)})")
        return match.group(1) + renderers[name]() + match.group(4)

    return pattern.sub(fill, text)


def render_figures(text: str) -> str:
    """Every inline figure rendered from its results file (a figure named in prose is the results file's)."""
    return _filled(FIGURE, FIGURES, "figure", text)


LOOSE_FIGURE = re.compile(r"\d+(?:\.\d+)? ?%")
MEASURED = ("digits",)  # measurements with a results file: a figure of theirs in prose must be a rendered one


def loose_figures(text: str) -> list[str]:
    """Paragraphs that give a percentage for a measurement that has a results file (``MEASURED``)
    by hand, outside every rendered table and figure: such a figure could drift from its results."""
    bare = FIGURE.sub("", BLOCK.sub("", text))
    found = []
    for paragraph in re.split(r"\n\s*\n", bare):
        paragraph = re.sub(r"(?:≥|>=|≤|<=) ?\d+(?:\.\d+)? ?%", "", paragraph)  # thresholds are settings, not measurements
        if any(word in paragraph.lower() for word in MEASURED) and "accuracy" in paragraph.lower() and LOOSE_FIGURE.search(paragraph):
            if "chance" in paragraph and all(m.strip() in ("10 %", "10%") for m in LOOSE_FIGURE.findall(paragraph)):
                continue  # chance on ten classes is arithmetic, not a measurement
            found.append(" ".join(paragraph.split())[:160])
    return found


def _gpu_tables() -> list[str]:
    """The GPU tables of ``benchmarks.predict_gpu`` (its own renderer) from the committed gpu-prediction.json:
    resources, kernels, the sampler, the training epoch, the training step."""
    from benchmarks.predict_gpu import markdown

    d = _load("gpu-prediction.json")
    return [t + "\n" for t in markdown(d["resources"], d["kernels"], d["sampler"], d["training_epoch"], d["training_step"]).split("\n\n")]


def gpu_resources() -> str:
    return _gpu_tables()[0]


def gpu_kernels() -> str:
    return _gpu_tables()[1]


def gpu_sampler() -> str:
    return _gpu_tables()[2]


def gpu_epoch() -> str:
    return _gpu_tables()[3]


def gpu_step() -> str:
    return _gpu_tables()[4]


RENDERERS = {
    f.__name__.replace("_", "-"): f
    for f in (data, data_open_check, sampling, checkpoint_activations, conditional_vs_per_class, ood, train_step_cpu, headline, quality_digits, gpu_resources,
              gpu_kernels, gpu_sampler, gpu_epoch, gpu_step)
}  # fmt: skip


def render_blocks(text: str) -> str:
    """``text`` with every results block rendered anew (an unknown name is a KeyError naming it)."""
    return _filled(BLOCK, RENDERERS, "results table", text)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _option_row(action) -> str:
    import argparse

    name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest.upper()}` (positional)"
    if action.choices is not None and action.metavar is None:
        name += ": " + " / ".join(f"`{c}`" for c in action.choices)
    elif action.nargs != 0 and action.option_strings:
        name += f" `{action.metavar or action.dest.upper()}`" + (" …" if action.nargs in ("+", "*") else "")
    meaning = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    quiet = action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0
    if not quiet and "default" not in meaning:
        meaning += f" (default: {action.default})"
    return f"| {_cell(name)} | {'**required**: ' if action.required else ''}{_cell(meaning)} |"


def cli_reference() -> str:
    """Every command of ``cpixelcnn`` with every option, its default and its help, as the parser has them."""
    import argparse

    from cpixelcnn.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in commands._choices_actions}
    parts = []
    for name, parser in commands.choices.items():
        rows = []
        for group in parser._action_groups:  # train's options come in titled groups (model, data, ...)
            actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if actions and group.title not in ("options", "optional arguments", "positional arguments"):
                rows.append(f"| **{_cell(group.title)}** | |")
            rows += [_option_row(a) for a in actions]
        parts.append(f"### cpixelcnn {name}\n\n{helps.get(name) or ''}.\n\n| option | what it does |\n| --- | --- |\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def render_cli_blocks(text: str) -> str:
    """``text`` with its command-line reference rendered anew from the parser (imports the package)."""
    return CLI_BLOCK.sub(lambda m: m.group(1) + cli_reference() + m.group(3), text)


def ops_table() -> str:
    """Every registered op (``cpixelcnn.ops.OPS``): its kernels, what they fuse, how they are checked."""
    from cpixelcnn.ops import OPS

    rows = [
        [f"`{op.name}`", f"`kernels/{op.kernels.rsplit('.', 1)[-1]}.py`", _cell(op.fuses), _cell(op.checked), f"{op.check.tolerance:g}"]
        for op in OPS.values()
    ]
    return _table(["op", "Triton kernels", "what they do in one pass", "checked against the eager reference", "doctor's tolerance"], rows)


def engines_table() -> str:
    """Every registered sampler engine (``cpixelcnn.sampling.engines.ENGINES``)."""
    from cpixelcnn.sampling.engines import ENGINES, emulations_of

    rows = []
    for e in ENGINES.values():
        checked = "identical images to the naive sampler in float64 (self-check `engine:" + e.name + "`)"
        emulated = [f"`{x.name}`" for x in emulations_of(e.name)]
        if emulated:
            checked += f"; without a {e.device.upper()} device: the same kernels under emulation ({', '.join(emulated)})"
        picked = ("yes, once its self-check passed on the device" if e.gated else "yes") if e.auto else "only by name"
        rows.append(
            [f"`{e.name}`", e.device.upper(), f"`{e.source}`", _cell(e.help) + (f" (emulates `{e.emulates}`)" if e.emulates else ""), picked, checked]
        )
    return _table(["engine", "models on", "code", "what it is", "`auto` picks it", "checked"], rows)


def formats_table() -> str:
    """Every registered data format (``cpixelcnn.data.FORMATS``), in the order ``--data`` tries them."""
    from cpixelcnn.data.registry import FORMATS, WHERE

    ordered = sorted(FORMATS.values(), key=lambda f: (WHERE.index(f.where), f.precedence))
    how = {"builtin": "by name", "prefix": "`NAME:DIR`", "folder": "a folder it recognises"}
    rows = [
        [f"`{f.name}`", _cell(f.usage), how[f.where] + (f" (precedence {f.precedence})" if f.where == "folder" else ""), _cell(f.help)]
        for f in ordered
    ]
    return (
        _table(["format", "`--data`", "named", "what it reads"], rows)
        + "\nFolder formats are tried in ascending precedence; the first that recognises the folder reads it.\n"
    )


REGISTRY_TABLES = {"ops": ops_table, "engines": engines_table, "formats": formats_table}


def render_registry_blocks(text: str) -> str:
    """``text`` with its ops, engines and formats tables rendered anew from the registries (imports the package)."""
    return _filled(REGISTRY_BLOCK, REGISTRY_TABLES, "registry table", text)


def documents(root: Path = ROOT) -> list[Path]:
    """The Markdown files whose tables are rendered: the README and every page of docs/ in ``root``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the files whose tables lag behind their results")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose README.md and docs/ hold the tables (default: this one)")
    args = parser.parse_args(argv)
    stale = []
    for path in documents(args.root):
        text = path.read_text()
        rendered = render_figures(render_registry_blocks(render_cli_blocks(render_blocks(text))))
        if rendered != text:
            stale.append(path)
            if not args.check:
                path.write_text(rendered)
    for path in stale:
        print(f"{path.relative_to(args.root)}: {'tables differ from their results' if args.check else 'tables rewritten'}", file=sys.stderr)
    loose = [(path, paragraph) for path in documents(args.root) for paragraph in loose_figures(path.read_text())]
    for path, paragraph in loose:
        print(
            f"{path.relative_to(args.root)}: a hand-written figure of a measured result (render it: <!-- figure:NAME -->): {paragraph}",
            file=sys.stderr,
        )
    return 1 if (stale and args.check) or loose else 0


if __name__ == "__main__":
    sys.exit(main())
