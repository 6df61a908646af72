"""The documentation as users read it: every Python example of the README and the docs runs, every
command-line example is one the real parser takes, every results table is its results file's, every
public name has a docstring, and the README stays a five-minute read."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

BLOCK = re.compile(r"```(?P<lang>\w+)[^\n]*\n(?P<body>.*?)```", re.S)


def _pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _blocks(path: Path, langs: tuple[str, ...]) -> list[str]:
    return [m.group("body") for m in BLOCK.finditer(path.read_text()) if m.group("lang") in langs]


def _pages_with(langs: tuple[str, ...]) -> list[str]:
    root = Path(__file__).resolve().parent.parent
    root = Path(os.environ.get("CPIXELCNN_SOURCE_TREE", root))
    return [str(p.relative_to(root)) for p in _pages(root) if p.is_file() and _blocks(p, langs)]


@pytest.mark.parametrize("page", _pages_with(("python",)))
def test_every_python_example_runs(page, source_tree, tmp_path, monkeypatch):
    """Every Python block of a page runs on its own (a reader may copy any one of them), twice in a
    row (a reader runs an example again), in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    for number, code in enumerate(_blocks(source_tree / page, ("python",)), 1):
        for _ in range(2):
            exec(compile(code, f"{page}, Python example {number}", "exec"), {"__name__": f"example:{page}:{number}"})


def _commands(code: str) -> list[list[str]]:
    """The cpixelcnn command lines of a shell block (continuations joined, comments and a trailing & dropped),
    as the arguments after ``cpixelcnn`` (or ``-m cpixelcnn``)."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        words = words[:-1] if words and words[-1] == "&" else words
        if "cpixelcnn" in words and (words[0] == "cpixelcnn" or "-m" in words):
            start = words.index("cpixelcnn") + 1
            if words[0] == "cpixelcnn" or (start >= 2 and words[start - 2] == "-m"):
                found.append(words[start:])
    return found


@pytest.mark.parametrize("page", _pages_with(("bash", "sh")))
def test_every_command_line_example_parses(page, source_tree, capsys):
    from cpixelcnn.cli import build_parser

    parser = build_parser()
    commands = [c for code in _blocks(source_tree / page, ("bash", "sh")) for c in _commands(code)]
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page}: `cpixelcnn {' '.join(argv)}` does not parse: {capsys.readouterr().err.strip()}")


def test_the_command_extractor_reads_continuations_comments_and_torchrun():
    code = "cpixelcnn sample --checkpoint r --out x.png   # a comment\nsrun torchrun --nnodes 2 \\\n  -m cpixelcnn train --data d --out o &\necho cpixelcnn\n"
    assert _commands(code) == [["sample", "--checkpoint", "r", "--out", "x.png"], ["train", "--data", "d", "--out", "o"]]


def test_the_results_tables_are_their_results_files(source_tree, capsys):
    """`python -m benchmarks.tables --check`: no table of the README or the docs lags behind benchmarks/results."""
    from benchmarks import tables

    assert tables.main(["--check", "--root", str(source_tree)]) == 0, capsys.readouterr().err


def test_a_changed_result_changes_its_table(tmp_path, monkeypatch):
    from benchmarks import tables

    payload = tables._load("data-cpu--2-cores.json")
    payload["summary"]["warm_start_s"] = 123.4
    (tmp_path / "data-cpu--2-cores.json").write_text(__import__("json").dumps(payload))
    real_load = tables._load
    monkeypatch.setattr(tables, "_load", lambda name: payload if name == "data-cpu--2-cores.json" else real_load(name))
    text = "x\n<!-- results:headline -->\nold\n<!-- /results:headline -->\ny\n"
    assert "**123.4 s** to the first step" in tables.render_blocks(text)


def test_every_public_name_has_a_docstring():
    import cpixelcnn
    import cpixelcnn.training as training

    missing = [
        f"{module.__name__}.{name}"
        for module in (cpixelcnn, training)
        for name in module.__all__
        if not (getattr(module, name).__doc__ or "").strip()
    ]
    assert not missing, f"public names without a docstring: {missing}"


def test_the_readme_is_a_five_minute_read(source_tree):
    lines = (source_tree / "README.md").read_text().splitlines()
    assert len(lines) <= 150 and "bash scripts/demo.sh" in lines[lines.index("## Two commands") + 3]


def test_the_docs_name_every_page_once_in_their_navigation(source_tree):
    nav = (source_tree / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (source_tree / "docs").glob("*.md"))
    assert all(nav.count(f" {page}") == 1 for page in pages), [p for p in pages if nav.count(f" {p}") != 1]


def test_the_readmes_links_lead_to_files_of_the_checkout(source_tree):
    """The README is outside the site's strict build: its relative links are checked here."""
    text = (source_tree / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert targets and all((source_tree / t).exists() for t in targets), [t for t in targets if not (source_tree / t).exists()]


def test_every_command_line_option_says_what_it_does():
    """The reference on docs/cli.md is the parser's help: an option without help would be a blank row."""
    import argparse

    from cpixelcnn.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [f"{name} {a.option_strings or a.dest}" for name, p in commands.choices.items() for a in p._actions if not (a.help or "").strip()]
    assert not silent, silent


def test_the_command_line_reference_is_the_parsers(source_tree, monkeypatch):
    """docs/cli.md holds the rendered reference; an option added to a command appears in it."""
    from benchmarks import tables
    from cpixelcnn import cli

    page = (source_tree / "docs" / "cli.md").read_text()
    assert tables.CLI_BLOCK.search(page) and "`--max-steps` `MAX_STEPS`" in page
    real = cli.build_parser

    def with_extra_option():
        parser = real()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        sub.choices["sample"].add_argument("--brand-new", type=int, default=7, help="a new option")
        return parser

    monkeypatch.setattr(cli, "build_parser", with_extra_option)
    assert "| `--brand-new` `BRAND_NEW` | a new option (default: 7) |" in tables.render_cli_blocks(page)


def test_a_measured_figure_in_prose_is_rendered_from_its_results_file(source_tree):
    """One source per figure: the digits accuracy in the README and the docs is the results file's,
    and a hand-written one is named by ``benchmarks.tables --check``."""
    import json

    from benchmarks import tables

    summary = json.loads((tables.RESULTS / "quality-digits-cpu--2-cores.json").read_text())["summary"]
    text = "Held-out accuracy on the digits: <!-- figure:digits.mean -->1.0 %<!-- /figure:digits.mean --> mean."
    assert f"-->{summary['mean_accuracy']:.1%}<!--" in tables.render_figures(text)
    assert tables.loose_figures("On the digits the accuracy is 98.5 % by hand.\n") and not tables.loose_figures(tables.render_figures(text))
    assert not tables.loose_figures("Requires accuracy ≥ 97 % on the digits (chance 10 %).\n")
    for path in tables.documents(source_tree):
        assert not tables.loose_figures(path.read_text()), path
