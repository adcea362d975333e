"""Mutants of a Python module: small changes to its function bodies, and swapping one into the running interpreter.

A mutant changes one operator or constant inside one function body (module-level code, default
values, decorators, annotations, docstrings and strings are left alone). Applying it compiles
the changed module and puts the changed code object into the live function (`__code__`), so
every reference to the function, however imported, runs the mutant; `restore` puts the
original back. Nested functions are compiled as part of their outermost function, so a change
inside a closure applies through it.
"""

import ast
import copy
import functools
import importlib
import inspect
import linecache
import types
from dataclasses import dataclass

# operator swaps, after mutmut's and Offutt's sets of "relational, arithmetic, logical" operator replacements
_BINARY = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitAnd,
}
_COMPARE = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BOOLEAN = {ast.And: ast.Or, ast.Or: ast.And}


@dataclass(frozen=True)
class Mutant:
    """One change: the `index`-th node of `ast.walk` over the module, changed by `kind`."""

    module: str  # dotted module name
    function: str  # qualified name of the outermost function holding the change
    index: int  # position of the changed node in ast.walk(module tree)
    kind: str  # what the change does, e.g. "Add -> Sub", "1 -> 2", "drop USub", "value -> None"
    line: int  # line of the statement holding the change (coverage counts statements)
    before: str  # the changed node's source, before and after
    after: str

    @property
    def name(self) -> str:
        return f"{self.module}:{self.line}:{self.index}:{self.kind}"


def _mutations(node):
    """[(kind, function that changes a copy of `node` in place)] for one AST node."""
    found = []
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINARY:
        new = _BINARY[type(node.op)]
        found.append((f"{type(node.op).__name__} -> {new.__name__}", lambda n, new=new: setattr(n, "op", new())))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
        found.append((f"drop {type(node.op).__name__}", None))  # replaced by its operand: see _replacement
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _COMPARE:
                new = _COMPARE[type(op)]

                def change(n, i=i, new=new):
                    n.ops[i] = new()

                found.append((f"{type(op).__name__} -> {new.__name__}", change))
    elif isinstance(node, ast.BoolOp):
        new = _BOOLEAN[type(node.op)]
        found.append((f"{type(node.op).__name__} -> {new.__name__}", lambda n, new=new: setattr(n, "op", new())))
    elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
        value = node.value
        new_value = (not value) if isinstance(value, bool) else value + 1
        found.append((f"{value!r} -> {new_value!r}", lambda n, v=new_value: setattr(n, "value", v)))
    elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            found.append(
                ("value -> None", lambda n: setattr(n, "value", ast.copy_location(ast.Constant(None), n.value)))
            )
    elif isinstance(node, ast.Break):
        found.append(("break -> continue", None))
    elif isinstance(node, ast.Continue):
        found.append(("continue -> break", None))
    return found


def _skipped_subtrees(tree):
    """ids of nodes never mutated inside function bodies: f-strings and annotations (strings and docstrings have no
    mutation; decorators, arguments and default values lie outside the bodies `_function_map` walks)."""
    skipped = set()
    for node in ast.walk(tree):
        part = node if isinstance(node, ast.JoinedStr) else node.annotation if isinstance(node, ast.AnnAssign) else None
        if part is not None:
            skipped.update(id(n) for n in ast.walk(part))
    return skipped


def _function_map(tree):
    """{id(node): (qualified name of the outermost function, line of the innermost statement)} inside function bodies."""
    located = {}

    def visit(node, scope, outermost, line):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{scope}.{child.name}" if scope else child.name
                if outermost is None and isinstance(child, ast.ClassDef):
                    visit(child, name, None, None)
                else:  # a nested def's qualname carries "<locals>": only its outermost function is patched
                    for statement in child.body:
                        visit_statement(statement, name, outermost or name)
            elif outermost is not None:
                child_line = child.lineno if isinstance(child, ast.stmt) else line
                located[id(child)] = (outermost, child_line)
                visit(child, scope, outermost, child_line)
            else:
                visit(child, scope, None, None)

    def visit_statement(statement, scope, outermost):
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            visit(ast.Module(body=[statement], type_ignores=[]), scope, outermost, statement.lineno)
            return
        located[id(statement)] = (outermost, statement.lineno)
        visit(statement, scope, outermost, statement.lineno)

    visit(tree, "", None, None)
    return located


def outermost_functions(source: str) -> dict:
    """{qualified name: (first line, last line)} of each function defined at module level or in a module-level class."""
    found = {}

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            name = f"{scope}.{getattr(child, 'name', '')}" if scope else getattr(child, "name", "")
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[name] = (child.lineno, child.end_lineno)
            elif isinstance(child, ast.ClassDef):
                visit(child, name)
            elif not isinstance(child, ast.expr):
                visit(child, scope)

    visit(ast.parse(source), "")
    return found


def find_mutants(module_name: str) -> list[Mutant]:
    """Every mutant of the function bodies of the importable module `module_name`, in a fixed order."""
    source = inspect.getsource(importlib.import_module(module_name))
    return mutants_of_source(source, module_name)


def mutants_of_source(source: str, module_name: str) -> list[Mutant]:
    """Every mutant of `source`'s function bodies (see `find_mutants`)."""
    tree = ast.parse(source)
    skipped = _skipped_subtrees(tree)
    located = _function_map(tree)
    mutants = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skipped or id(node) not in located:
            continue
        function, line = located[id(node)]
        for kind, _ in _mutations(node):
            after = ast.unparse(_mutated_node(node, kind))
            mutants.append(Mutant(module_name, function, index, kind, line, _short(ast.unparse(node)), _short(after)))
    return mutants


def _short(text, limit=80):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nth(tree, index):
    for i, node in enumerate(ast.walk(tree)):
        if i == index:
            return node
    raise IndexError(index)


def _mutated_node(node, kind):
    """A changed copy of `node` (or the node that takes its place), `node` itself untouched."""
    return _replacement(copy.deepcopy(node), kind)


def _replacement(node, kind):
    """The node that takes `node`'s place (after changing `node` in place where the change is an attribute)."""
    if kind.startswith("drop "):
        return node.operand
    if kind == "break -> continue":
        return ast.copy_location(ast.Continue(), node)
    if kind == "continue -> break":
        return ast.copy_location(ast.Break(), node)
    for found_kind, change in _mutations(node):
        if found_kind == kind:
            change(node)
            return node
    raise ValueError(f"{kind!r} does not apply to {ast.dump(node)[:80]}")


def _code_objects(code):
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def _unwrapped_candidates(obj):
    """The plain functions behind a descriptor, tf.function, lru_cache or functools.wraps wrapper."""
    seen = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        if isinstance(item, (staticmethod, classmethod)):
            stack.append(item.__func__)
        elif isinstance(item, property):
            stack.extend([item.fget, item.fset, item.fdel])
        else:
            stack.append(getattr(item, "__wrapped__", None))
            stack.append(getattr(item, "python_function", None))  # tf.function
    return [item for item in seen if isinstance(item, types.FunctionType)]


def mutated_source(source: str, mutant: Mutant) -> str:
    """`source` with `mutant` applied as a text edit that keeps every line where it was.

    The changed expression is put in parentheses padded with newlines to the lines it replaces,
    so that the compiled code's line numbers, and the source AutoGraph reads back for a function
    converted inside a tf.function, match the mutant line for line.
    """
    node = _nth(ast.parse(source), mutant.index)
    if mutant.kind == "value -> None":
        return _replace(source, node.value, "None")
    if mutant.kind in ("break -> continue", "continue -> break"):
        return _replace(source, node, mutant.kind.split()[-1], parenthesise=False)
    if isinstance(node, ast.AugAssign):  # a statement: swap the operator token only
        old, new = (_TOKENS[type(node.op)] + "=", _TOKENS[_BINARY[type(node.op)]] + "=")
        lines = source.splitlines(keepends=True)
        row = node.target.end_lineno - 1
        line = lines[row].encode()
        head, tail = line[: node.target.end_col_offset], line[node.target.end_col_offset :]
        if old.encode() not in tail:
            raise ValueError(f"cannot find {old!r} after the target on line {row + 1}")
        lines[row] = (head + tail.replace(old.encode(), new.encode(), 1)).decode()
        return "".join(lines)
    return _replace(source, node, ast.unparse(_mutated_node(node, mutant.kind)))


_TOKENS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
}


def _replace(source, node, text, parenthesise=True):
    """`source` with `node`'s text replaced by `text`, padded to the same number of lines (AST offsets are UTF-8 bytes)."""
    lines = source.splitlines(keepends=True)
    first, last = node.lineno - 1, node.end_lineno - 1
    head = lines[first].encode()[: node.col_offset]
    tail = lines[last].encode()[node.end_col_offset :]
    padding = "\n" * (last - first)
    if padding and not parenthesise:
        raise ValueError("a multi-line statement cannot be replaced in place")
    middle = f"({text}{padding})" if parenthesise else text
    lines[first : last + 1] = [head.decode() + middle + tail.decode()]
    return "".join(lines)


class Patch:
    """`mutant` applied to the running interpreter until `restore()` (or the end of a `with` block).

    The mutant's code object replaces the live function's, and `linecache` serves the mutated
    source under the code's file name meanwhile (AutoGraph converts a function from its source).
    """

    def __init__(self, mutant: Mutant):
        self.mutant = mutant
        module = importlib.import_module(mutant.module)
        self._module = module
        self._filename = inspect.getsourcefile(module)
        with open(self._filename, encoding="utf-8") as handle:
            original = handle.read()
        text = mutated_source(original, mutant)
        if text == original:
            raise RuntimeError(f"{mutant.name} changes nothing")
        # AutoGraph refreshes linecache from disk for a module's own file, so the mutant's code
        # names a file of its own, whose lines linecache serves from memory
        self._mutant_file = f"{self._filename}.mutant"
        compiled = compile(text, self._mutant_file, "exec", dont_inherit=True)
        new_codes = [c for c in _code_objects(compiled) if c.co_qualname == mutant.function]
        replacements = []  # (live function, its mutant code)
        for function in self._live_functions(module, mutant.function):
            matching = [c for c in new_codes if c.co_firstlineno == function.__code__.co_firstlineno]
            if len(matching) != 1:
                raise RuntimeError(f"cannot match the code of {mutant.module}.{mutant.function}")
            if matching[0].co_freevars != function.__code__.co_freevars:
                raise RuntimeError(f"the mutant of {mutant.module}.{mutant.function} has other free variables")
            replacements.append((function, matching[0]))
        if not replacements:
            raise RuntimeError(f"no live function {mutant.module}.{mutant.function}")
        self._patched = [(function, function.__code__) for function, _ in replacements]  # (function, original code)
        for function, code in replacements:
            function.__code__ = code
        linecache.cache[self._mutant_file] = (len(text), None, text.splitlines(keepends=True), self._mutant_file)
        _clear_caches(module)

    @staticmethod
    def _live_functions(module, qualname):
        owner = module
        *path, last = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        raw = owner.__dict__[last] if last in getattr(owner, "__dict__", {}) else getattr(owner, last)
        return [f for f in _unwrapped_candidates(raw) if f.__code__.co_qualname == qualname]

    def restore(self):
        for function, code in self._patched:
            function.__code__ = code
        self._patched = []
        linecache.cache.pop(self._mutant_file, None)
        _clear_caches(self._module)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()


def _clear_caches(module):
    """Empty the module's functools caches, which would otherwise answer with results computed by another version."""
    for value in vars(module).values():
        if isinstance(value, functools._lru_cache_wrapper):
            value.cache_clear()
