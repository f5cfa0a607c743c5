"""The run filter language: parsing (pure) and its errors, each naming the token and its position."""

from __future__ import annotations

import pytest

from sqd.server.store.filter_syntax import BoolOp, Comparison, FilterError, parse_filter, tokenize


def fields(node):
    if isinstance(node, Comparison):
        return (node.field.text, node.op, tuple(v.text for v in node.values))
    return (node.op, tuple(fields(p) for p in node.parts))


def test_the_documented_example():
    node = parse_filter("config.lr >= 1e-3 and eval/fid < 50 and tag = baseline and status in (running, finished)")
    assert fields(node) == ("and", (("config.lr", ">=", ("1e-3",)), ("eval/fid", "<", ("50",)),
                                    ("tag", "=", ("baseline",)), ("status", "in", ("running", "finished"))))
    assert [v.kind for v in node.parts[0].values] == ["number"]


def test_precedence_parentheses_and_keywords_in_any_case():
    assert fields(parse_filter("a = 1 OR b = 2 and c = 3")) == (
        "or", (("a", "=", ("1",)), ("and", (("b", "=", ("2",)), ("c", "=", ("3",))))))
    assert fields(parse_filter("(a = 1 or b = 2) and c = 3")) == (
        "and", (("or", (("a", "=", ("1",)), ("b", "=", ("2",)))), ("c", "=", ("3",))))
    assert fields(parse_filter("tag NOT IN ('x y', \"z\")")) == ("tag", "not in", ("x y", "z"))


def test_no_blanks_needed_and_quoted_values():
    node = parse_filter("eval/fid<=50.5")
    assert isinstance(node, Comparison)
    assert (node.field.text, node.op, node.values[0].number) == ("eval/fid", "<=", 50.5)
    node = parse_filter(r"name ~ 'it\'s (a) run'")
    assert node.values[0].text == "it's (a) run" and node.values[0].kind == "string"
    assert parse_filter("a == 2").op == "="
    assert [t.kind for t in tokenize("x = -1.5e3 y = 12abc")] == ["word", "op", "number", "word", "op", "word", "end"]


def test_empty_filter_is_no_filter():
    assert parse_filter("") is None and parse_filter("   ") is None


@pytest.mark.parametrize(("text", "message", "token", "position"), [
    ("eval/fid & 50", "expected an operator (=, !=, <, <=, >, >=, ~, in, not in) after 'eval/fid' but found '&' "
                      "at position 9", "&", 9),
    ("eval/fid <", "expected a value after '<' but found the end of the filter at position 10", "", 10),
    ("status = running finished", "expected 'and', 'or' or the end of the filter but found 'finished' at "
                                  "position 17", "finished", 17),
    ("(a = 1", "expected ')' to close the '(' at position 0 but found the end of the filter at position 6", "", 6),
    ("name = 'abc", "unterminated string starting at position 7: close it with '", "'abc", 7),
    ("a ! 1", "unexpected '!' at position 2: did you mean '!='?", "!", 2),
    ("status in running", "expected '(' to start the list of values, e.g. status in (running, finished) but found "
                          "'running' at position 10", "running", 10),
    ("tag in (a b)", "expected ',' or ')' to close the list opened at position 7 but found 'b' at position 10",
     "b", 10),
    ("a = 1 and", "expected a field (status, preset, tag, name, config.<key>, a metric such as eval/fid …) but "
                  "found the end of the filter at position 9", "", 9),
    ("x not = 1", "expected 'in' after 'not' but found '=' at position 6", "=", 6),
    (") = 1", "expected a field (status, preset, tag, name, config.<key>, a metric such as eval/fid …) but found "
              "')' at position 0", ")", 0),
])
def test_errors_name_the_token_and_position(text, message, token, position):
    with pytest.raises(FilterError) as err:
        parse_filter(text)
    assert (str(err.value), err.value.token, err.value.position) == (message, token, position)


def test_nesting_is_bounded():
    with pytest.raises(FilterError, match="nested deeper than 32 levels at position 32"):
        parse_filter("(" * 40 + "a = 1" + ")" * 40)
    assert isinstance(parse_filter("(" * 30 + "a = 1" + ")" * 30), Comparison)
    assert isinstance(parse_filter("a = 1 and b = 2 or c = 3"), BoolOp)
