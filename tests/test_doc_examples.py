"""Every segment expression the README, docs/ and the expression module show compiles against the
real schema: an example that names a feature segstream does not have (``monetary_30d``) fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from segstream.operators import expressions
from segstream.operators.expressions import STRING, parse
from segstream.operators.features import expression_schema

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCHEMA = expression_schema(traits={"plan": STRING})
"""The default windows' features, and the trait the docs declare (``[traits] plan = "string"``)."""

NOT_EXPRESSIONS = {
    "shards > 1": "a condition on a worker setting",
    "t(e) <= T": "notation for event times in docs/features.md",
    "b(T) - H/r < b(t) <= b(T)": "notation for window buckets in docs/features.md",
    "W > deadline": "notation for a watermark passing a timer",
    "< <= > >= == !=": "the list of comparison operators",
}
_SPAN = re.compile(r"`([^`\n]+)`")
_COMPARISON = re.compile(r" (<|<=|>|>=|==|!=) ")
_CONDITION = re.compile(r"^\s*(?:when|exit_when)\s*=\s*\"(.*)\"")
_FENCE = re.compile(r"^```(\w*)\s*$")


def examples(path: Path) -> list[tuple[str, str]]:
    """``(where, expression)`` for each example in a Markdown file.

    Inline code spans with a spaced comparison; in ```toml blocks, ``when`` and
    ``exit_when`` values; in unlabelled blocks under a heading with
    "Expressions", every line.
    """
    found: list[tuple[str, str]] = []
    fence: str | None = None
    heading = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path.name}:{number}"
        opened = _FENCE.match(line)
        if opened is not None:
            fence = opened.group(1) if fence is None else None
            continue
        if fence is None:
            if line.startswith("#"):
                heading = line
            found.extend((where, span) for span in _SPAN.findall(line) if _COMPARISON.search(span))
        elif fence == "toml" and (condition := _CONDITION.match(line)):
            found.append((where, condition.group(1)))
        elif fence == "" and "Expressions" in heading and line.strip():
            found.append((where, line.strip()))
    return found


def module_examples() -> list[tuple[str, str]]:
    """The examples of the expression module's docstring (the indented block after ``::``)."""
    doc = expressions.__doc__ or ""
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]
    return [("operators/expressions.py", line.strip()) for line in block.splitlines() if line.strip()]


ALL = [example for path in DOCS for example in examples(path)] + module_examples()


def test_the_docs_show_examples() -> None:
    """The extraction finds the examples it is meant to (so the test below cannot pass empty)."""
    texts = {text for _where, text in ALL}
    assert {"revenue_30d > p90(revenue_30d)", "aov_90d > mean(aov_90d) + 2 * std(aov_90d)",
            'traits.plan == "pro" or since_last_purchase_s <= 14d',
            "rfm_r >= 4 and rfm_f >= 4 and rfm_m >= 4"} <= texts
    assert len(ALL) >= 20


@pytest.mark.parametrize(("where", "text"), ALL, ids=[f"{w}:{t}" for w, t in ALL])
def test_every_example_compiles_against_the_real_schema(where: str, text: str) -> None:
    """Each example parses and type-checks as a segment condition (or is listed as notation)."""
    if text in NOT_EXPRESSIONS:
        return
    parse(text, SCHEMA, source=where)
