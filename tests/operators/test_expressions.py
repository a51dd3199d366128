"""The segment expression language: parser, precedence, errors, evaluation that never raises."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segstream.errors import ExpressionError
from segstream.operators.expressions import BOOL, NUMBER, STRING, parse

SCHEMA = {"purchases_30d": NUMBER, "aov_90d": NUMBER, "revenue_30d": NUMBER, "country": STRING,
          "churn_p": NUMBER, "device": STRING, "cart_member": BOOL, "traits.plan": STRING}


def holds(text: str, values: dict, stats: dict | None = None) -> bool:
    expression = parse(text, SCHEMA)
    return expression.evaluate(values, None if stats is None else
                               lambda fn, name: stats.get((fn, name)))


def test_the_issue_examples() -> None:
    assert holds("purchases_30d >= 3 and aov_90d > 50", {"purchases_30d": 3, "aov_90d": 50.5})
    assert not holds("purchases_30d >= 3 and aov_90d > 50", {"purchases_30d": 2, "aov_90d": 99})
    assert holds("revenue_30d > p90(revenue_30d)", {"revenue_30d": 500},
                 {("p90", "revenue_30d"): 400.0})
    high_value = "aov_90d > mean(aov_90d) + 2 * std(aov_90d)"
    stats = {("mean", "aov_90d"): 50.0, ("std", "aov_90d"): 10.0}
    assert holds(high_value, {"aov_90d": 71}, stats)
    assert not holds(high_value, {"aov_90d": 69}, stats)
    assert parse(high_value, SCHEMA).statistics == [("mean", "aov_90d"), ("std", "aov_90d")]


def test_numbers_with_a_duration_unit_count_seconds() -> None:
    assert holds("purchases_30d <= 14d", {"purchases_30d": 14 * 86400})
    assert not holds("purchases_30d <= 14d", {"purchases_30d": 14 * 86400 + 1})
    assert holds("aov_90d == 90s + 2m + 1h + 1w", {"aov_90d": 90 + 120 + 3600 + 7 * 86400})
    with pytest.raises(ExpressionError, match="column 2: unexpected .dx."):
        parse("5dx > 1", SCHEMA)  # a unit glued to a name is no duration


@pytest.mark.parametrize(("text", "expected"), [
    ("1 + 2 * 3 == 7", True),          # * before +
    ("(1 + 2) * 3 == 9", True),
    ("10 - 2 - 3 == 5", True),         # left-associative
    ("8 / 4 / 2 == 1", True),
    ("-2 * -3 == 6", True),
    ("true or false and false", True),  # and before or
    ("not false and false", False),     # not before and
    ("not (false and false)", True),
    ("1 < 2 == true", None),            # chained comparison: an error
])
def test_precedence(text: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(ExpressionError, match="chained"):
            parse(text, SCHEMA)
    else:
        assert parse(text, SCHEMA).evaluate({}) is expected


@pytest.mark.parametrize(("text", "column", "message"), [
    ("purchase_30d > 3", 1, "unknown name 'purchase_30d'; did you mean purchases_30d"),
    ("purchases_30d >> 3", 16, "expected a value"),
    ("purchases_30d > ", 17, "expected a value, found the end"),
    ("(purchases_30d > 3", 19, "missing ')'"),
    ("purchases_30d > 3 aov_90d", 19, "unexpected 'aov_90d'"),
    ("device > 3", 8, "'>' compares numbers, not a string"),
    ("device == 3", 8, "cannot compare a string with a number"),
    ("purchases_30d and true", 15, "'and' joins true/false values, not a number"),
    ("purchases_30d + 1", 1, "must be true or false"),
    ("median(aov_90d) > 1", 1, "unknown function 'median'"),
    ("p90(device) > 1", 5, "p90(device): a string, not a number"),
    ("p90(3) > 1", 5, "takes one feature name"),
    ("aov_90d > 1 & true", 13, "unexpected character '&'"),
])
def test_errors_point_at_the_problem(text: str, column: int, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text, SCHEMA, source="segments.toml", line=12)
    assert info.value.column == column
    assert message in info.value.problem
    assert str(info.value).startswith(f"segments.toml:12: column {column}: ")


def test_strings_bools_and_dotted_traits() -> None:
    assert holds('device == "mobile" and traits.plan != "pro"', {"device": "mobile",
                                                                  "traits.plan": "free"})
    assert holds("cart_member", {"cart_member": True})
    assert holds("not cart_member", {"cart_member": False})


def test_missing_values_make_comparisons_false() -> None:
    assert not holds("aov_90d > 50", {})
    assert holds("not (aov_90d > 50)", {})  # the comparison is false where it stands
    assert not holds("revenue_30d > p90(revenue_30d)", {"revenue_30d": 5})  # no statistics
    assert not holds("aov_90d / purchases_30d > 1", {"aov_90d": 5, "purchases_30d": 0})
    assert holds("aov_90d > 1 or purchases_30d > 1", {"purchases_30d": 2})
    assert not holds("aov_90d < 1", {"aov_90d": "n/a"})  # not a number: missing, not zero


EXPRESSIONS = [
    "purchases_30d >= 3 and aov_90d > 50",
    "revenue_30d > p90(revenue_30d) or churn_p > 0.7",
    "aov_90d > mean(aov_90d) + 2 * std(aov_90d)",
    'not (device == "mobile") and aov_90d / purchases_30d < -1e300',
    "cart_member or traits.plan != 'free'",
]
values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                   st.floats(allow_nan=True, allow_infinity=True))


@given(st.dictionaries(st.sampled_from(sorted(SCHEMA)), values),
       st.dictionaries(st.tuples(st.sampled_from(["p90", "mean", "std"]),
                                 st.sampled_from(sorted(SCHEMA))), st.none() | st.floats()))
def test_evaluation_never_raises_on_any_profile(profile: dict, stats: dict) -> None:
    for text in EXPRESSIONS:
        result = parse(text, SCHEMA).evaluate(profile, lambda fn, name: stats.get((fn, name)))
        assert result in (True, False)


@given(st.text(alphabet="abdnot_ 0123456789.<>=!()+-*/'\"pvmeasd", max_size=40))
def test_parsing_anything_either_works_or_says_where_it_fails(text: str) -> None:
    schema = {"a": NUMBER, "b": NUMBER, "d": STRING}
    try:
        expression = parse(text, schema)
    except ExpressionError as error:
        assert 1 <= error.column <= len(text) + 1
    else:
        assert expression.evaluate({"a": 1.0, "b": math.inf, "d": "x"}) in (True, False)


class TestStrings:
    """String literals: any Unicode, TOML/JSON escapes, errors at their column."""

    def test_any_unicode_matches_as_written(self) -> None:
        """Non-ASCII text is itself: 'España' was mangled by unicode_escape and never matched."""
        assert holds('country == "España"', {"country": "España"})
        assert holds("country == '東京'", {"country": "東京"})
        assert not holds('country == "España"', {"country": "EspaÃ±a"})

    @pytest.mark.parametrize(("literal", "text"), [
        (r'"a\"b"', 'a"b'), (r"'it\'s'", "it's"), (r'"back\\slash"', "back\\slash"),
        (r'"\/"', "/"), (r'"\b\f\n\r\t"', "\b\f\n\r\t"), (r'"Espa\u00f1a"', "España"),
        (r'"\U0001F600"', "\U0001F600"), (r'"\ud83d\ude00"', "\U0001F600"),
    ])
    def test_escapes(self, literal: str, text: str) -> None:
        """The escapes of TOML and JSON, surrogate pairs joined."""
        assert parse(f"country == {literal}", SCHEMA).root.children[1].value == text

    @pytest.mark.parametrize(("literal", "message"), [
        (r'"\x"', "unknown escape '\\x'"), (r'"\u12"', "takes 4 hexadecimal digits"),
        (r'"\U0011FFFF"', "not a Unicode character"), (r'"\ud800"', "not a Unicode character"),
        (r'"a\qb"', "unknown escape '\\q'"),
    ])
    def test_bad_escapes_name_their_column(self, literal: str, message: str) -> None:
        """A malformed escape is an ExpressionError at the backslash, never a traceback."""
        with pytest.raises(ExpressionError) as info:
            parse(f"country == {literal}", SCHEMA)
        assert message in info.value.problem
        assert info.value.column == 12 + literal.index("\\")


class TestLimits:
    """Deep nesting is a clear error; long chains are fine."""

    def test_300_nested_parentheses_are_an_error(self) -> None:
        """Beyond MAX_NESTING levels: an ExpressionError at the first level too deep."""
        with pytest.raises(ExpressionError, match="nested more than 32 levels") as info:
            parse("(" * 300 + "aov_90d > 1" + ")" * 300, SCHEMA)
        assert info.value.column == 33
        assert parse("(" * 32 + "aov_90d > 1" + ")" * 32, SCHEMA).evaluate({"aov_90d": 2})

    @pytest.mark.parametrize("prefix", ["not ", "- "])
    def test_deep_prefixes_are_an_error(self, prefix: str) -> None:
        """'not' and unary '-' count as levels too."""
        body = "cart_member" if prefix == "not " else "1 > 0"
        with pytest.raises(ExpressionError, match="nested more than"):
            parse(prefix * 400 + body, SCHEMA)

    @pytest.mark.parametrize("op", ["or", "and", "+", "*"])
    def test_long_chains_evaluate(self, op: str) -> None:
        """A 500-term chain is one node: it parses, evaluates and plans without recursion."""
        from segstream.operators.rechecks import planner  # noqa: PLC0415

        if op in ("or", "and"):
            text = f" {op} ".join(f"aov_90d > {i}" for i in range(500))
            expected = op == "or"
        else:
            text = f" {op} ".join(["aov_90d"] * 500) + " > 0"
            expected = True
        expression = parse(text, SCHEMA)
        assert expression.evaluate({"aov_90d": 3}) is expected
        assert planner(expression, {"aov_90d": "step:90d"}) is not None

    def test_mixed_arithmetic_chains_fold_left(self) -> None:
        """A chain of + and - (or * and /) folds left to right, as written."""
        assert parse("10 - 2 + 3 - 1 == 10", SCHEMA).evaluate({})
        assert parse("12 / 3 * 2 / 4 == 2", SCHEMA).evaluate({})
        assert not parse("aov_90d / 0 * 2 > -1", SCHEMA).evaluate({"aov_90d": 1})

    def test_a_number_too_large_is_an_error(self) -> None:
        """1e999 is no number: an error, not infinity."""
        with pytest.raises(ExpressionError, match="too large"):
            parse("aov_90d > 1e999", SCHEMA)
