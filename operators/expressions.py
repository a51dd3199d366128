r"""A small, safe expression language for rule segments and journey guards.

Expressions are parsed once, at start-up, into a tree that is type-checked
against the names a profile offers, and evaluated per user without ``eval``::

    purchases_30d >= 3 and aov_90d > 50
    revenue_30d > p90(revenue_30d)
    aov_90d > mean(aov_90d) + 2 * std(aov_90d)
    device == "mobile" and not (churn_p > 0.7)

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | "true" | "false" | NAME | NAME "(" NAME ")" | "(" expr ")"

A number may carry a duration unit, ``s``, ``m``, ``h``, ``d`` or ``w``, and
then counts seconds: ``since_last_purchase_s <= 14d``.

A string is in double or single quotes, holds any Unicode, and takes the
escapes of TOML and JSON: ``\"``, ``\'``, ``\\``, ``\/``, ``\b``, ``\f``,
``\n``, ``\r``, ``\t``, ``\uXXXX`` (a surrogate pair for one character) and
``\UXXXXXXXX``; any other escape is an error at its column.

Parentheses, ``not`` and unary ``-`` nest at most :data:`MAX_NESTING` deep;
chains of one operator (``a or b or ...``) are any length.

Functions take one feature name and stand for a statistic of that feature
over the live population: ``p1``..``p99`` (percentiles), ``mean``, ``std``.

Evaluation never raises: a missing value (``None``), a division by zero or a
statistic not known yet makes the comparison it is part of false.

>>> rule = parse("purchases_30d >= 3 and aov_90d > 50", {"purchases_30d": NUMBER, "aov_90d": NUMBER})
>>> rule.evaluate({"purchases_30d": 4, "aov_90d": 60.0})
True
>>> sorted(rule.names), rule.statistics
(['aov_90d', 'purchases_30d'], [])
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from segstream.errors import ExpressionError

NUMBER, STRING, BOOL = "number", "string", "bool"
"""The types a name or an expression can have."""

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:[smhdw](?![A-Za-z0-9_.]))?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op><=|>=|==|!=|[<>()+\-*/])
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "true", "false"}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
"""A number with one of these suffixes is a duration in seconds (``14d`` is 1209600)."""
_PERCENTILE = re.compile(r"p([1-9][0-9]?)")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
MAX_NESTING = 32
"""How deep parentheses, ``not`` and unary ``-`` may nest (deeper ones exhaust Python's stack)."""
_SIMPLE_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n",
                   "r": "\r", "t": "\t"}

Stats = Callable[[str, str], float | None]
"""``stats(function, feature)``: a population statistic, ``None`` if not known yet."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    column: int


class _Missing(Exception):
    """A value needed by a comparison is missing: the comparison is false."""


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a parsed expression."""

    kind: str  # num, str, bool, name, stat, neg, not, logic, cmp, arith
    value: Any = None
    """The operator: ``and``/``or`` of a ``logic`` chain, a comparison's, or for an
    ``arith`` chain the operator before each child but the first."""
    children: tuple[Node, ...] = ()
    type: str = NUMBER


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed, type-checked boolean expression.

    Attributes:
        text: the expression as written.
        root: its tree.
        names: the profile names it reads.
        statistics: the ``(function, feature)`` population statistics it reads.

    """

    text: str
    root: Node
    names: frozenset[str] = field(default_factory=frozenset)
    statistics: list[tuple[str, str]] = field(default_factory=list)
    _run: _Condition = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once into closures: walking the tree per evaluation cost twice as much.
        object.__setattr__(self, "_run", _truth_of(_compile(self.root)))

    def evaluate(self, values: Mapping[str, Any], stats: Stats | None = None) -> bool:
        """Evaluate against one profile; never raises (missing values make comparisons false)."""
        return self._run(values, stats)


def parse(text: str, schema: Mapping[str, str], *, source: str = "expression",
          line: int = 0, field: str = "") -> Expression:
    """Parse and type-check ``text`` against ``schema`` (name -> type).

    Raises:
        ExpressionError: a syntax error, an unknown name (with the closest known
            names), an unknown function, or a type error, with its column.

    """
    parser = _Parser(text, schema, source, line, field)
    try:
        root = parser.expression()
    except RecursionError:  # MAX_NESTING keeps well within the stack; this is the last guard
        parser.fail(1, "the expression nests too deeply")
        raise AssertionError from None  # unreachable: fail raises
    parser.expect_end()
    if root.type != BOOL:
        parser.fail(1, f"a segment expression must be true or false, this one is a {root.type}")
    return Expression(text, root, frozenset(parser.names), parser.statistics)


class _Parser:
    def __init__(self, text: str, schema: Mapping[str, str], source: str, line: int,
                 field: str) -> None:
        self.text, self.schema, self.source, self.line, self.field = text, schema, source, line, field
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.depth = 0
        self.names: set[str] = set()
        self.statistics: list[tuple[str, str]] = []

    def fail(self, column: int, problem: str) -> None:
        raise ExpressionError(self.source, self.line, column, problem, self.field)

    def _tokenize(self, text: str) -> list[_Token]:
        tokens, at = [], 0
        while at < len(text):
            found = _TOKEN.match(text, at)
            if found is None:
                self.fail(at + 1, f"unexpected character {text[at]!r}")
                raise AssertionError  # unreachable: fail raises
            kind = found.lastgroup
            assert kind is not None
            if kind != "space":
                word = found.group()
                tokens.append(_Token("kw" if kind == "name" and word in _KEYWORDS else kind,
                                     word, at + 1))
            at = found.end()
        tokens.append(_Token("end", "", len(text) + 1))
        return tokens

    # --- token helpers ---------------------------------------------------------------

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self, *texts: str) -> _Token | None:
        token = self.peek()
        if token.kind in ("op", "kw") and token.text in texts:
            self.pos += 1
            return token
        return None

    def expect_end(self) -> None:
        token = self.peek()
        if token.kind != "end":
            self.fail(token.column, f"unexpected {token.text!r} (an operator or 'and'/'or' missing?)")

    # --- grammar -----------------------------------------------------------------------

    def expression(self) -> Node:
        return self.chain(("or",), self.conjunction, "logic", BOOL, "joins true/false values")

    def conjunction(self) -> Node:
        return self.chain(("and",), self.negation, "logic", BOOL, "joins true/false values")

    def chain(self, ops: tuple[str, ...], operand: Callable[[], Node], kind: str,
              takes: str, verb: str) -> Node:
        """Parse a left-associative chain of binary operators over operands of type ``takes``.

        The chain is one node, however long: its children in order and, for
        arithmetic, the operator before each child but the first. A chain of
        500 terms is as deep as a chain of two.
        """
        first = operand()
        children, between = [first], []
        while (token := self.take(*ops)) is not None:
            right = operand()
            checked = (first, right) if len(children) == 1 else (right,)  # each operand once
            for side in checked:
                if side.type != takes:
                    self.fail(token.column, f"'{token.text}' {verb}, not a {side.type}")
            children.append(right)
            between.append(token.text)
        if len(children) == 1:
            return first
        if kind == "logic":  # "and" or "or": one operator per chain
            return Node(kind, between[0], tuple(children), takes)
        return Node(kind, tuple(between), tuple(children), takes)

    def prefix(self, op: str, operand: Callable[[], Node], itself: Callable[[], Node], kind: str,
               takes: str, what: str) -> Node:
        """Parse ``op`` applied (right-associatively) to a value of type ``takes``, or ``operand``."""
        token = self.take(op)
        if token is None:
            return operand()
        self.nest(token)
        inner = itself()
        self.depth -= 1
        if inner.type != takes:
            self.fail(token.column, f"'{op}' takes {what}, not a {inner.type}")
        return Node(kind, None, (inner,), takes)

    def negation(self) -> Node:
        return self.prefix("not", self.comparison, self.negation, "not", BOOL, "a true/false value")

    def comparison(self) -> Node:
        left = self.sum()
        token = self.take(*COMPARISONS)
        if token is None:
            return left
        right = self.sum()
        if token.text in ("==", "!="):
            if left.type != right.type:
                self.fail(token.column, f"cannot compare a {left.type} with a {right.type}")
        elif NUMBER != left.type or NUMBER != right.type:
            other = left.type if left.type != NUMBER else right.type
            self.fail(token.column, f"'{token.text}' compares numbers, not a {other}")
        if self.peek().kind == "op" and self.peek().text in COMPARISONS:
            self.fail(self.peek().column, "chained comparisons are not supported: use 'and'")
        return Node("cmp", token.text, (left, right), BOOL)

    def sum(self) -> Node:
        return self.chain(("+", "-"), self.product, "arith", NUMBER, "takes numbers")

    def product(self) -> Node:
        return self.chain(("*", "/"), self.unary, "arith", NUMBER, "takes numbers")

    def unary(self) -> Node:
        return self.prefix("-", self.atom, self.unary, "neg", NUMBER, "a number")

    def atom(self) -> Node:
        token = self.peek()
        self.pos += 1
        if token.kind == "number":
            unit = _DURATION_UNITS.get(token.text[-1], 1)
            number = float(token.text.rstrip("smhdw")) * unit
            if not math.isfinite(number):
                self.fail(token.column, f"{token.text} is too large for a number")
            return Node("num", number, (), NUMBER)
        if token.kind == "string":
            return Node("str", self.unescape(token), (), STRING)
        if token.kind == "kw" and token.text in ("true", "false"):
            return Node("bool", token.text == "true", (), BOOL)
        if token.kind == "op" and token.text == "(":
            self.nest(token)
            inner = self.expression()
            if self.take(")") is None:
                self.fail(self.peek().column, "missing ')'")
            self.depth -= 1
            return inner
        if token.kind == "name":
            if self.take("(") is not None:
                return self.call(token)
            return self.name(token)
        what = "the end of the expression" if token.kind == "end" else repr(token.text)
        self.fail(token.column, f"expected a value, found {what}")
        raise AssertionError  # unreachable: fail raises

    def nest(self, token: _Token) -> None:
        """Go one level deeper at ``token``; fail beyond :data:`MAX_NESTING`."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(token.column, f"nested more than {MAX_NESTING} levels deep "
                      "(parentheses, 'not' and '-' count)")

    def unescape(self, token: _Token) -> str:
        """Return a string literal's text, escapes decoded (TOML/JSON escapes, see the module doc)."""
        body, out, at = token.text[1:-1], [], 0
        while (slash := body.find("\\", at)) != -1:
            out.append(body[at:slash])
            column = token.column + 1 + slash
            code = body[slash + 1:slash + 2]
            if code in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[code])
                at = slash + 2
                continue
            if code not in ("u", "U"):
                self.fail(column, f"unknown escape '\\{code}' in a string (use \\\\ for a "
                          "backslash)")
            width = 4 if code == "u" else 8
            digits = body[slash + 2:slash + 2 + width]
            if not _is_hex(digits, width):
                self.fail(column, f"'\\{code}' takes {width} hexadecimal digits")
            point, at = int(digits, 16), slash + 2 + width
            low = body[at + 2:at + 6]
            if (0xD800 <= point < 0xDC00 and body[at:at + 2] == "\\u" and _is_hex(low, 4)
                    and 0xDC00 <= int(low, 16) < 0xE000):  # a surrogate pair
                point = 0x10000 + ((point - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                at += 6
            if 0xD800 <= point < 0xE000 or point > 0x10FFFF:
                self.fail(column, f"'\\{code}{digits}' is not a Unicode character")
            out.append(chr(point))
        out.append(body[at:])
        return "".join(out)

    def name(self, token: _Token) -> Node:
        kind = self.schema.get(token.text)
        if kind is None:
            close = get_close_matches(token.text, list(self.schema), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            self.fail(token.column, f"unknown name {token.text!r}{hint}")
        self.names.add(token.text)
        return Node("name", token.text, (), kind or NUMBER)

    def call(self, token: _Token) -> Node:
        function = token.text
        if not (_PERCENTILE.fullmatch(function) or function in ("mean", "std")):
            self.fail(token.column, f"unknown function {function!r}: use p1..p99, mean or std")
        argument = self.peek()
        if argument.kind != "name":
            self.fail(argument.column, f"{function}() takes one feature name")
        self.pos += 1
        if self.schema.get(argument.text) != NUMBER:
            problem = ("unknown name" if argument.text not in self.schema
                       else f"a {self.schema[argument.text]}, not a number")
            self.fail(argument.column, f"{function}({argument.text}): {problem}")
        if self.take(")") is None:
            self.fail(self.peek().column, f"{function}() takes one feature name and ')'")
        self.statistics.append((function, argument.text))
        return Node("stat", (function, argument.text), (), NUMBER)


_Compiled = Callable[[Mapping[str, Any], "Stats | None"], Any]
"""A compiled node: ``(values, stats) -> value``; raises ``_Missing`` for a missing value."""
_Condition = Callable[[Mapping[str, Any], "Stats | None"], bool]
"""A compiled condition: never raises."""


def _compile(node: Node) -> _Compiled:  # noqa: C901 - one case per node kind
    """Compile a node into a closure with the semantics of the language (see the module doc)."""
    kind = node.kind
    if kind in ("num", "str", "bool"):
        constant = node.value
        return lambda values, stats: constant
    if kind == "name":
        name = node.value
        if node.type != NUMBER:
            def read(values: Mapping[str, Any], stats: Stats | None) -> Any:
                value = values.get(name)
                if value is None:
                    raise _Missing
                return value
            return read

        def number(values: Mapping[str, Any], stats: Stats | None) -> Any:
            value = values.get(name)
            if value is None:
                raise _Missing
            try:
                return float(value)
            except (TypeError, ValueError):  # a profile value of the wrong kind: missing
                raise _Missing from None
        return number
    if kind == "stat":
        function, feature = node.value

        def statistic(values: Mapping[str, Any], stats: Stats | None) -> Any:
            found = None if stats is None else stats(function, feature)
            if found is None:
                raise _Missing
            return found
        return statistic
    if kind == "not":
        inner = _truth_of(_compile(node.children[0]))
        return lambda values, stats: not inner(values, stats)
    if kind == "logic":
        terms = tuple(_truth_of(_compile(child)) for child in node.children)
        if len(terms) == 2:  # the common case, without a loop
            first, second = terms
            if node.value == "or":
                return lambda values, stats: first(values, stats) or second(values, stats)
            return lambda values, stats: first(values, stats) and second(values, stats)
        if node.value == "or":
            return lambda values, stats: any(term(values, stats) for term in terms)
        return lambda values, stats: all(term(values, stats) for term in terms)
    if kind == "neg":
        operand = _compile(node.children[0])
        return lambda values, stats: -operand(values, stats)
    if kind == "arith":
        return _compile_arithmetic(node)
    left, right = (_compile(child) for child in node.children)
    compare = _COMPARE[node.value]
    return lambda values, stats: compare(left(values, stats), right(values, stats))


def _is_hex(text: str, width: int) -> bool:
    """Whether ``text`` is ``width`` hexadecimal digits."""
    return len(text) == width and all(c in "0123456789abcdefABCDEF" for c in text)


def _compile_arithmetic(node: Node) -> _Compiled:
    """Compile a chain ``a op b op c ...``: folded left to right, ``/`` by 0 a missing value."""
    operands = [_compile(child) for child in node.children]
    steps = tuple(zip((_ARITH[op] for op in node.value), operands[1:], strict=True))
    first = operands[0]
    if len(steps) == 1:  # the common case, without a loop
        [(apply, second)] = steps
        return lambda values, stats: apply(first(values, stats), second(values, stats))

    def fold(values: Mapping[str, Any], stats: Stats | None) -> Any:
        result = first(values, stats)
        for apply, operand in steps:
            result = apply(result, operand(values, stats))
        return result
    return fold


def _divide(a: Any, b: Any) -> Any:
    if b == 0:
        raise _Missing
    return a / b


def _truth_of(run: _Compiled) -> _Condition:
    """Return ``run`` as a condition: one that cannot be evaluated is false where it stands."""
    def truth(values: Mapping[str, Any], stats: Stats | None) -> bool:
        try:
            return bool(run(values, stats))
        except _Missing:
            return False
    return truth


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": _divide,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
