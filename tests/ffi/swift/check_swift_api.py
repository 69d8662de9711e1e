#!/usr/bin/env python3
"""Checks that the iOS app's Swift calls only what the generated bindings of veil-ffi have.

There is no Swift compiler on the Linux machines, so this reads both sides as text:

* the generated `veil_ffi.swift` (scripts/gen-bindings.sh swift): its public types, the
  records' fields and memberwise inits, the enums' cases with their associated values, the
  classes' methods and inits with their argument labels, the protocols' requirements, and
  the top-level functions;
* every `*.swift` under the sources directory (ios/, the copied `veil_ffi.swift` aside): it
  follows the type of each variable, parameter, closure parameter (`$0` of `.map` on an
  array of records), `for` variable and `case` binding that holds a Veil type, and checks
  every use made through one: method names and argument labels, field names, enum cases in
  `switch`/`if case`/`catch` patterns with the number of values they bind, qualified cases
  (`VeilError.SecretStore(detail:)`), constructors, top-level functions, and the methods a
  class implementing `SecretStore`, `LogSink` or `SocketProtector` must have.

What it cannot follow (a value whose type only the compiler could infer, members used
without `self.` inside an extension of a Veil type) it leaves alone, except that a call of an
unknown function or method whose name is one typo away from a Veil name is reported too.

    check_swift_api.py --bindings bindings/swift/veil_ffi.swift --sources ios [--root .]
    check_swift_api.py ... --self-test   # the check must fail on misspelled copies

Exit status 1 with `FILE:LINE: message` lines when something does not exist.
"""

from __future__ import annotations

import argparse
import bisect
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

ID = r"[A-Za-z_][A-Za-z0-9_]*"
ID_RE = re.compile(ID)
KEYWORDS = set(
    """as associatedtype async await break case catch class continue default defer deinit do
    else enum extension fallthrough false fileprivate final for func guard if import in init
    inout internal is lazy let mutating nil nonisolated open operator override private
    protocol public repeat rethrows return some any static struct subscript super switch
    throw throws true try typealias var weak unowned where while willSet didSet get set
    convenience required indirect actor Self""".split()
)
# Members any value has, never reported.
UNIVERSAL = {"self", "hashValue", "hash", "debugDescription", "description",
             "localizedDescription", "errorDescription", "init"}
# Array methods whose closure gets the elements: positions of the element in its parameters.
CLOSURE_METHODS = {
    "map": [0], "compactMap": [0], "flatMap": [0], "filter": [0], "forEach": [0],
    "first": [0], "last": [0], "contains": [0], "allSatisfy": [0], "firstIndex": [0],
    "lastIndex": [0], "drop": [0], "prefix": [0], "sorted": [0, 1], "min": [0, 1],
    "max": [0, 1], "reduce": [None, 0],
}
# Methods that keep the array's type, and those that give one element.
SAME_ARRAY = {"filter", "sorted", "reversed", "shuffled", "dropFirst", "dropLast", "suffix"}
ONE_ELEMENT = {"first", "last", "min", "max", "randomElement"}
FUZZY = 0.85  # how close an unknown name must be to a Veil name to be called a typo of it


# ----------------------------------------------------------------------------------------
# Text


STR_OPEN = re.compile(r'(#*)("""|")')


def strip_swift(src: str) -> str:
    """The source with comments blanked and string literals replaced by `S` and spaces,
    keeping their interpolations `\\(...)` as code (as `(...)`), and every offset and newline
    where it was."""
    out = list(src)
    n = len(src)
    # Contexts: ["code", paren depth] (an interpolation ends at its depth-0 ")") or
    # ["str", quote, hashes].
    stack: list[list] = [["code", 0]]

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    i = 0
    while i < n:
        ctx = stack[-1]
        c = src[i]
        if ctx[0] == "code":
            if src.startswith("//", i):
                j = src.find("\n", i)
                j = n if j < 0 else j
                blank(i, j)
                i = j
                continue
            if src.startswith("/*", i):
                depth, j = 0, i
                while j < n:
                    if src.startswith("/*", j):
                        depth, j = depth + 1, j + 2
                    elif src.startswith("*/", j):
                        depth, j = depth - 1, j + 2
                        if depth == 0:
                            break
                    else:
                        j += 1
                blank(i, j)
                i = j
                continue
            if c in '#"':
                m = STR_OPEN.match(src, i)
                if m:
                    blank(i, m.end())
                    out[i] = "S"
                    stack.append(["str", m.group(2), len(m.group(1))])
                    i = m.end()
                    continue
            if c == "(":
                ctx[1] += 1
            elif c == ")":
                if ctx[1] == 0 and len(stack) > 1:
                    stack.pop()  # back in the string around this interpolation
                    i += 1
                    continue
                ctx[1] -= 1
            i += 1
            continue
        _, quote, hashes = ctx
        close = quote + "#" * hashes
        if src.startswith(close, i):
            blank(i, i + len(close))
            stack.pop()
            i += len(close)
            continue
        escape = "\\" + "#" * hashes
        if src.startswith(escape, i):
            j = i + len(escape)
            if j < n and src[j] == "(":
                blank(i, j)
                stack.append(["code", 0])
                i = j + 1
                continue
            blank(i, j + 1)
            i = j + 1
            continue
        blank(i, i + 1)
        i += 1
    return "".join(out)


class Text:
    """Stripped source with its bracket pairs, the innermost `{` around each offset, and
    line numbers."""

    def __init__(self, src: str):
        self.src = src
        self.t = strip_swift(src)
        t = self.t
        self.pairs: dict[int, int] = {}
        self.encl = [-1] * (len(t) + 1)
        stack: list[int] = []
        braces: list[int] = []
        for i, c in enumerate(t):
            self.encl[i] = braces[-1] if braces else -1
            if c in "([{":
                stack.append(i)
                if c == "{":
                    braces.append(i)
            elif c in ")]}":
                if stack:
                    o = stack.pop()
                    self.pairs[o] = i
                    self.pairs[i] = o
                if c == "}" and braces:
                    braces.pop()
        self.encl[len(t)] = -1
        self.newlines = [i for i, c in enumerate(t) if c == "\n"]

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def close(self, pos: int) -> int:
        """The offset of the bracket closing the one at `pos` (the end of the text if none)."""
        return self.pairs.get(pos, len(self.t))

    def skip_ws(self, i: int, newlines: bool = True) -> int:
        t = self.t
        while i < len(t) and (t[i] in " \t" or (newlines and t[i] in "\r\n")):
            i += 1
        return i

    def split_top(self, a: int, b: int) -> list[tuple[int, int]]:
        """Spans of t[a:b] between commas outside brackets (angle brackets included)."""
        parts, start, i, angle = [], a, a, 0
        t = self.t
        while i < b:
            c = t[i]
            if c in "([{" and i in self.pairs:
                i = self.pairs[i] + 1
                continue
            if c == "<":
                angle += 1
            elif c == ">" and angle and t[i - 1] != "-":
                angle -= 1
            elif c == "," and angle == 0:
                parts.append((start, i))
                start = i + 1
            i += 1
        if t[start:b].strip():
            parts.append((start, b))
        return parts

    def read_type(self, i: int) -> tuple[str, int]:
        """The type written at `i` (whitespace removed) and where it ends."""
        t = self.t
        i = self.skip_ws(i, newlines=False)
        start = i
        while True:
            m = re.compile(r"(?:@" + ID + r"|some|any|inout|borrowing|consuming)\s+").match(t, i)
            if not m:
                break
            i = m.end()
        if i < len(t) and t[i] in "[(":
            i = self.close(i) + 1
        else:
            m = re.compile(ID + r"(?:\." + ID + r")*").match(t, i)
            if not m:
                return "", start
            i = m.end()
            if i < len(t) and t[i] == "<":
                depth = 0
                while i < len(t):
                    depth += {"<": 1, ">": -1}.get(t[i], 0)
                    i += 1
                    if depth == 0:
                        break
        while i < len(t) and t[i] in "?!":
            i += 1
        m = re.compile(r"\s*(?:async\s+)?(?:throws\s+)?->\s*").match(t, i)
        if m and t[start] == "(":  # a function type
            _, i = self.read_type(m.end())
        return re.sub(r"\s+", "", t[start:i]), i


def unopt(t: str | None) -> str | None:
    if t is None:
        return None
    t = t.strip()
    while t.endswith(("?", "!")):
        t = t[:-1]
    m = re.fullmatch(r"Optional<(.*)>", t)
    return m.group(1) if m else t


def element(t: str | None) -> str | None:
    t = unopt(t)
    if t and t.startswith("[") and t.endswith("]") and ":" not in t:
        return t[1:-1]
    m = re.fullmatch(r"Array<(.*)>", t or "")
    return m.group(1) if m else None


def close_to(name: str, candidates) -> str | None:
    best = difflib.get_close_matches(name, list(candidates), n=1, cutoff=FUZZY)
    return best[0] if best else None


# ----------------------------------------------------------------------------------------
# The bindings


@dataclass
class Param:
    label: str | None  # None: `_`
    type: str
    default: bool = False


@dataclass
class Func:
    name: str
    params: list[Param]
    is_async: bool
    throws: bool
    ret: str | None

    def labels(self) -> str:
        return "(" + "".join(f"{p.label or '_'}:" for p in self.params) + ")"

    def signature(self) -> str:
        params = ", ".join(f"{p.label or '_'}: {p.type}" for p in self.params)
        effects = (" async" if self.is_async else "") + (" throws" if self.throws else "")
        ret = f" -> {self.ret}" if self.ret and self.ret not in ("Void", "()") else ""
        return f"{self.name}({params}){effects}{ret}"


@dataclass
class TypeInfo:
    name: str
    kind: str  # struct, enum, class, protocol
    fields: dict[str, str] = field(default_factory=dict)
    methods: dict[str, list[Func]] = field(default_factory=dict)
    inits: list[list[Param]] = field(default_factory=list)
    cases: dict[str, list[Param]] = field(default_factory=dict)


def parse_params(tx: Text, open_: int, close: int) -> list[Param]:
    params = []
    for a, b in tx.split_top(open_ + 1, close):
        m = re.compile(r"\s*(?:(" + ID + r")\s+)?(" + ID + r")\s*:").match(tx.t, a, b)
        if not m:
            continue
        label = m.group(1) if m.group(1) is not None else m.group(2)
        type_, end = tx.read_type(m.end())
        params.append(Param(None if label == "_" else label, type_,
                            tx.t[end:b].strip().startswith("=")))
    return params


EFFECTS = re.compile(r"\s*(async)?\s*(throws|rethrows)?\s*(?:->\s*)?")


def parse_func_tail(tx: Text, close: int) -> tuple[bool, bool, str | None, int]:
    """`async`, `throws` and the return type after a parameter list."""
    m = EFFECTS.match(tx.t, close + 1)
    ret, end = None, m.end()
    if "->" in tx.t[close + 1:m.end()]:
        ret, end = tx.read_type(m.end())
    return bool(m.group(1)), bool(m.group(2)), ret, end


class Api:
    """What the generated Swift offers."""

    def __init__(self, src: str):
        tx = Text(src)
        t = tx.t
        self.types: dict[str, TypeInfo] = {}
        self.functions: dict[str, Func] = {}
        decl = re.compile(r"\b(?:public|open)\s+(?:final\s+)?(struct|enum|class|protocol)\s+(" + ID + r")[^{]*\{")
        for m in decl.finditer(t):
            kind, name = m.group(1), m.group(2)
            if name.startswith(("FfiConverter", "Uniffi")) or name in ("NoHandle",):
                continue
            body = m.end() - 1
            info = self.types.setdefault(name, TypeInfo(name, kind))
            self._members(tx, body, info)
        for m in re.finditer(r"\bpublic\s+func\s+(" + ID + r")\s*\(", t):
            if tx.encl[m.start()] != -1 or m.group(1).startswith(("FfiConverter", "uniffi")):
                continue
            f = self._func(tx, m)
            self.functions[f.name] = f
        # Methods of a class include its protocol's (VeilNode: VeilNodeProtocol).
        for info in self.types.values():
            if info.kind == "class" and f"{info.name}Protocol" in self.types:
                for k, v in self.types[f"{info.name}Protocol"].methods.items():
                    info.methods.setdefault(k, v)

    def _func(self, tx: Text, m: re.Match) -> Func:
        open_ = m.end() - 1
        close = tx.close(open_)
        is_async, throws, ret, _ = parse_func_tail(tx, close)
        return Func(m.group(1), parse_params(tx, open_, close), is_async, throws, ret)

    def _members(self, tx: Text, body: int, info: TypeInfo) -> None:
        t, end = tx.t, tx.close(body)
        inside = lambda p: tx.encl[p] == body  # noqa: E731
        for m in re.compile(r"\b(?:public|open)\s+(?:var|let)\s+`?(" + ID + r")`?\s*:").finditer(t, body, end):
            if inside(m.start()):
                info.fields[m.group(1)] = tx.read_type(m.end())[0]
        func = r"\bfunc\s+(" + ID + r")\s*\(" if info.kind == "protocol" else \
            r"\b(?:public|open)\s+(?:override\s+)?func\s+(" + ID + r")\s*\("
        for m in re.compile(func).finditer(t, body, end):
            if inside(m.start()):
                f = self._func(tx, m)
                info.methods.setdefault(f.name, []).append(f)
        for m in re.compile(r"\bpublic\s+(?:convenience\s+)?init\s*\(").finditer(t, body, end):
            if inside(m.start()):
                info.inits.append(parse_params(tx, m.end() - 1, tx.close(m.end() - 1)))
        if info.kind == "enum":
            for m in re.compile(r"\bcase\s+").finditer(t, body, end):
                if not inside(m.start()):
                    continue
                i = m.end()
                while True:
                    c = re.compile(r"\s*`?(" + ID + r")`?").match(t, i)
                    if not c:
                        break
                    i = tx.skip_ws(c.end())
                    params: list[Param] = []
                    if i < len(t) and t[i] == "(":
                        params = parse_params(tx, i, tx.close(i))
                        i = tx.skip_ws(tx.close(i) + 1)
                    info.cases[c.group(1)] = params
                    if i < len(t) and t[i] == ",":
                        i += 1
                        continue
                    break

    def member_names(self) -> set[str]:
        names = set(self.functions)
        for info in self.types.values():
            names |= set(info.methods) | set(info.fields) | set(info.cases)
        return names


def labels_match(params: list[Param], given: list[str | None]) -> bool:
    """Whether a call with these labels fits these parameters (defaulted ones may be left
    out)."""
    i = 0
    for p in params:
        if i < len(given) and given[i] == p.label:
            i += 1
        elif not p.default:
            return False
    return i == len(given)


def fmt_labels(given: list[str | None]) -> str:
    return "(" + "".join(f"{g or '_'}:" for g in given) + ")"


# ----------------------------------------------------------------------------------------
# The app's Swift


@dataclass
class Decl:
    name: str
    type: str | None
    start: int
    end: int


@dataclass
class Step:
    kind: str  # member, call, subscript, closure, unwrap
    pos: int
    name: str = ""
    span: tuple[int, int] = (0, 0)  # the brackets of a call, subscript or closure


@dataclass
class Chain:
    root: str
    pos: int
    steps: list[Step]
    end: int


class Checker:
    def __init__(self, api: Api, root: str):
        self.api = api
        self.root = root
        self.problems: list[tuple[str, int, str]] = []
        self.used: dict[str, set[str]] = {}
        self.uses = 0
        self.declared: set[str] = set()  # names the app declares (types, functions, ...)
        self.ios_funcs: dict[str, str] = {}  # app functions returning a Veil type
        self.api_members = api.member_names()

    # -- reporting
    def problem(self, pos: int, message: str) -> None:
        self.problems.append((self.path, self.tx.line(pos), message))

    def use(self, owner: str, name: str) -> None:
        self.uses += 1
        self.used.setdefault(owner, set()).add(name)

    # -- first pass over every file: the names the app declares
    def collect(self, src: str) -> None:
        tx = Text(src)
        pat = re.compile(
            r"\b(?:func|class|struct|enum|protocol|actor|typealias|let|var|case|import)\s+(" + ID + r")")
        for m in pat.finditer(tx.t):
            self.declared.add(m.group(1))
        for m in re.finditer(r"\bfunc\s+(" + ID + r")\s*\(", tx.t):
            for p in parse_params(tx, m.end() - 1, tx.close(m.end() - 1)):
                if p.label:
                    self.declared.add(p.label)
            _, _, ret, _ = parse_func_tail(tx, tx.close(m.end() - 1))
            if ret and self.veil_type(ret):
                self.ios_funcs[m.group(1)] = ret
        for m in re.finditer(r"\b(?:let|var)\s+\(([^)]*)\)", tx.t):
            self.declared |= set(ID_RE.findall(m.group(1)))

    def veil_type(self, t: str | None) -> TypeInfo | None:
        t = unopt(t)
        return self.api.types.get(t) if t else None

    # -- scopes
    def declare(self, name: str, type_: str | None, pos: int, end: int | None = None) -> None:
        """`name` is visible from `pos` to the end of its block (all of a type's body)."""
        block = self.tx.encl[pos]
        if end is None:
            end = self.tx.close(block) if block >= 0 else len(self.tx.t)
            if block in self.type_bodies:
                pos = block
        for d in self.decls.setdefault(name, []):
            if d.start == pos and d.end == end:
                d.type = type_
                return
        self.decls[name].append(Decl(name, type_, pos, end))

    def lookup(self, name: str, pos: int) -> Decl | None:
        best = None
        for d in self.decls.get(name, []):
            if d.start <= pos < d.end and (best is None or d.start >= best.start):
                best = d
        return best

    # -- chains: root(.member | (args) | [index] | { closure } | ? | !)*
    def read_chain(self, i: int) -> Chain | None:
        tx, t = self.tx, self.tx.t
        m = re.compile(r"\$\d+|" + ID).match(t, i)
        if not m:
            return None
        steps: list[Step] = []
        j = m.end()
        while j < len(t):
            k = tx.skip_ws(j)
            if t[j] in "?!" and j + 1 < len(t) and t[j + 1] in ".([":
                steps.append(Step("unwrap", j))
                j += 1
                continue
            if t[k:k + 1] == "." and re.compile(r"\.\s*(`?" + ID + r"`?)").match(t, k):
                mm = re.compile(r"\.\s*`?(" + ID + r")`?").match(t, k)
                steps.append(Step("member", mm.start(1), mm.group(1)))
                j = mm.end()
                continue
            if t[j:j + 1] in "([":
                steps.append(Step("call" if t[j] == "(" else "subscript", j, span=(j, tx.close(j))))
                j = tx.close(j) + 1
                continue
            k = tx.skip_ws(j, newlines=False)
            last = steps[-1] if steps else None
            method = last.name if last and last.kind == "member" else \
                (steps[-2].name if last and last.kind == "call" and len(steps) > 1 else "")
            if t[k:k + 1] == "{" and method in CLOSURE_METHODS:
                steps.append(Step("closure", k, span=(k, tx.close(k))))
                j = tx.close(k) + 1
                continue
            break
        return Chain(m.group(0), i, steps, j)

    def args(self, step: Step) -> list[str | None]:
        labels = []
        for a, b in self.tx.split_top(step.span[0] + 1, step.span[1]):
            m = re.compile(r"\s*(" + ID + r")\s*:(?!:)").match(self.tx.t, a, b)
            labels.append(m.group(1) if m else None)
        return labels

    def bad_arg(self, step: Step, params: list[list[Param]]) -> int:
        """Where a call's labels go wrong: the first argument whose label no parameter has
        (the call itself when the labels exist but do not fit)."""
        known = {p.label for ps in params for p in ps}
        for a, b in self.tx.split_top(step.span[0] + 1, step.span[1]):
            m = re.compile(r"\s*(" + ID + r")\s*:(?!:)").match(self.tx.t, a, b)
            label = m.group(1) if m else None
            if label not in known:
                return m.start(1) if m else self.tx.skip_ws(a)
        return step.pos

    def closures_of(self, step: Step) -> list[tuple[int, int]]:
        """The closures a step passes: a trailing one, or `{...}` arguments (`where: {...}`)."""
        if step.kind == "closure":
            return [step.span]
        if step.kind != "call":
            return []
        found = []
        for a, b in self.tx.split_top(step.span[0] + 1, step.span[1]):
            k = re.compile(r"\s*(?:" + ID + r"\s*:)?\s*").match(self.tx.t, a, b).end()
            if self.tx.t[k:k + 1] == "{":
                found.append((k, self.tx.close(k)))
        return found

    def bind_closure(self, span: tuple[int, int], types: list[str | None]) -> None:
        """The closure's parameters (`$0`, or `x in`) get the elements' type."""
        open_, close = span
        for k, type_ in enumerate(types):
            self.declare(f"${k}", type_, open_, close)
        m = re.compile(r"\{\s*(?:\[[^\]]*\]\s*)?\(?\s*(" + ID + r"(?:\s*,\s*" + ID + r")*)\s*\)?\s*in\b").match(
            self.tx.t, open_)
        if m:
            for k, name in enumerate(re.split(r"\s*,\s*", m.group(1))):
                if k < len(types):
                    self.declare(name, types[k], open_, close)

    def eval_chain(self, ch: Chain, check: bool) -> str | None:
        """The type of the chain's value, reporting what does not exist when `check`."""
        api, steps = self.api, ch.steps
        root, i = ch.root, 0
        if root == "self" and steps and steps[0].kind == "member":
            root, i = steps[0].name, 1
        report = self.problem if check else (lambda pos, msg: None)
        use = self.use if check else (lambda owner, name: None)
        d = self.lookup(root, ch.pos) if root not in api.types or root.startswith("$") else None
        t: str | None = None
        if d is not None:
            t = d.type
        elif root in api.types:
            info = api.types[root]
            nxt = steps[i] if i < len(steps) else None
            if nxt and nxt.kind == "call":
                given = self.args(nxt)
                if info.kind in ("struct", "class"):
                    if not any(labels_match(ps, given) for ps in info.inits):
                        # The handle inits are UniFFI's own (for fakes in tests): not shown.
                        shown = [ps for ps in info.inits
                                 if not any(p.label in ("unsafeFromHandle", "noHandle") for p in ps)]
                        known = " or ".join(Func("init", ps, False, False, None).labels() for ps in shown)
                        report(self.bad_arg(nxt, shown), f"{root}{fmt_labels(given)}: {root} is made with "
                                                         f"{known or 'no public init'}")
                    use(root, "init")
                t, i = root, i + 1
            elif nxt and nxt.kind == "member" and info.kind == "enum":
                t, i = self.enum_case(info, steps, i, report, use), i + 1
                if i < len(steps) and steps[i].kind == "call":
                    i += 1
            else:
                return root
        elif root in api.functions and i < len(steps) and steps[i].kind == "call":
            f = api.functions[root]
            given = self.args(steps[i])
            if not labels_match(f.params, given):
                report(self.bad_arg(steps[i], [f.params]),
                       f"{root}{fmt_labels(given)}: the Veil function is {root}{f.labels()}")
            use("functions", root)
            t, i = f.ret, i + 1
        elif root in self.ios_funcs and i < len(steps) and steps[i].kind == "call":
            t, i = self.ios_funcs[root], i + 1
        else:
            if check and i < len(steps) and steps[i].kind == "call" and not root.startswith("$"):
                self.fuzzy(ch.pos, root, set(api.functions) | set(api.types), "function or type")
        while i < len(steps):
            st = steps[i]
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            if st.kind == "unwrap":
                i += 1
                continue
            info = self.veil_type(t)
            elem = element(t)
            if st.kind == "member" and elem is not None:
                name = st.name
                if name in CLOSURE_METHODS and self.veil_type(elem):
                    holder = nxt if nxt and nxt.kind in ("call", "closure") else None
                    after = steps[i + 2] if holder and i + 2 < len(steps) else None
                    for step in [holder, after]:
                        if step is not None:
                            for span in self.closures_of(step):
                                self.bind_closure(span, [elem if p is not None else None
                                                         for p in CLOSURE_METHODS[name]])
                if name in ONE_ELEMENT:
                    t = elem + "?"
                elif name not in SAME_ARRAY:
                    t = None
                i += 1
                while i < len(steps) and steps[i].kind in ("call", "closure"):
                    i += 1
                continue
            if st.kind == "subscript" and elem is not None:
                t, i = elem, i + 1
                continue
            if st.kind == "member" and info is not None:
                t = self.member(info, st, nxt, report, use)
                i += 2 if nxt and nxt.kind == "call" and info.methods.get(st.name) else 1
                continue
            if check and st.kind == "member" and nxt and nxt.kind == "call":
                self.fuzzy(st.pos, st.name, self.api_members, "method")
            t, i = None, i + 1
        self.implicit_member(ch, t, check)
        return t

    def member(self, info: TypeInfo, st: Step, nxt: Step | None, report, use) -> str | None:
        name = st.name
        if name in info.fields:
            use(info.name, name)
            return info.fields[name]
        if name in info.methods:
            use(info.name, name)
            overloads = info.methods[name]
            if nxt and nxt.kind == "call":
                given = self.args(nxt)
                fit = [f for f in overloads if labels_match(f.params, given)]
                if not fit:
                    report(self.bad_arg(nxt, [f.params for f in overloads]),
                           f"{info.name}.{name}{fmt_labels(given)}: it takes "
                                    + " or ".join(f.labels() for f in overloads))
                return (fit or overloads)[0].ret
            return None
        if name in UNIVERSAL or info.kind == "enum":
            return None
        what = "field" if info.kind == "struct" else "method or property"
        names = set(info.fields) | set(info.methods)
        guess = close_to(name, names)
        hint = f" (did you mean '{guess}'?)" if guess else f"; it has {', '.join(sorted(names))}"
        report(st.pos, f"{info.name} has no {what} '{name}'{hint}")
        return None

    def enum_case(self, info: TypeInfo, steps: list[Step], i: int, report, use) -> str:
        st = steps[i]
        if st.name not in info.cases:
            if st.name not in UNIVERSAL:
                self.no_case(info, st.name, st.pos, report)
            return info.name
        use(info.name, "." + st.name)
        call = steps[i + 1] if i + 1 < len(steps) and steps[i + 1].kind == "call" else None
        if call:
            given = self.args(call)
            want = info.cases[st.name]
            if len(given) != len(want) or any(g and g != w.label for g, w in zip(given, want)):
                report(self.bad_arg(call, [want]), f"{info.name}.{st.name}{fmt_labels(given)}: the case has "
                                 f"{Func(st.name, want, False, False, None).labels()}")
        return info.name

    def no_case(self, info: TypeInfo, name: str, pos: int, report) -> None:
        guess = close_to(name, info.cases)
        hint = f" (did you mean '.{guess}'?)" if guess else f"; cases: {', '.join(info.cases)}"
        report(pos, f"{info.name} has no case '{name}'{hint}")

    def implicit_member(self, ch: Chain, t: str | None, check: bool) -> None:
        """`x = .case`, `x == .case` where x holds a Veil enum."""
        info = self.veil_type(t)
        if not check or info is None or info.kind != "enum":
            return
        m = re.compile(r"\s*(?:=|==|!=)\s*\.\s*(" + ID + r")").match(self.tx.t, ch.end)
        if m:
            if m.group(1) in info.cases:
                self.use(info.name, "." + m.group(1))
            else:
                self.no_case(info, m.group(1), m.start(1), self.problem)

    def fuzzy(self, pos: int, name: str, candidates: set[str], what: str) -> None:
        if name in candidates or name in self.declared or len(name) < 5:
            return
        guess = close_to(name, candidates)
        if guess:
            self.problem(pos, f"'{name}' is not a Veil {what} (did you mean '{guess}'?)")

    def infer(self, i: int) -> str | None:
        """The type of the expression at `i` (`try`/`await` skipped, `as? T` honoured)."""
        t = self.tx.t
        m = re.compile(r"(?:\s*(?:try[?!]?|await)\s+)*\s*").match(t, i)
        ch = self.read_chain(m.end())
        if ch is None:
            return None
        type_ = self.eval_chain(ch, check=False)
        cast = re.compile(r"\s*as[?!]?\s+").match(t, ch.end)
        if cast:
            return unopt(self.tx.read_type(cast.end())[0])
        return type_

    # -- patterns: `case .a(let x), .b:` and `if case let .a(x) = e`
    def patterns(self, info: TypeInfo, a: int, b: int, scope_end: int) -> tuple[set[str], bool]:
        """Checks the patterns and declares what they bind; returns the cases they match
        whole, and whether one matches anything (`_`, `let x`)."""
        t = self.tx.t
        covered, anything = set(), False
        for pa, pb in self.tx.split_top(a, b):
            if re.fullmatch(r"\s*(?:_|(?:let|var)\s+" + ID + r")\s*", t[pa:pb]):
                anything = True
                continue
            m = re.compile(r"\s*(let\s+|var\s+)?(?:(" + ID + r")\s*)?\.\s*`?(" + ID + r")`?").match(t, pa, pb)
            if not m:
                continue
            target = self.api.types.get(m.group(2) or info.name)
            if target is None or target.kind != "enum":
                continue
            name = m.group(3)
            if name not in target.cases:
                self.no_case(target, name, m.start(3), self.problem)
                continue
            self.use(target.name, "." + name)
            k = self.tx.skip_ws(m.end())
            if k >= pb or t[k] != "(":
                covered.add(name)
                continue
            values = self.tx.split_top(k + 1, self.tx.close(k))
            if all(re.fullmatch(r"\s*(?:" + ID + r"\s*:)?\s*(?:(?:let|var)\s+)?" + ID + r"\s*", t[va:vb])
                   for va, vb in values):
                covered.add(name)
            want = target.cases[name]
            if len(values) != len(want):
                self.problem(k, f"{target.name}.{name} has {len(want)} associated value"
                                f"{'s' if len(want) != 1 else ''}, the pattern binds {len(values)}")
                continue
            for (va, vb), p in zip(values, want):
                v = re.sub(r"^\s*" + ID + r"\s*:(?!:)", "", t[va:vb]).strip()
                bm = re.fullmatch(r"(?:let|var)\s+(" + ID + r")", v) or \
                    (re.fullmatch(r"(" + ID + r")", v) if m.group(1) else None)
                if bm and bm.group(1) != "_":
                    self.declare(bm.group(1), p.type, va, scope_end)
        return covered, anything

    def pattern_end(self, a: int, stop: str) -> int:
        """The end of a pattern list starting at `a`: the first `stop` (`:` or `=`) outside
        brackets."""
        t, i = self.tx.t, a
        while i < len(t):
            if t[i] in "([{" and i in self.tx.pairs:
                i = self.tx.pairs[i] + 1
                continue
            if t[i] == stop and (stop != "=" or t[i + 1:i + 2] != "="):
                return i
            if t.startswith("where", i) and not re.match(r"\w", t[i - 1]):
                return i
            i += 1
        return i

    def switch(self, pos: int) -> None:
        tx, t = self.tx, self.tx.t
        subject = self.infer(pos + len("switch"))
        info = self.veil_type(subject)
        body = t.find("{", pos)
        if info is None or info.kind != "enum" or body < 0:
            return
        end = tx.close(body)
        covered, default = set(), False
        for m in re.compile(r"\b(case|default)\b").finditer(t, body, end):
            if tx.encl[m.start()] != body:
                continue
            if m.group(1) == "default":
                default = True
                continue
            stop = self.pattern_end(m.end(), ":")
            names, anything = self.patterns(info, m.end(), stop, end)
            if not t.startswith("where", stop):  # a guarded clause covers nothing for sure
                covered |= names
                default = default or anything
        missing = [c for c in info.cases if c not in covered]
        if missing and not default:
            self.problem(pos, f"this switch over {info.name} misses "
                              f"{', '.join('.' + c for c in missing)} (add them, or a default)")

    def if_case(self, m: re.Match) -> None:
        eq = self.pattern_end(m.end(), "=")
        info = self.veil_type(self.infer(eq + 1))
        if info is not None and info.kind == "enum":
            block = self.tx.encl[m.start()]
            self.patterns(info, m.end(), eq, self.tx.close(block) if block >= 0 else len(self.tx.t))

    # -- conformances: the methods a class implementing a Veil protocol must have
    def conformances(self) -> None:
        tx, t = self.tx, self.tx.t
        pat = re.compile(r"\b(class|struct|actor|extension)\s+(" + ID + r")(?:<[^>]*>)?\s*:([^{]*)\{")
        for m in pat.finditer(t):
            protocols = [p.strip() for p in m.group(3).split(",")]
            body = m.end() - 1
            for proto in protocols:
                info = self.api.types.get(proto)
                if info is None or info.kind != "protocol":
                    continue
                self.use(proto, f"implemented by {m.group(2)}")
                have: dict[str, list[Func]] = {}
                where: dict[str, int] = {}
                for fm in re.compile(r"\bfunc\s+(" + ID + r")\s*\(").finditer(t, body, tx.close(body)):
                    if tx.encl[fm.start()] == body:
                        close = tx.close(fm.end() - 1)
                        is_async, throws, ret, _ = parse_func_tail(tx, close)
                        f = Func(fm.group(1), parse_params(tx, fm.end() - 1, close), is_async, throws, ret)
                        have.setdefault(f.name, []).append(f)
                        where.setdefault(f.name, fm.start(1))
                for name, reqs in info.methods.items():
                    for req in reqs:
                        if not any(self.implements(f, req) for f in have.get(name, [])):
                            found = "; it has " + ", ".join(f.signature() for f in have[name]) if name in have else ""
                            self.problem(where.get(name, m.start(2)), f"{m.group(2)} does not implement "
                                                     f"{proto}.{req.signature()}{found}")

    @staticmethod
    def implements(f: Func, req: Func) -> bool:
        norm = lambda s: re.sub(r"\s+", "", s or "Void").replace("()", "Void")  # noqa: E731
        return (
            [(p.label, norm(p.type)) for p in f.params] == [(p.label, norm(p.type)) for p in req.params]
            and norm(f.ret) == norm(req.ret)
            and (not f.throws or req.throws)
            and (not f.is_async or req.is_async)
        )

    # -- one file
    def check_file(self, path: str, src: str) -> None:
        self.path = os.path.relpath(path, self.root)
        self.tx = tx = Text(src)
        t = tx.t
        self.decls: dict[str, list[Decl]] = {}
        self.type_bodies = set()
        for m in re.finditer(r"\b(?:class|struct|enum|extension|actor|protocol)\s+(" + ID + r")[^{;=]*\{", t):
            if m.group(1) not in KEYWORDS:
                self.type_bodies.add(m.end() - 1)
        # Parameters of functions and inits, visible in their bodies.
        for m in re.finditer(r"\b(?:func\s+" + ID + r"|init[?!]?)\s*(?:<[^>(]*>)?\s*\(", t):
            close = tx.close(m.end() - 1)
            *_, after = parse_func_tail(tx, close)
            after = re.compile(r"\s*(?:where[^{]*)?").match(t, after).end()
            if t[after:after + 1] != "{":
                continue
            for a, b in tx.split_top(m.end(), close):
                pm = re.compile(r"\s*(?:" + ID + r"\s+)?(" + ID + r")\s*:").match(t, a, b)
                if pm:
                    self.declare(pm.group(1), tx.read_type(pm.end())[0], after, tx.close(after))
        # Declarations with a written type.
        typed = re.compile(r"\b(?:let|var)\s+(" + ID + r")\s*:")
        for m in typed.finditer(t):
            type_, end = tx.read_type(m.end())
            self.declare(m.group(1), type_, m.start())
            info = self.veil_type(type_)
            im = re.compile(r"\s*=\s*\.\s*(" + ID + r")").match(t, end)
            if info and info.kind == "enum" and im:
                if im.group(1) in info.cases:
                    self.use(info.name, "." + im.group(1))
                else:
                    self.no_case(info, im.group(1), im.start(1), self.problem)
        for m in re.finditer(r"\{\s*(?:\[[^\]]*\]\s*)?\(([^()]*)\)\s*(?:->[^{}]*?)?\s*in\b", t):
            for a, b in tx.split_top(m.start(1), m.end(1)):
                pm = re.compile(r"\s*(" + ID + r")\s*:").match(t, a, b)
                if pm:
                    self.declare(pm.group(1), tx.read_type(pm.end())[0], m.start(), tx.close(m.start()))
        # Everything else in the order it is written: inferred declarations, `for`,
        # `catch`, `switch`, `if case`, and every chain that starts from a name.
        events = []
        for m in re.finditer(r"\b(?:let|var)\s+(" + ID + r")\s*=", t):
            events.append((m.start(), "let", m))
        for m in re.finditer(r"\bfor\s+(?:case\s+)?(?:let\s+)?(" + ID + r")\s+in\b", t):
            events.append((m.start(), "for", m))
        for m in re.finditer(r"\bcatch\s+let\s+(" + ID + r")\s+as\s+", t):
            events.append((m.start(), "catch", m))
        for m in re.finditer(r"\bswitch\b", t):
            events.append((m.start(), "switch", m))
        for m in re.finditer(r"\b(?:if|guard|while)\s+case\b", t):
            events.append((m.start(), "ifcase", m))
        for m in re.finditer(r"(?<![.\w$])(\$\d+|" + ID + r")", t):
            name = m.group(1)
            if name in KEYWORDS and name != "self":
                continue
            if re.match(r"\s*:(?!:)", t[m.end():m.end() + 2]) and not name.startswith("$"):
                continue  # a label
            before = t[max(0, m.start() - 30):m.start()]
            if re.search(r"(?:\.|\b(?:func|let|var|class|struct|enum|protocol|actor|typealias|import|case))\s*$",
                         before):
                continue
            events.append((m.start(), "root", m))
        events.sort(key=lambda e: (e[0], e[1] != "let"))
        for pos, kind, m in events:
            if kind == "let":
                self.declare(m.group(1), self.infer(m.end()), m.start())
            elif kind == "for":
                end = t.find("{", m.end())
                if end >= 0:
                    self.declare(m.group(1), element(self.infer(m.end())), m.start(), tx.close(end))
            elif kind == "catch":
                type_, end = tx.read_type(m.end())
                body = t.find("{", end)
                self.declare(m.group(1), type_, m.start(), tx.close(body) if body >= 0 else len(t))
            elif kind == "switch":
                self.switch(pos)
            elif kind == "ifcase":
                self.if_case(m)
            else:
                ch = self.read_chain(pos)
                if ch is not None:
                    self.eval_chain(ch, check=True)
        for m in re.finditer(r"\bVeil[A-Z0-9_]\w*", t):
            name = m.group(0)
            if name not in self.api.types and name not in self.api.functions and name not in self.declared:
                self.problem(m.start(), f"'{name}' is neither in the bindings nor declared in the app")
        self.conformances()


def swift_files(sources: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(sources):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "build"
                             and not d.endswith(".xcframework"))
        for f in sorted(filenames):
            # veil_ffi.swift: the generated bindings, copied there by scripts/build-ios.sh.
            if f.endswith(".swift") and f != "veil_ffi.swift" and f != "Package.swift":
                found.append(os.path.join(dirpath, f))
    return found


def run(bindings: str, sources: str, root: str, quiet: bool = False) -> int:
    with open(bindings, encoding="utf-8") as f:
        api = Api(f.read())
    if "VeilNode" not in api.types or not api.functions:
        print(f"check_swift_api: {bindings} does not look like veil-ffi's bindings", file=sys.stderr)
        return 2
    files = swift_files(sources)
    if not files:
        print(f"check_swift_api: no Swift files under {sources}", file=sys.stderr)
        return 2
    checker = Checker(api, root)
    texts = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            texts[path] = f.read()
        checker.collect(texts[path])
    for path in files:
        checker.check_file(path, texts[path])
    for path, line, message in sorted(set(checker.problems)):
        print(f"{path}:{line}: {message}")
    sys.stdout.flush()
    if checker.problems:
        print(f"check_swift_api: {len(checker.problems)} use(s) of the Veil API do not match "
              f"{bindings}", file=sys.stderr)
        return 1
    if checker.uses == 0:
        print("check_swift_api: no use of the Veil API found; the scan is broken", file=sys.stderr)
        return 1
    if not quiet:
        print(f"check_swift_api: {len(files)} Swift files, {checker.uses} uses of the Veil API, all in the bindings:")
        for owner in sorted(checker.used):
            print(f"  {owner}: {', '.join(sorted(checker.used[owner]))}")
        unused = [f"VeilNode.{m}" for m in sorted(api.types["VeilNode"].methods)
                  if m not in checker.used.get("VeilNode", set()) and not m.startswith("uniffi")]
        if unused:
            print(f"  (not called by the app: {', '.join(unused)})")
    return 0


# ----------------------------------------------------------------------------------------
# Self-test: misspelled copies must fail, naming the file, the line and the name.

# (file under the sources, text to find, replacement, what the report must name[, the text
# on the line reported, when it is not the changed one])
MUTATIONS = [
    ("PacketTunnel/PacketTunnelProvider.swift", ".peerDown, .pathChanged", ".pathChanged",
     "misses .peerDown", "switch event {"),
    ("PacketTunnel/PacketTunnelProvider.swift", "node.start(tunFd:", "node.strat(tunFd:", "'strat'"),
    ("PacketTunnel/PacketTunnelProvider.swift", "start(tunFd: utun.fd)", "start(fd: utun.fd)", "(fd:)"),
    ("PacketTunnel/PacketTunnelProvider.swift", "node.setTun(tunFd:", "node.setTunFd(tunFd:", "'setTunFd'"),
    ("PacketTunnel/PacketTunnelProvider.swift", "case .settingsChanged(let settings)",
     "case .settingChanged(let settings)", "'settingChanged'"),
    ("PacketTunnel/PacketTunnelProvider.swift", "case .connected, .disconnected",
     "case .connected, .disconected", "'disconected'"),
    ("PacketTunnel/PacketTunnelProvider.swift", "defaultConfig()", "defaultConfg()", "'defaultConfg'"),
    ("PacketTunnel/PacketTunnelProvider.swift", "config.stateDir", "config.stateDirectory", "'stateDirectory'"),
    ("PacketTunnel/PacketTunnelProvider.swift", "logger: OSLogSink()", "log: OSLogSink()", "(token:config:secrets:protector:log:)"),
    ("PacketTunnel/NetworkSettings.swift", "settings.ipv4Address", "settings.ipv4Adress", "'ipv4Adress'"),
    ("PacketTunnel/NetworkSettings.swift", "mask($0.prefixLen)", "mask($0.prefixLength)", "'prefixLength'"),
    ("VeilKit/Sources/VeilKit/KeychainSecretStore.swift", "func load(name: String)",
     "func load(key: String)", "does not implement SecretStore.load(name: String)"),
    ("VeilKit/Sources/VeilKit/OSLogSink.swift", "func log(level: LogLevel,", "func log(level: Int,", "does not implement LogSink.log(level: LogLevel"),
    ("VeilKit/Sources/VeilKit/TunnelMessages.swift", ".NotRunning(let detail)", ".notRunning(let detail)", "'notRunning'"),
    ("VeilKit/Sources/VeilKit/TunnelMessages.swift", ".InvalidConfig(let field, let detail)",
     ".InvalidConfig(let detail)", "binds 1"),
    ("VeilKit/Sources/VeilKit/TunnelMessages.swift", "p.relayReason", "p.relayReasons", "'relayReasons'"),
    ("VeilKit/Sources/VeilKit/KeychainSecretStore.swift", "VeilError.SecretStore(detail:",
     "VeilError.SecretStore(message:", "(message:)"),
    ("App/ContentView.swift", "veilVersion()", "veilVerison()", "'veilVerison'"),
]


def self_test(bindings: str, sources: str) -> int:
    me = os.path.abspath(__file__)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="check-swift-") as tmp:
        copy = os.path.join(tmp, "ios")
        shutil.copytree(sources, copy, ignore=shutil.ignore_patterns("*.xcframework", ".build", "build"))
        cmd = [sys.executable, me, "--bindings", bindings, "--sources", copy, "--root", tmp, "--quiet"]
        clean = subprocess.run(cmd, capture_output=True, text=True)
        if clean.returncode != 0:
            print(f"self-test: the unchanged copy fails:\n{clean.stdout}{clean.stderr}")
            return 1
        for rel, old, new, expect, *anchor_ in MUTATIONS:
            anchor = anchor_[0] if anchor_ else None  # the line reported, when not the changed one
            path = os.path.join(copy, rel)
            with open(path, encoding="utf-8") as f:
                original = f.read()
            if old not in original:
                print(f"self-test: {rel} no longer contains {old!r}; update MUTATIONS in {me}")
                failures += 1
                continue
            at = original.index(anchor) if anchor else original.index(old)
            line = original.count("\n", 0, at) + 1
            with open(path, "w", encoding="utf-8") as f:
                f.write(original.replace(old, new, 1))
            r = subprocess.run(cmd, capture_output=True, text=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(original)
            where = f"ios/{rel}:{line}:"
            reported = [ln for ln in r.stdout.splitlines() if ln.startswith(where) and expect in ln]
            if r.returncode != 1 or not reported:
                print(f"self-test: {rel}: {old!r} -> {new!r} was not reported at {where} naming {expect}"
                      f" (exit {r.returncode}):\n{r.stdout}{r.stderr}")
                failures += 1
            else:
                print(f"self-test: caught {reported[0]}")
    print(f"self-test: {len(MUTATIONS) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bindings", required=True, help="the generated veil_ffi.swift")
    ap.add_argument("--sources", required=True, help="the app's Swift sources (ios/)")
    ap.add_argument("--root", default=".", help="paths in reports are relative to this")
    ap.add_argument("--quiet", action="store_true", help="report problems only")
    ap.add_argument("--self-test", action="store_true",
                    help="check that misspelled copies of the sources fail")
    a = ap.parse_args()
    if a.self_test:
        return self_test(os.path.abspath(a.bindings), os.path.abspath(a.sources))
    return run(a.bindings, a.sources, a.root, a.quiet)


if __name__ == "__main__":
    sys.exit(main())
