"""The run filter language: text → a small syntax tree. Pure (no SQL); `run_query.py` gives the fields meaning.

    config.lr >= 1e-3 and eval/fid < 50 and tag = baseline and status in (running, finished)

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := factor ("and" factor)*
    factor     := "(" or_expr ")" | comparison
    comparison := FIELD OP value | FIELD ["not"] "in" "(" value ("," value)* ")"
    OP         := "=" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "~"        (~: contains, ignoring case)
    value      := NUMBER | 'quoted' | "quoted" | WORD

A FIELD or WORD is any run of characters other than blanks, quotes, parentheses, commas and the operator
characters `<>=!~` (so `eval/fid`, `config.optim.lr_g`, `sys/gpu0/util` need no quotes); a WORD that reads as a
number is a NUMBER. Keywords (`and`, `or`, `in`, `not`) ignore case. A value with blanks or operator characters is
quoted; inside quotes a backslash escapes the next character.

Failure mode: `FilterError` with the offending token, its 0-based character position and what was expected there,
e.g. "expected an operator (=, !=, <, <=, >, >=, ~, in, not in) after 'eval/fid' but found '&&' at position 9".
Nothing is partially accepted: a filter parses whole or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

OPERATORS = ("=", "==", "!=", "<", "<=", ">", ">=", "~")
OPERATOR_LIST = "=, !=, <, <=, >, >=, ~, in, not in"
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|infinity)", re.IGNORECASE)
_WORD = re.compile(r"[^\s<>=!~(),'\"]+")
_OPERATOR = re.compile(r"<=|>=|==|!=|[<>=~]")
MAX_DEPTH = 32  # nested parentheses; deeper is junk, and the parser recurses


class FilterError(ValueError):
    """A filter that does not parse (or names a field or value that does not exist): where and why."""

    def __init__(self, message: str, token: str, position: int, param: str = "filter"):
        self.token, self.position, self.param = token, position, param  # param: the query parameter it came from
        super().__init__(message)


@dataclass(frozen=True)
class Token:
    kind: Literal["word", "number", "string", "op", "lparen", "rparen", "comma", "end"]
    text: str  # as written (a string's text without its quotes, escapes resolved)
    position: int

    @property
    def number(self) -> float:
        return float(self.text)

    def shown(self) -> str:
        return "the end of the filter" if self.kind == "end" else repr(self.text)


@dataclass(frozen=True)
class Comparison:
    field: Token
    op: str  # one of OPERATORS (== is stored as =), "in" or "not in"
    op_position: int
    values: tuple[Token, ...]


@dataclass(frozen=True)
class BoolOp:
    op: Literal["and", "or"]
    parts: tuple[Node, ...]


Node = Comparison | BoolOp


def _string(text: str, start: int) -> tuple[str, int]:
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise FilterError(f"unterminated string starting at position {start}: close it with {quote}", text[start:],
                      start)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "'\"":
            value, end = _string(text, i)
            tokens.append(Token("string", value, i))
            i = end
        elif ch in "(),":
            tokens.append(Token({"(": "lparen", ")": "rparen", ",": "comma"}[ch], ch, i))  # type: ignore[arg-type]
            i += 1
        elif m := _OPERATOR.match(text, i):
            tokens.append(Token("op", m.group(), i))
            i = m.end()
        elif ch == "!":
            raise FilterError(f"unexpected '!' at position {i}: did you mean '!='?", "!", i)
        else:
            m = _WORD.match(text, i)
            assert m is not None  # every other character starts a word
            word = m.group()
            tokens.append(Token("number" if _NUMBER.fullmatch(word) else "word", word, i))
            i = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "word" and token.text.lower() == word

    def fail(self, expected: str, token: Token | None = None) -> FilterError:
        token = token or self.peek()
        return FilterError(f"expected {expected} but found {token.shown()} at position {token.position}", token.text,
                           token.position)

    def parse(self) -> Node:
        node = self.or_expr()
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or the end of the filter")
        return node

    def or_expr(self) -> Node:
        return self.chain("or", self.and_expr)

    def and_expr(self) -> Node:
        return self.chain("and", self.factor)

    def chain(self, op: Literal["and", "or"], operand: Callable[[], Node]) -> Node:
        """operand (op operand)*, one BoolOp for the run (or the operand alone)."""
        parts = [operand()]
        while self.keyword(op):
            self.take()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else BoolOp(op, tuple(parts))

    def factor(self) -> Node:
        token = self.peek()
        if token.kind == "lparen":
            if self.depth >= MAX_DEPTH:
                raise FilterError(f"parentheses nested deeper than {MAX_DEPTH} levels at position {token.position}",
                                  "(", token.position)
            self.take()
            self.depth += 1
            node = self.or_expr()
            self.depth -= 1
            if self.peek().kind != "rparen":
                raise self.fail(f"')' to close the '(' at position {token.position}")
            self.take()
            return node
        return self.comparison()

    def comparison(self) -> Comparison:
        field = self.peek()
        if field.kind != "word" or field.text.lower() in ("and", "or", "in", "not"):
            raise self.fail("a field (status, preset, tag, name, config.<key>, a metric such as eval/fid …)")
        self.take()
        op = self.peek()
        if op.kind == "op":
            self.take()
            return Comparison(field, "=" if op.text == "==" else op.text, op.position, (self.value(op),))
        if self.keyword("not") or self.keyword("in"):
            negated = self.take().text.lower() == "not"
            if negated and not self.keyword("in"):
                raise self.fail("'in' after 'not'")
            if negated:
                self.take()
            return Comparison(field, "not in" if negated else "in", op.position, self.value_list())
        raise self.fail(f"an operator ({OPERATOR_LIST}) after {field.shown()}")

    def value(self, after: Token) -> Token:
        token = self.peek()
        if token.kind not in ("word", "number", "string"):
            raise self.fail(f"a value after {after.shown()}")
        return self.take()

    def value_list(self) -> tuple[Token, ...]:
        opening = self.peek()
        if opening.kind != "lparen":
            raise self.fail("'(' to start the list of values, e.g. status in (running, finished)")
        self.take()
        values = [self.value(opening)]
        while self.peek().kind == "comma":
            values.append(self.value(self.take()))
        if self.peek().kind != "rparen":
            raise self.fail(f"',' or ')' to close the list opened at position {opening.position}")
        self.take()
        return tuple(values)


def parse_filter(text: str) -> Node | None:
    """The syntax tree of `text`, or None for an empty filter; raises FilterError."""
    if not text.strip():
        return None
    return _Parser(text).parse()

