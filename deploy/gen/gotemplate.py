"""A strict renderer for the subset of Helm (Go text/template + sprig) that certbridge's charts use.

Why this exists: Helm is not installable on the machines that build certbridge (no Debian package, and
Debian's Go is too old to build it), yet the plain manifests must be *the chart's output*, not a second
hand-written copy. So the charts are rendered here. The renderer is deliberately strict: every
construct or function it does not implement exactly as Go/sprig/Helm do is an error, never a guess, so
a chart that renders here renders the same with Helm. When `helm` is on PATH, deploy/check.sh also
compares `helm template` with this renderer's output.

Go semantics followed: trim markers ({{- and -}}), comments, if/else if/else, range (lists and maps
with sorted keys, $i/$v declarations), with/else, define/template, variables with block scope, $ as
the template's data, pipelines (the piped value is the last argument), and/or short-circuiting,
eq/ne/lt/le/gt/ge type rules (an int literal never equals a float from values). Helm semantics: values
numbers are float64 (YAML → JSON), a missing map key renders as empty, field access on nil is an
error, toYaml output has sorted keys and no trailing newline, `include`, `required`, `fail`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml


class TemplateError(Exception):
    """A template that cannot be parsed or rendered; the message names the template and the cause."""


# ---------------------------------------------------------------------------------------------------
# Lexing: split text into literal text and actions, applying trim markers.

_WS = " \t\r\n"


@dataclass
class _Action:
    body: str
    line: int


def _segments(src: str, name: str) -> list[str | _Action]:
    out: list[str | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_WS)
        if start < 0:
            out.append(text)
            return out
        line = src.count("\n", 0, start) + 1
        inner_start = start + 2
        trim_left = src.startswith("- ", inner_start) or src.startswith("-\n", inner_start) or src.startswith(
            "-\t", inner_start
        )
        if trim_left:
            text = text.rstrip(_WS)
            inner_start += 1
        out.append(text)
        # A comment may contain "}}"; it ends at "*/" followed by the (optionally trimmed) delimiter.
        probe = src[inner_start:].lstrip(_WS) if trim_left else src[inner_start:]
        if probe.startswith("/*"):
            cstart = src.find("/*", inner_start)
            cend = src.find("*/", cstart + 2)
            if cend < 0:
                raise TemplateError(f"{name}:{line}: unclosed comment")
            rest = src[cend + 2 :]
            m = re.match(r"( -)?}}", rest)
            if not m:
                raise TemplateError(f"{name}:{line}: comment must end with */}} or */ -}}")
            trim_next = m.group(1) is not None
            pos = cend + 2 + m.end()
            continue
        end = _find_close(src, inner_start, name, line)
        body = src[inner_start:end]
        trim_next = body.endswith(" -") or body.endswith("\n-") or body.endswith("\t-")
        if trim_next:
            body = body[:-1]
        out.append(_Action(body.strip(_WS), line))
        pos = end + 2


def _find_close(src: str, i: int, name: str, line: int) -> int:
    """The index of the "}}" closing an action, skipping string literals."""
    quote = None
    while i < len(src):
        c = src[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"`":
            quote = c
        elif src.startswith("}}", i):
            return i
        i += 1
    raise TemplateError(f"{name}:{line}: unclosed action")


# ---------------------------------------------------------------------------------------------------
# Tokens and pipelines.

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|,])
    """,
    re.VERBOSE,
)


@dataclass
class Tok:
    kind: str
    text: str


def _tokens(body: str, where: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m:
            raise TemplateError(f"{where}: cannot parse {body[pos:]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            toks.append(Tok(m.lastgroup or "", m.group()))
    return toks


@dataclass
class Operand:
    kind: str  # literal, field, var, call, pipe
    value: Any = None
    path: list[str] = field(default_factory=list)
    args: list[Operand] = field(default_factory=list)
    pipe: Pipeline | None = None


@dataclass
class Command:
    operands: list[Operand]


@dataclass
class Pipeline:
    decl: list[str]
    assign: bool  # "=" (assign to an existing variable) rather than ":="
    commands: list[Command]
    where: str


def _parse_pipeline(toks: list[Tok], where: str) -> Pipeline:
    decl: list[str] = []
    assign = False
    # Declarations: $x := ..., $i, $v := ... (range), $x = ...
    j = 0
    names = []
    while j < len(toks) and toks[j].kind == "var" and "." not in toks[j].text:
        names.append(toks[j].text)
        if j + 1 < len(toks) and toks[j + 1].text == ",":
            j += 2
            continue
        j += 1
        break
    if names and j < len(toks) and toks[j].kind in ("decl", "assign"):
        decl = names
        assign = toks[j].kind == "assign"
        toks = toks[j + 1 :]
    commands: list[Command] = []
    current: list[Operand] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text == "|":
            if not current:
                raise TemplateError(f"{where}: empty command in pipeline")
            commands.append(Command(current))
            current = []
            i += 1
            continue
        if t.text == "(":
            depth, k = 1, i + 1
            while k < len(toks) and depth:
                depth += {"(": 1, ")": -1}.get(toks[k].text, 0)
                k += 1
            if depth:
                raise TemplateError(f"{where}: unbalanced parenthesis")
            current.append(Operand("pipe", pipe=_parse_pipeline(toks[i + 1 : k - 1], where)))
            i = k
            continue
        current.append(_operand(t, where))
        i += 1
    if current:
        commands.append(Command(current))
    if not commands:
        raise TemplateError(f"{where}: missing value")
    return Pipeline(decl, assign, commands, where)


def _operand(t: Tok, where: str) -> Operand:
    if t.kind == "string":
        return Operand("literal", _go_unquote(t.text, where))
    if t.kind == "raw":
        return Operand("literal", t.text[1:-1])
    if t.kind == "number":
        return Operand("literal", float(t.text) if "." in t.text else int(t.text))
    if t.kind == "field":
        return Operand("field", path=[p for p in t.text.split(".") if p])
    if t.kind == "var":
        head, *rest = t.text.split(".")
        return Operand("var", value=head, path=rest)
    if t.kind == "ident":
        if t.text in ("true", "false"):
            return Operand("literal", t.text == "true")
        if t.text == "nil":
            return Operand("literal", None)
        return Operand("call", value=t.text)
    raise TemplateError(f"{where}: unexpected {t.text!r}")


def _go_unquote(s: str, where: str) -> str:
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise TemplateError(f"{where}: unsupported string literal {s}: {e}") from e


# ---------------------------------------------------------------------------------------------------
# The tree.


@dataclass
class Node:
    pass


@dataclass
class Text(Node):
    text: str


@dataclass
class Output(Node):
    pipe: Pipeline


@dataclass
class If(Node):
    branches: list[tuple[Pipeline, list[Node]]]
    otherwise: list[Node]


@dataclass
class Range(Node):
    pipe: Pipeline
    body: list[Node]
    otherwise: list[Node]


@dataclass
class With(Node):
    pipe: Pipeline
    body: list[Node]
    otherwise: list[Node]


@dataclass
class TemplateCall(Node):
    name: str
    pipe: Pipeline | None


def parse(src: str, name: str, defines: dict[str, list[Node]]) -> list[Node]:
    """Parses `src`; `define` blocks are added to `defines`, the rest is returned."""
    items = _segments(src, name)
    pos = 0

    def block(stop: tuple[str, ...]) -> tuple[list[Node], str, _Action | None]:
        nonlocal pos
        nodes: list[Node] = []
        while pos < len(items):
            it = items[pos]
            pos += 1
            if isinstance(it, str):
                if it:
                    nodes.append(Text(it))
                continue
            where = f"{name}:{it.line}"
            toks = _tokens(it.body, where)
            if not toks:
                raise TemplateError(f"{where}: empty action")
            kw = toks[0].text if toks[0].kind == "ident" else ""
            if kw in ("end", "else"):
                if kw not in stop:
                    raise TemplateError(f"{where}: unexpected {{{{{kw}}}}}")
                return nodes, kw, it
            if kw == "if":
                nodes.append(parse_if(toks[1:], where))
            elif kw in ("range", "with"):
                pipe = _parse_pipeline(toks[1:], where)
                body, ended, _ = block(("end", "else"))
                otherwise: list[Node] = []
                if ended == "else":
                    otherwise, _, _ = block(("end",))
                nodes.append(Range(pipe, body, otherwise) if kw == "range" else With(pipe, body, otherwise))
            elif kw == "define":
                if len(toks) != 2 or toks[1].kind != "string":
                    raise TemplateError(f"{where}: define needs a quoted name")
                body, _, _ = block(("end",))
                defines[_go_unquote(toks[1].text, where)] = body
            elif kw == "template":
                if len(toks) < 2 or toks[1].kind != "string":
                    raise TemplateError(f"{where}: template needs a quoted name")
                pipe = _parse_pipeline(toks[2:], where) if len(toks) > 2 else None
                nodes.append(TemplateCall(_go_unquote(toks[1].text, where), pipe))
            elif kw in ("block", "break", "continue"):
                raise TemplateError(f"{where}: {kw} is not supported by this renderer")
            else:
                nodes.append(Output(_parse_pipeline(toks, where)))
        if stop:
            raise TemplateError(f"{name}: missing {{{{end}}}}")
        return nodes, "", None

    def parse_if(cond: list[Tok], where: str) -> If:
        branches = []
        otherwise: list[Node] = []
        while True:
            pipe = _parse_pipeline(cond, where)
            body, ended, action = block(("end", "else"))
            branches.append((pipe, body))
            if ended == "end":
                break
            assert action is not None
            rest = _tokens(action.body, where)[1:]
            if rest and rest[0].text == "if":
                cond = rest[1:]
                where = f"{name}:{action.line}"
                continue
            if rest:
                raise TemplateError(f"{name}:{action.line}: only `else if` is supported after else")
            otherwise, _, _ = block(("end",))
            break
        return If(branches, otherwise)

    nodes, _, _ = block(())
    return nodes


# ---------------------------------------------------------------------------------------------------
# Values: Go's notion of truth, printing and comparison.


def truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, dict)):
        return len(v) > 0
    return True


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return type(v).__name__


def format_float(f: float) -> str:
    """Go's %v for float64 (strconv 'g' with the shortest representation, exponent at >= 1e21)."""
    if f == int(f) and abs(f) < 1e21:
        return str(int(f))
    r = repr(f)
    if "e" in r:
        mant, exp = r.split("e")
        return f"{mant}e{'-' if exp.startswith('-') else '+'}{abs(int(exp)):02d}"
    return r


def strval(v: Any) -> str:
    """sprig's strval / fmt %v for the scalar kinds values can hold."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, (int, str)):
        return str(v)
    raise TemplateError(f"cannot print a {_kind(v)} ({v!r}); use toYaml")


def to_yaml(v: Any) -> str:
    """Helm's toYaml: sigs.k8s.io/yaml (via JSON, so integral floats print as integers), sorted keys."""

    def jsonish(x: Any) -> Any:
        if isinstance(x, float) and x == int(x) and not math.isinf(x):
            return int(x)
        if isinstance(x, dict):
            return {str(k): jsonish(val) for k, val in x.items()}
        if isinstance(x, list):
            return [jsonish(val) for val in x]
        return x

    out = yaml.safe_dump(jsonish(v), sort_keys=True, default_flow_style=False, width=10**9, allow_unicode=True)
    if out.endswith("...\n"):  # PyYAML's document end marker after a bare scalar
        out = out[: -len("...\n")]
    return out.removesuffix("\n")


def _compare(a: Any, b: Any, op: str) -> bool:
    if op in ("eq", "ne"):
        if a is None or b is None:
            same = a is None and b is None
        else:
            if _kind(a) != _kind(b):
                raise TemplateError(f"{op}: incompatible types for comparison ({_kind(a)} and {_kind(b)})")
            same = a == b
        return same if op == "eq" else not same
    if a is None or b is None or _kind(a) != _kind(b) or _kind(a) not in ("int", "float", "string"):
        raise TemplateError(f"{op}: incompatible types for comparison ({_kind(a)} and {_kind(b)})")
    return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]


def _need(v: Any, kind: str, fn: str) -> Any:
    if _kind(v) != kind:
        raise TemplateError(f"{fn}: wrong type for value; expected {kind}; got {_kind(v)}")
    return v


def _to_int(v: Any) -> int:
    """sprig's int (spf13/cast.ToInt): floats truncate, numeric strings parse, anything else is 0."""
    if v is None:
        return 0
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v, 10)
        except ValueError:
            return 0
    return 0


def _printf(fmt: str, *args: Any) -> str:
    out = []
    i = 0
    argi = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        verb = fmt[i + 1 : i + 2]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            raise TemplateError(f"printf {fmt!r}: missing argument for %{verb}")
        a = args[argi]
        argi += 1
        if verb == "s":
            out.append(_need(a, "string", "printf %s"))
        elif verb == "d":
            out.append(str(_need(a, "int", "printf %d")))
        elif verb == "v":
            out.append(strval(a))
        elif verb == "q":
            out.append(json.dumps(_need(a, "string", "printf %q"), ensure_ascii=False))
        else:
            raise TemplateError(f"printf: verb %{verb} is not supported by this renderer")
    if argi != len(args):
        raise TemplateError(f"printf {fmt!r}: {len(args) - argi} extra argument(s)")
    return "".join(out)


def _indent(n: Any, s: Any) -> str:
    pad = " " * _need(n, "int", "indent")
    return pad + _need(s, "string", "indent").replace("\n", "\n" + pad)


def _trunc(n: Any, s: Any) -> str:
    n = _need(n, "int", "trunc")
    s = _need(s, "string", "trunc")
    if n < 0 and len(s) + n > 0:
        return s[len(s) + n :]
    if n >= 0 and len(s) > n:
        return s[:n]
    return s


def _required(msg: Any, v: Any) -> Any:
    if v is None or (isinstance(v, str) and v == ""):
        raise TemplateError(str(msg))
    return v


def _fail(msg: Any) -> Any:
    raise TemplateError(str(msg))


def _default(d: Any, *given: Any) -> Any:
    if not given or _empty(given[0]):
        return d
    return given[0]


def _empty(v: Any) -> bool:
    return not truth(v)


def _join(sep: Any, v: Any) -> str:
    if v is None:
        return ""
    if not isinstance(v, list):
        return strval(v)
    return _need(sep, "string", "join").join(strval(x) for x in v if x is not None)


def _dict(*kv: Any) -> dict:
    if len(kv) % 2:
        raise TemplateError("dict: odd number of arguments")
    return {strval(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)}


def _quote(*vals: Any) -> str:
    return " ".join(json.dumps(strval(v), ensure_ascii=False) for v in vals if v is not None)


def _s(fn: Callable[..., Any], name: str, nstr: int) -> Callable[..., Any]:
    """Wraps a string function whose last `nstr` arguments must be strings (Go rejects other types)."""

    def wrapped(*args: Any) -> Any:
        for a in args[len(args) - nstr :]:
            _need(a, "string", name)
        return fn(*args)

    return wrapped


FUNCS: dict[str, Callable[..., Any]] = {
    "toYaml": to_yaml,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "quote": _quote,
    "default": _default,
    "empty": _empty,
    "required": _required,
    "fail": _fail,
    "printf": lambda f, *a: _printf(_need(f, "string", "printf"), *a),
    "trunc": _trunc,
    "trimSuffix": _s(lambda suf, s: s.removesuffix(suf), "trimSuffix", 2),
    "trim": _s(lambda s: s.strip(" \t\r\n\v\f"), "trim", 1),
    "trimPrefix": _s(lambda pre, s: s.removeprefix(pre), "trimPrefix", 2),
    "replace": _s(lambda old, new, s: s.replace(old, new), "replace", 3),
    "lower": _s(lambda s: s.lower(), "lower", 1),
    "upper": _s(lambda s: s.upper(), "upper", 1),
    "contains": _s(lambda sub, s: sub in s, "contains", 2),
    "hasPrefix": _s(lambda pre, s: s.startswith(pre), "hasPrefix", 2),
    "hasSuffix": _s(lambda suf, s: s.endswith(suf), "hasSuffix", 2),
    "eq": lambda a, *b: any(_compare(a, x, "eq") for x in b) if b else _fail("eq: missing argument"),
    "ne": lambda a, b: _compare(a, b, "ne"),
    "lt": lambda a, b: _compare(a, b, "lt"),
    "le": lambda a, b: _compare(a, b, "le"),
    "gt": lambda a, b: _compare(a, b, "gt"),
    "ge": lambda a, b: _compare(a, b, "ge"),
    "not": lambda v: not truth(v),
    "int": _to_int,
    "toString": strval,
    "len": lambda v: len(v) if isinstance(v, (str, list, dict)) else _fail(f"len of {_kind(v)}"),
    "list": lambda *a: list(a),
    "dict": _dict,
    "join": _join,
    "hasKey": lambda d, k: isinstance(d, dict) and k in d,
    "ternary": lambda a, b, cond: a if truth(cond) else b,
}


# ---------------------------------------------------------------------------------------------------
# Execution.


class Renderer:
    """Renders parsed templates sharing one set of `define`d templates."""

    def __init__(self) -> None:
        self.defines: dict[str, list[Node]] = {}

    def add(self, src: str, name: str) -> list[Node]:
        return parse(src, name, self.defines)

    def render(self, nodes: list[Node], data: Any) -> str:
        out: list[str] = []
        self._run(nodes, data, [{"$": data}], out)
        return "".join(out)

    def include(self, name: str, data: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f'no template "{name}"')
        return self.render(self.defines[name], data)

    def _run(self, nodes: list[Node], dot: Any, scopes: list[dict], out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, Text):
                out.append(n.text)
            elif isinstance(n, Output):
                v = self._pipe(n.pipe, dot, scopes)
                if not n.pipe.decl:
                    out.append(strval(v))
            elif isinstance(n, If):
                for pipe, body in n.branches:
                    if truth(self._pipe(pipe, dot, scopes)):
                        self._run(body, dot, scopes + [{}], out)
                        break
                else:
                    self._run(n.otherwise, dot, scopes + [{}], out)
            elif isinstance(n, With):
                v = self._pipe(n.pipe, dot, scopes, declare=False)
                scope: dict = {}
                if n.pipe.decl:
                    scope[n.pipe.decl[0]] = v
                if truth(v):
                    self._run(n.body, v, scopes + [scope], out)
                else:
                    self._run(n.otherwise, dot, scopes + [{}], out)
            elif isinstance(n, Range):
                v = self._pipe(n.pipe, dot, scopes, declare=False)
                if v is None:
                    items: list[tuple[Any, Any]] = []
                elif isinstance(v, list):
                    items = list(enumerate(v))
                elif isinstance(v, dict):
                    items = [(k, v[k]) for k in sorted(v)]
                else:
                    raise TemplateError(f"{n.pipe.where}: range can't iterate over {_kind(v)}")
                if not items:
                    self._run(n.otherwise, dot, scopes + [{}], out)
                for k, item in items:
                    scope = {}
                    if len(n.pipe.decl) == 1:
                        scope[n.pipe.decl[0]] = item
                    elif len(n.pipe.decl) == 2:
                        scope[n.pipe.decl[0]], scope[n.pipe.decl[1]] = k, item
                    self._run(n.body, item, scopes + [scope], out)
            elif isinstance(n, TemplateCall):
                data = self._pipe(n.pipe, dot, scopes) if n.pipe else None
                out.append(self.include(n.name, data))
            else:  # pragma: no cover - the parser builds only the node types above
                raise TemplateError(f"unknown node {n!r}")

    def _pipe(self, pipe: Pipeline, dot: Any, scopes: list[dict], declare: bool = True) -> Any:
        v: Any = None
        first = True
        for cmd in pipe.commands:
            v = self._command(cmd, dot, scopes, pipe.where, None if first else (v,))
            first = False
        if pipe.decl and declare:
            name = pipe.decl[0]
            if pipe.assign:
                for scope in reversed(scopes):
                    if name in scope:
                        scope[name] = v
                        break
                else:
                    raise TemplateError(f"{pipe.where}: undefined variable {name}")
            else:
                scopes[-1][name] = v
        return v

    def _command(self, cmd: Command, dot: Any, scopes: list[dict], where: str, piped: tuple | None) -> Any:
        head, *rest = cmd.operands
        if head.kind == "call":
            name = head.value
            if name in ("and", "or"):
                # Go evaluates and/or lazily and returns the deciding argument.
                ops = rest
                last: Any = None
                values = [lambda o=o: self._operand(o, dot, scopes, where) for o in ops]
                if piped is not None:
                    values.append(lambda: piped[0])
                if not values:
                    raise TemplateError(f"{where}: {name} needs arguments")
                for get in values:
                    last = get()
                    if truth(last) != (name == "and"):
                        return last
                return last
            args = [self._operand(o, dot, scopes, where) for o in rest]
            if piped is not None:
                args.append(piped[0])
            if name == "include":
                if len(args) != 2:
                    raise TemplateError(f"{where}: include takes a name and a context")
                return self.include(_need(args[0], "string", "include"), args[1])
            fn = FUNCS.get(name)
            if fn is None:
                raise TemplateError(f'{where}: function "{name}" is not supported by this renderer')
            try:
                return fn(*args)
            except TemplateError as e:
                raise TemplateError(f"{where}: {name}: {e}") from None
            except TypeError as e:
                raise TemplateError(f"{where}: {name}: wrong number of arguments ({e})") from None
        if rest or piped is not None:
            raise TemplateError(f"{where}: can't give arguments to a non-function")
        return self._operand(head, dot, scopes, where)

    def _operand(self, o: Operand, dot: Any, scopes: list[dict], where: str) -> Any:
        if o.kind == "literal":
            return o.value
        if o.kind == "pipe":
            assert o.pipe is not None
            return self._pipe(o.pipe, dot, scopes)
        if o.kind == "call":
            return self._command(Command([o]), dot, scopes, where, None)
        if o.kind == "field":
            return _fields(dot, o.path, where, ".")
        if o.kind == "var":
            for scope in reversed(scopes):
                if o.value in scope:
                    return _fields(scope[o.value], o.path, where, o.value)
            raise TemplateError(f"{where}: undefined variable {o.value}")
        raise TemplateError(f"{where}: bad operand")


def _fields(v: Any, path: list[str], where: str, start: str) -> Any:
    seen = start
    for p in path:
        if v is None:
            raise TemplateError(f"{where}: nil pointer evaluating interface {{}}.{p} (at {seen})")
        if not isinstance(v, dict):
            raise TemplateError(f"{where}: can't evaluate field {p} in type {_kind(v)} (at {seen})")
        v = v.get(p)
        seen = f"{seen}.{p}" if seen != "." else f".{p}"
    return v


# ---------------------------------------------------------------------------------------------------
# Helm: charts, values and manifests.

# Helm's InstallOrder (pkg/releaseutil/kind_sorter.go), the order `helm template` prints objects in.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
    "ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
    "RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
]  # fmt: skip


def helm_values(v: Any) -> Any:
    """Values as Helm holds them after YAML → JSON: every number is a float64."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [helm_values(x) for x in v]
    if isinstance(v, dict):
        return {str(k): helm_values(x) for k, x in v.items()}
    raise TemplateError(f"unsupported value {v!r}")


def merge_values(base: dict, override: dict) -> dict:
    """Helm's coalescing of user values over chart defaults: maps merge, null deletes, others replace."""
    out = dict(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = v
    return out


@dataclass
class Document:
    source: str
    kind: str
    name: str
    text: str
    obj: dict


_SPLIT = re.compile(r"(?:^|\s*\n)---\s*")


def render_chart(chart_dir: str, release: str, namespace: str, overrides: dict | None = None,
                 service: str = "Helm", notes_out: list[str] | None = None) -> list[Document]:  # fmt: skip
    """`helm template` for a chart directory whose dependencies are file:// library charts.
    The rendered NOTES.txt, if any, is appended to `notes_out`."""
    import os

    def load_yaml(path: str) -> Any:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)

    meta = load_yaml(os.path.join(chart_dir, "Chart.yaml"))
    r = Renderer()
    for dep in meta.get("dependencies") or []:
        repo = dep.get("repository", "")
        if not repo.startswith("file://"):
            raise TemplateError(f"dependency {dep.get('name')}: only file:// repositories are supported")
        dep_dir = os.path.normpath(os.path.join(chart_dir, repo[len("file://") :]))
        dep_meta = load_yaml(os.path.join(dep_dir, "Chart.yaml"))
        if dep_meta.get("type") != "library":
            raise TemplateError(f"dependency {dep.get('name')}: only library charts are supported")
        for root, _, files in sorted(os.walk(os.path.join(dep_dir, "templates"))):
            for f in sorted(files):
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    nodes = r.add(fh.read(), f"{dep_meta['name']}/templates/{f}")
                if any(isinstance(n, Text) and n.text.strip() or not isinstance(n, Text) for n in nodes):
                    raise TemplateError(f"{f}: a library chart may only define templates")
    values = load_yaml(os.path.join(chart_dir, "values.yaml")) or {}
    values = helm_values(merge_values(values, overrides or {}))
    ctx = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": service, "IsInstall": True,
                    "IsUpgrade": False, "Revision": 1},  # fmt: skip
        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta.get("appVersion", ""),
                  "Description": meta.get("description", ""), "Type": meta.get("type", "application")},  # fmt: skip
    }
    tdir = os.path.join(chart_dir, "templates")
    sources = []
    notes = None
    for f in sorted(os.listdir(tdir)):
        with open(os.path.join(tdir, f), encoding="utf-8") as fh:
            nodes = r.add(fh.read(), f"{meta['name']}/templates/{f}")
        if f == "NOTES.txt":
            notes = nodes
        elif not f.startswith("_") and f.endswith((".yaml", ".yml", ".tpl")):
            sources.append((f"{meta['name']}/templates/{f}", nodes))
    if notes_out is not None and notes is not None:
        notes_out.append(r.render(notes, ctx).replace("<no value>", ""))
    docs: list[Document] = []
    for source, nodes in sources:
        text = r.render(nodes, ctx).replace("<no value>", "")
        for part in _SPLIT.split(text):
            if not part.strip():
                continue
            try:
                obj = yaml.safe_load(part)
            except yaml.YAMLError as e:
                raise TemplateError(f"{source} rendered invalid YAML: {e}\n{part}") from None
            if obj is None:
                continue
            if not isinstance(obj, dict) or "kind" not in obj or "metadata" not in obj:
                raise TemplateError(f"{source} rendered an object without kind/metadata:\n{part}")
            docs.append(Document(source, obj["kind"], obj["metadata"].get("name", ""), part.strip("\n"), obj))
    order = {k: i for i, k in enumerate(INSTALL_ORDER)}
    docs.sort(key=lambda d: (order.get(d.kind, len(order)), d.kind if d.kind not in order else "", d.name))
    return docs


def helm_template_text(docs: list[Document]) -> str:
    """The documents as `helm template` prints them."""
    return "".join(f"---\n# Source: {d.source}\n{d.text}\n" for d in docs)
