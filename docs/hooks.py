"""MkDocs hooks of the docs build (``mkdocs.yml``: ``hooks``):

- every ``<!-- results:NAME -->`` table is rendered anew from ``benchmarks/results/*.json``
  (:mod:`benchmarks.tables`): the site shows the figures of the results files, whatever the
  committed Markdown says (the test suite keeps that in step too);
- every public name of the API reference must have a docstring: one without is a warning, and the
  strict build (``mkdocs build --strict``) fails on it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's benchmarks package and cpixelcnn sources

from benchmarks.tables import render_blocks, render_figures  # noqa: E402

log = logging.getLogger("mkdocs.plugins.cpixelcnn")


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "api.md":
        for name in undocumented():
            log.warning(f"api.md: the public name {name} has no docstring")
        reference = "\n".join(f"::: {name}\n" for name in public_names())
        markdown = markdown.replace("<!-- api-reference -->", reference)
    return render_figures(render_blocks(markdown))


def public_names() -> list[str]:
    """``cpixelcnn.__all__`` and the training package's ``__all__``, as dotted names (read statically)."""
    import ast

    names = []
    for module, path in (("cpixelcnn", ROOT / "cpixelcnn" / "__init__.py"), ("cpixelcnn.training", ROOT / "cpixelcnn" / "training" / "__init__.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                names += [f"{module}.{ast.literal_eval(node.value)[i]}" for i in range(len(ast.literal_eval(node.value)))]
    return names


def undocumented() -> list[str]:
    """The public names whose object has no docstring (griffe reads the sources; nothing is imported)."""
    import griffe

    package = griffe.load("cpixelcnn", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)
    missing = []
    for dotted in public_names():
        obj = package[dotted.removeprefix("cpixelcnn.")]
        target = obj.final_target if obj.is_alias else obj
        if not (target.docstring and target.docstring.value.strip()):
            missing.append(dotted)
    return missing
