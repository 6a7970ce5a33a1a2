"""The TensorRT names dfq's code uses, each with the TensorRT majors whose execution reaches it.

This file owns the code side of ``trt_api_check.py``: :func:`collect_uses` reads a module's AST (it
imports nothing) and returns one :class:`Use` per name looked up on TensorRT.

What counts as a use:

* attribute chains on the module object (``trt.Logger.WARNING``): the module is ``trt`` (parameter,
  ``import tensorrt as trt`` or ``trt = import_tensorrt()``);
* attributes read or written on TensorRT objects, i.e. values produced by calling or reading
  something on the module or on another TensorRT object (``builder.create_network``,
  ``self.context.execute_async_v3``, ``config.profiling_verbosity = ...``);
* ``hasattr(<TensorRT object>, "name")`` guards;
* methods a class defines when its base is a TensorRT class (calibrator callbacks TensorRT calls by
  name, e.g. ``get_batch``).

Per-version paths: every use carries the TensorRT majors whose execution reaches it, found from
``if`` tests on the major version (``trt_major(trt) >= 11``, ``major == 10`` with
``major = trt_major(trt)``) and the names a ``hasattr`` test requires; after an ``if`` whose body
ends in ``return``/``raise`` the rest of the block gets the negated condition. Tests the checker
cannot read narrow nothing, so a name is checked on at least every version that runs it (an
unknown test can cause a false mismatch, never a false pass).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ALL_MAJORS = frozenset({10, 11})
MODULE_NAME = "tensorrt"
MODULE_LOADERS = {"import_tensorrt"}  # functions returning the tensorrt module
MAJOR_FUNCS = {"trt_major"}  # functions returning the module's major version


@dataclass(frozen=True)
class State:
    """What is known on a path: the TensorRT majors that run it, the names ``hasattr`` tests required."""

    majors: frozenset[int] = ALL_MAJORS
    requires: frozenset[str] = frozenset()

    def refine(self, other: State | None) -> State:
        if other is None:
            return self
        return State(self.majors & other.majors, self.requires | other.requires)


@dataclass(frozen=True)
class Use:
    """One name the code looks up on TensorRT, where, and on which path."""

    name: str
    kind: str  # "module" | "object" | "hasattr" | "override"
    where: str  # "export/runtime.py:151 TrtPredictor.__init__"
    state: State

    def applies_to(self, major: int, names: set[str]) -> bool:
        return major in self.state.majors and self.state.requires <= names


_COMPARE: dict[type, Callable[[int, int], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


@dataclass
class _Scope:
    trt: dict[str, bool] = field(default_factory=dict)  # local name -> holds a TensorRT object
    modules: set[str] = field(default_factory=set)  # local names bound to the tensorrt module
    majors: set[str] = field(default_factory=set)  # local names bound to trt_major(trt)
    self_attrs: set[str] = field(default_factory=set)  # self.X attributes holding TensorRT objects

    def child(self) -> _Scope:
        return _Scope(dict(self.trt), set(self.modules), set(self.majors), set())


class _Collector:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.uses: list[Use] = []
        self.func: list[str] = []
        self.reach: dict[str, set[int]] = {}  # function -> majors that reach its TensorRT uses

    # -- recording ---------------------------------------------------------------------------------
    def _use(self, name: str, kind: str, node: ast.AST, state: State) -> None:
        where = f"{self.filename}:{getattr(node, 'lineno', 0)} {'.'.join(self.func) or '<module>'}"
        self.uses.append(Use(name, kind, where, state))
        self.reach.setdefault(".".join(self.func) or "<module>", set()).update(state.majors)

    # -- expressions -------------------------------------------------------------------------------
    def expr(self, node: ast.AST | None, scope: _Scope, state: State) -> bool:
        """Visit ``node`` (recording uses); True when it evaluates to a TensorRT object or the module."""
        if node is None:
            return False
        if isinstance(node, ast.Name):
            return node.id in scope.modules or scope.trt.get(node.id, False)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return node.attr in scope.self_attrs
            if self.expr(node.value, scope, state):
                self._use(node.attr, "object" if not self._on_module(node, scope) else "module", node, state)
                return True
            return False
        if isinstance(node, ast.Call):
            func_trt = self.expr(node.func, scope, state)
            args = [*node.args, *(k.value for k in node.keywords)]
            arg_trt = [self.expr(a, scope, state) for a in args]
            if isinstance(node.func, ast.Name) and node.func.id == "hasattr" and len(node.args) == 2:
                name = node.args[1]
                if arg_trt[0] and isinstance(name, ast.Constant) and isinstance(name.value, str):
                    self._use(name.value, "hasattr", node, state)
            return func_trt
        if isinstance(node, ast.IfExp):
            self.expr(node.test, scope, state)
            return self.expr(node.body, scope, state) | self.expr(node.orelse, scope, state)
        if isinstance(node, ast.Subscript):
            value = self.expr(node.value, scope, state)
            self.expr(node.slice, scope, state)
            return value
        for child in ast.iter_child_nodes(node):
            self.expr(child, scope, state)
        return False

    @staticmethod
    def _on_module(node: ast.Attribute, scope: _Scope) -> bool:
        root: ast.AST = node
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and root.id in scope.modules

    def _is_major(self, node: ast.AST, scope: _Scope) -> bool:
        if isinstance(node, ast.Name):
            return node.id in scope.majors
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in MAJOR_FUNCS
            and len(node.args) == 1
            and self.expr(node.args[0], scope, State())
        )

    def condition(self, node: ast.AST, scope: _Scope) -> tuple[State | None, State | None]:
        """Refinements when ``node`` is true / false (None: nothing known)."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            true, false = self.condition(node.operand, scope)
            return false, true
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v, scope) for v in node.values]
            side = 0 if isinstance(node.op, ast.And) else 1  # and: all true; or: all false
            merged = State()
            for p in parts:
                merged = merged.refine(p[side])
            return (merged, None) if side == 0 else (None, merged)
        if (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and type(node.ops[0]) in _COMPARE
            and isinstance(node.comparators[0], ast.Constant)
            and isinstance(node.comparators[0].value, int)
            and self._is_major(node.left, scope)
        ):
            op, bound = _COMPARE[type(node.ops[0])], node.comparators[0].value
            yes = frozenset(m for m in ALL_MAJORS if op(m, bound))
            return State(majors=yes), State(majors=ALL_MAJORS - yes)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "hasattr"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and self.expr(node.args[0], scope, State())
        ):
            return State(requires=frozenset({node.args[1].value})), None
        return None, None

    # -- statements --------------------------------------------------------------------------------
    def block(self, stmts: Sequence[ast.stmt], scope: _Scope, state: State) -> None:
        for stmt in stmts:
            state = self.stmt(stmt, scope, state)

    def stmt(self, node: ast.stmt, scope: _Scope, state: State) -> State:
        """Visit one statement; returns the state for the statements after it."""
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = scope.child()
            inner.self_attrs = scope.self_attrs
            for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                inner.trt[a.arg] = False
                if a.arg == "trt":
                    inner.modules.add(a.arg)
            self.func.append(node.name)
            self.block(node.body, inner, state)
            self.func.pop()
        elif isinstance(node, ast.ClassDef):
            trt_base = any([self.expr(b, scope, state) for b in node.bases])
            inner = scope.child()
            self.func.append(node.name)
            for item in node.body:
                if trt_base and isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    self._use(item.name, "override", item, state)
                self.stmt(item, inner, state)
            self.func.pop()
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if isinstance(node, ast.Import) and alias.name == MODULE_NAME:
                    scope.modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            value = node.value
            is_trt = self.expr(value, scope, state)
            is_module = (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id in MODULE_LOADERS
            )
            is_major = value is not None and self._is_major(value, scope)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                self._bind(t, scope, state, is_trt, is_module, is_major)
        elif isinstance(node, ast.If):
            self.expr(node.test, scope, state)
            true, false = self.condition(node.test, scope)
            self.block(node.body, scope, state.refine(true))
            self.block(node.orelse, scope, state.refine(false))
            if _ends(node.body):
                return state.refine(false)
            if node.orelse and _ends(node.orelse):
                return state.refine(true)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self.expr(node.iter, scope, state)
            self._bind(node.target, scope, state, False, False, False)
            self.block(node.body, scope, state)
            self.block(node.orelse, scope, state)
        elif isinstance(node, ast.While):
            self.expr(node.test, scope, state)
            self.block(node.body, scope, state)
            self.block(node.orelse, scope, state)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                is_trt = self.expr(item.context_expr, scope, state)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, scope, state, is_trt, False, False)
            self.block(node.body, scope, state)
        elif isinstance(node, ast.Try):
            self.block(node.body, scope, state)
            for h in node.handlers:
                self.block(h.body, scope, state)
            self.block(node.orelse, scope, state)
            self.block(node.finalbody, scope, state)
        else:
            for child in ast.iter_child_nodes(node):
                self.expr(child, scope, state)
        return state

    def _bind(
        self, target: ast.AST, scope: _Scope, state: State, is_trt: bool, is_module: bool, is_major: bool
    ) -> None:
        if isinstance(target, ast.Name):
            scope.trt[target.id] = is_trt
            (scope.modules.add if is_module else scope.modules.discard)(target.id)
            (scope.majors.add if is_major else scope.majors.discard)(target.id)
        elif isinstance(target, ast.Attribute):
            if isinstance(target.value, ast.Name) and target.value.id == "self":
                (scope.self_attrs.add if is_trt else scope.self_attrs.discard)(target.attr)
            elif self.expr(target.value, scope, state):
                self._use(target.attr, "object", target, state)
        elif isinstance(target, ast.Tuple | ast.List):
            for t in target.elts:
                self._bind(t, scope, state, False, False, False)
        else:
            self.expr(target, scope, state)


def _ends(stmts: Sequence[ast.stmt]) -> bool:
    return bool(stmts) and isinstance(stmts[-1], ast.Return | ast.Raise)


def collect_uses(source: str, filename: str = "<source>") -> tuple[list[Use], dict[str, set[int]]]:
    """TensorRT names ``source`` uses, and the majors that reach each function's uses."""
    col = _Collector(filename)
    col.block(ast.parse(source).body, _Scope(), State())
    return col.uses, col.reach
