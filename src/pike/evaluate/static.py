"""Evaluator step 1: static checks and tags. Nothing here runs candidate code.

Threat model (docs/architecture.md, "The evaluator's protocol"): an LLM that reward-hacks (code that passes the checks without
doing the work) and accidents. Not a determined human attacker: the rules are plain and aim at few false
positives on legitimate optimisation code; the behavioural checks of later steps are the real defence.

Every dotted name in the candidate is resolved through its import aliases (``import torch as T`` makes
``T.allclose`` read as ``torch.allclose``), then matched against the tables below. A pattern covers its
sub-attributes too (``torch.hub`` covers ``torch.hub.load``) and may end in a ``*`` glob.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Iterable

from pike.astparse import parse

# --- rule tables -------------------------------------------------------------------------------------

# Modules whose attributes a candidate may not assign, delete or setattr: patching them can fake a
# comparison (torch.allclose), a clock (time.perf_counter) or the work itself (torch.Tensor.clone).
PROTECTED_ROOTS = {"torch", "time", "timeit", "triton", "numpy", "builtins", "math", "os", "sys"}

# ...except these documented knobs, which only select algorithms or precision (precision is tagged).
ALLOWED_SETTINGS = (
    "torch.backends.cuda.matmul.allow_tf32", "torch.backends.cuda.matmul.fp32_precision",
    "torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction",
    "torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction",
    "torch.backends.cudnn.allow_tf32", "torch.backends.cudnn.benchmark", "torch.backends.cudnn.deterministic",
    "torch.backends.cudnn.*.fp32_precision", "torch.backends.fp32_precision",
    "torch._inductor.config.*", "torch._dynamo.config.*",
    "os.environ",  # os.environ[...] = ...: setting the environment is fine
)

_PROCESS = "starts threads or processes"
_FILES = "reads files"
_CODE = "loads code"
_INTROSPECTION = "uses interpreter introspection"

# Top-level module names that may not be imported at all.
BANNED_IMPORTS = {
    **dict.fromkeys(("threading", "_thread", "concurrent", "multiprocessing", "asyncio", "subprocess",
                     "signal", "socket", "ctypes", "pty", "shutil"), _PROCESS),
    **dict.fromkeys(("glob", "pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle",
                     "joblib"), _FILES),
    **dict.fromkeys(("importlib", "runpy", "imp", "pkgutil", "zipimport", "code", "codeop"), _CODE),
    **dict.fromkeys(("inspect", "gc", "builtins", "__builtin__"), _INTROSPECTION),
    # the evaluator runs in the candidate's process too: patched, it could drop checks or fake timings
    "pike": "imports PIKE's own evaluator",
}

# Dotted names (after alias resolution) that may not be referenced, called or not.
BANNED_NAMES = {
    **dict.fromkeys(("os.fork", "os.forkpty", "os.system", "os.popen", "os.spawn*", "os.posix_spawn*",
                     "os.exec*", "os.kill", "os.killpg", "os._exit", "torch.multiprocessing"), _PROCESS),
    **dict.fromkeys(("open", "io.open", "io.FileIO", "os.open", "os.read", "os.fdopen", "os.chdir",
                     "os.listdir", "os.scandir", "os.walk", "numpy.load", "numpy.fromfile", "numpy.loadtxt",
                     "numpy.genfromtxt", "numpy.memmap", "torch.load", "torch.from_file", "torch.jit.load",
                     "torch.hub", "torch.package"), _FILES),
    **dict.fromkeys(("exec", "eval", "compile", "__import__", "sys.path", "sys.meta_path", "sys.path_hooks",
                     "torch.ops.load_library", "torch.classes.load_library"), _CODE),
    **dict.fromkeys(("sys.modules", "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
                     "__builtins__", "torch._C._set*", "torch._C._cuda_set*"), _INTROSPECTION),
}

# Attribute names banned on any receiver: frame, closure and class-graph walks.
BANNED_ATTRS = {"__subclasses__", "__globals__", "__code__", "__closure__", "__builtins__",
                "f_back", "f_locals", "f_globals", "f_code", "tb_frame", "gi_frame", "cr_frame"}
FILE_METHODS = {"read_text", "read_bytes"}  # pathlib reads, whatever the receiver
NAMESPACE_FUNCS = {"globals", "locals", "vars"}
NAMESPACE_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
SETATTR_FUNCS = {"setattr", "delattr", "object.__setattr__", "object.__delattr__", "type.__setattr__"}

# A string constant that matches this is C/C++/CUDA source (checked and tagged like code).
CPP_MARKERS = re.compile(r'#include|__global__|__device__|torch::|at::|PYBIND11|TORCH_LIBRARY|std::|extern "C"')
CPP_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
CPP_BANNED = [
    (re.compile(r"std::j?thread|pthread_create|std::async\b|\bv?fork\s*\(|\bsystem\s*\(|\bpopen\s*\("
                r"|\bexec[lv]p?e?\s*\(|\bkill\s*\("), _PROCESS),
    # POSIX open( only: not cudaStreamOpen(, not f.open(, not obj->open(.
    (re.compile(r"\bfopen\s*\(|std::[io]?fstream|(?<![\w.>])open\s*\("), _FILES),
    (re.compile(r"\bdl(open|sym)\b|\b(get|set|put)env\b|PyImport_|PyRun_|Py_CompileString|PyEval_Eval"),
     _CODE),
    (re.compile(r"cudaDeviceReset|cudaProfiler(Start|Stop)|(?i:cupti)"), "touches the device or profiler"),
]
CPP_TAGS = [
    (re.compile(r"__global__"), "cuda"),
    (re.compile(r"cudaGraph"), "cuda_graphs"),
    (re.compile(r"__half|\bhalf2\b|kHalf|kFloat16|c10::Half|at::Half"), "fp16"),
    (re.compile(r"(?i:bfloat16)"), "bf16"),
    (re.compile(r"(?i:tf32)"), "tf32"),
    (re.compile(r"(?i:fp8|float8)"), "fp8"),
    (re.compile(r"cudaStreamCreate"), "custom_stream"),
]

# Dotted names that tag the candidate.
NAME_TAGS = [
    ("triton", "triton"),
    ("torch.utils.cpp_extension", "cpp_ext"),
    ("torch.cuda.CUDAGraph", "cuda_graphs"), ("torch.cuda.graph*", "cuda_graphs"),
    ("torch.cuda.make_graphed_callables", "cuda_graphs"),
    ("torch._inductor.config.triton.cudagraphs", "cuda_graphs"),
    ("torch.float16", "fp16"), ("torch.half", "fp16"), ("triton.language.float16", "fp16"),
    ("torch.bfloat16", "bf16"), ("triton.language.bfloat16", "bf16"),
    ("torch.float8*", "fp8"), ("triton.language.float8*", "fp8"),
    ("torch.autocast", "autocast"), ("torch.amp.autocast", "autocast"),
    ("torch.cuda.amp.autocast", "autocast"), ("torch.cpu.amp.autocast", "autocast"),
    ("torch.compile", "torch_compile"), ("torch._dynamo", "torch_compile"),
    ("torch.cuda.Stream", "custom_stream"), ("torch.cuda.stream", "custom_stream"),
    ("torch.cuda.ExternalStream", "custom_stream"), ("torch.Stream", "custom_stream"),
]
METHOD_TAGS = {"half": "fp16", "bfloat16": "bf16"}  # x.half(), x.bfloat16()
GRAPHING_COMPILE_MODES = {"reduce-overhead", "max-autotune"}  # max-autotune uses CUDA graphs
CPP_EXT_BUILDERS = {"torch.utils.cpp_extension.load_inline", "torch.utils.cpp_extension.load"}
GENERIC_TASK_MODULES = {"reference", "task", "model"}
# Default names for modules a candidate normally imports under these aliases.
DEFAULT_ALIASES = {"np": "numpy", "tl": "triton.language"}

LOWERED_PRECISION_TAGS = {"fp16", "bf16", "tf32", "fp8", "autocast"}


@dataclass
class StaticReport:
    ok: bool  # False when there is any violation
    violations: list[str] = field(default_factory=list)  # "line 12: patches torch.allclose"
    tags: list[str] = field(default_factory=list)  # sorted
    defines: str | None = None  # "ModelNew" or "Model" (ModelNew preferred), None if neither


def lowered_precision(tags: Iterable[str]) -> bool:
    """True when the candidate computes below strict fp32 (for same-precision reporting)."""
    return bool(LOWERED_PRECISION_TAGS.intersection(tags))


def _matches(name: str, patterns: Iterable[str]) -> str | None:
    """The first pattern that covers dotted ``name`` (the pattern itself or a sub-attribute of it)."""
    for p in patterns:
        if fnmatchcase(name, p) or fnmatchcase(name, p + ".*"):
            return p
    return None


def _const(node: ast.AST | None):
    return node.value if isinstance(node, ast.Constant) else None


def _is_empty_literal(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and not node.value) or (
        isinstance(node, (ast.List, ast.Tuple)) and not node.elts)


def _kwarg(call: ast.Call, name: str, pos: int | None = None) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return call.args[pos] if pos is not None and len(call.args) > pos else None


class _Checker:
    def __init__(self, tree: ast.Module, task_module_names: Iterable[str]):
        self.tree = tree
        self.task_modules = set(task_module_names) | GENERIC_TASK_MODULES
        self.violations: list[tuple[int, str]] = []
        self.tags: set[str] = set()
        self.aliases: dict[str, str] = {}  # local name -> dotted module path
        self.local: set[str] = set()  # names the candidate binds itself (resolve to nothing)

    def add(self, where: ast.AST | int, message: str) -> None:
        item = (where if isinstance(where, int) else getattr(where, "lineno", 1), message)
        if item not in self.violations:
            self.violations.append(item)

    # --- name resolution ---

    def bind_names(self) -> None:
        nodes = list(ast.walk(self.tree))
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:  # ``import a.b`` binds ``a``; ``import a.b as c`` binds ``c`` to ``a.b``
                    top = a.name.split(".")[0]
                    self.aliases[a.asname or top] = a.name if a.asname else top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        # ``t = torch`` / ``F = torch.nn.functional``: assignments that alias a module or its attributes.
        for node in sorted((n for n in nodes if isinstance(n, ast.Assign)), key=lambda n: n.lineno):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if (len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and isinstance(root, ast.Name)
                    and (root.id in self.aliases or root.id in PROTECTED_ROOTS)):
                self.aliases.setdefault(node.targets[0].id, self.chain(node.value))
        for node in nodes:
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.local.add(node.id)
            elif isinstance(node, ast.arg):
                self.local.add(node.arg)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.local.add(node.name)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.local.add(node.name)
        self.local -= set(self.aliases)
        for name, module in DEFAULT_ALIASES.items():
            if name not in self.local:
                self.aliases.setdefault(name, module)

    def chain(self, node: ast.AST) -> str | None:
        """Dotted name of a Name/Attribute chain after aliasing; None if rooted in a local or an expression."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id in self.local:
            return None
        return ".".join([self.aliases.get(node.id, node.id), *reversed(parts)])

    # --- rules ---

    def check_import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif node.module and not node.level:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:  # relative import: ``from .model import X`` or ``from . import task``
            modules = [node.module] if node.module else [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names) and any(
                p.startswith(f"{node.module}.") for p in BANNED_NAMES):  # would hide os.system & co.
            self.add(node, f"star-imports {node.module}, which holds banned names")
        for module in modules:
            top = module.split(".")[0]
            if top in self.task_modules:
                self.add(node, f"imports the task module {top!r}")
            elif top in BANNED_IMPORTS:
                self.add(node, f"imports {top} ({BANNED_IMPORTS[top]})")
            elif p := _matches(module, BANNED_NAMES):
                self.add(node, f"imports {module} ({BANNED_NAMES[p]})")
            self.tags.update(tag for pattern, tag in NAME_TAGS if _matches(module, [pattern]))

    def check_name(self, node: ast.AST, name: str) -> None:
        if p := _matches(name, BANNED_NAMES):
            self.add(node, f"uses {name} ({BANNED_NAMES[p]})")
        self.tags.update(tag for pattern, tag in NAME_TAGS if _matches(name, [pattern]))

    def check_setting(self, node: ast.AST, target: str, value: ast.AST | None) -> None:
        """An assignment/deletion/setattr of dotted ``target``: patching unless it is an allowed knob."""
        if target.split(".")[0] not in PROTECTED_ROOTS:
            return
        if not _matches(target, ALLOWED_SETTINGS) or target.startswith("os.environ."):
            self.add(node, f"patches {target}")
            return
        v = _const(value)
        if target.endswith(".allow_tf32") and v is not False:
            self.tags.add("tf32")
        if target.endswith(".fp32_precision") and (v == "tf32" or not isinstance(v, str)):
            self.tags.add("tf32")
        if target == "torch._inductor.config.triton.cudagraphs" and v is not False:
            self.tags.add("cuda_graphs")

    def check_target(self, target: ast.AST, value: ast.AST | None) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self.check_target(t, None)
        elif isinstance(target, ast.Starred):
            self.check_target(target.value, None)
        elif isinstance(target, ast.Attribute) and (name := self.chain(target)):
            self.check_setting(target, name, value)
        elif isinstance(target, ast.Subscript):
            base = target.value
            if isinstance(base, ast.Call) and self.chain(base.func) in NAMESPACE_FUNCS:
                self.add(target, f"mutates {self.chain(base.func)}()")
            elif (name := self.chain(base)) and name.split(".")[0] in PROTECTED_ROOTS and name != "os.environ":
                self.add(target, f"patches {name}[...]")

    def check_call(self, node: ast.Call) -> None:
        func = self.chain(node.func)
        args = node.args
        if func in SETATTR_FUNCS and len(args) >= 2 and (obj := self.chain(args[0])):
            attr = _const(args[1])
            target = f"{obj}.{attr}" if isinstance(attr, str) else obj
            self.check_setting(node, target, args[2] if len(args) > 2 else None)
        if func in {"getattr", "setattr", "delattr", "hasattr"} and len(args) >= 2:
            attr = _const(args[1])
            if attr in BANNED_ATTRS:
                self.add(node, f"uses {attr} ({_INTROSPECTION})")
            elif isinstance(attr, str) and (obj := self.chain(args[0])):
                self.check_name(node, f"{obj}.{attr}")
        if isinstance(node.func, ast.Attribute):
            method, receiver = node.func.attr, node.func.value
            if method in FILE_METHODS or (method == "open" and self._is_path(receiver)):
                self.add(node, f"calls .{method}() ({_FILES})")
            if method in NAMESPACE_MUTATORS and isinstance(receiver, ast.Call) and (
                    self.chain(receiver.func) in NAMESPACE_FUNCS):
                self.add(node, f"mutates {self.chain(receiver.func)}()")
            if method in METHOD_TAGS and not args:
                self.tags.add(METHOD_TAGS[method])
        if func is None:
            return
        if func == "triton.language.dot":
            precision = _const(_kwarg(node, "input_precision", 3))
            allow_tf32 = _const(_kwarg(node, "allow_tf32", 4))
            if precision != "ieee" and not (precision is None and allow_tf32 is False):
                self.tags.add("tf32")  # Triton's fp32 dot defaults to TF32 on GPU
        elif func == "torch.set_float32_matmul_precision" and _const(_kwarg(node, "precision", 0)) != "highest":
            self.tags.add("tf32")
        elif func == "torch.compile":
            if _const(_kwarg(node, "mode")) in GRAPHING_COMPILE_MODES:
                self.tags.add("cuda_graphs")
            options = _kwarg(node, "options")
            if isinstance(options, ast.Dict) and any(
                    _const(k) == "triton.cudagraphs" and _const(v) is not False
                    for k, v in zip(options.keys, options.values)):
                self.tags.add("cuda_graphs")
        elif _matches(func, ["torch.autocast", "torch.*.autocast"]) and _kwarg(node, "dtype") is None:
            # autocast's default dtype: bf16 on CPU, fp16 on CUDA
            device = "cpu" if "cpu" in func else _const(_kwarg(node, "device_type", 0))
            self.tags.add("bf16" if device == "cpu" else "fp16")
        elif func in CPP_EXT_BUILDERS:
            cuda = _kwarg(node, "cuda_sources", 2 if func.endswith("_inline") else None)
            sources = [_const(n) for n in ast.walk(node) if isinstance(_const(n), str)]
            if (cuda is not None and not _is_empty_literal(cuda)) or any(
                    s.endswith((".cu", ".cuh")) for s in sources):
                self.tags.add("cuda")

    def _is_path(self, node: ast.AST) -> bool:
        """Whether ``node`` is a pathlib object: ``Path(...)``, ``Path(...) / "x"``, ``pathlib.Path``."""
        while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            node = node.left
        if isinstance(node, ast.Call):
            node = node.func
        name = self.chain(node) or ""
        return name.startswith("pathlib.")

    def check_cpp(self, text: str, node: ast.AST, cpp_ext: bool) -> None:
        # Strings glued into C++ by concatenation may lack a marker; in a cpp_extension candidate a
        # statement terminator is enough to treat them as code.
        if not (CPP_MARKERS.search(text) or (cpp_ext and ";" in text)):
            return
        # Comments never run: blank them (keeping newlines, so line numbers hold).
        text = CPP_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        for pattern, reason in CPP_BANNED:
            if m := pattern.search(text):
                line = getattr(node, "lineno", 1) + text.count("\n", 0, m.start())
                self.add(line, f"C++ source uses {m.group(0).strip()!r} ({reason})")
        self.tags.update(tag for pattern, tag in CPP_TAGS if pattern.search(text))

    def run(self) -> None:
        self.bind_names()
        # Only the outermost Attribute of a chain is resolved: ``torch.cuda.Stream``, not ``torch.cuda``.
        inner = {id(n.value) for n in ast.walk(self.tree) if isinstance(n, ast.Attribute)}
        strings: list[tuple[str, ast.AST]] = []
        # Docstrings are never compiled; f-string parts are read with their f-string.
        skip = {id(n.body[0].value) for n in ast.walk(self.tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.check_import(node)
            elif isinstance(node, (ast.Name, ast.Attribute)) and id(node) not in inner:
                if isinstance(node.ctx, ast.Load) and (name := self.chain(node)):
                    self.check_name(node, name)
            if isinstance(node, ast.Attribute):
                if node.attr in BANNED_ATTRS:
                    self.add(node, f"uses {node.attr} ({_INTROSPECTION})")
                elif node.attr == "__dict__" and self.chain(node.value):
                    self.add(node, f"uses {self.chain(node.value)}.__dict__ ({_INTROSPECTION})")
            elif isinstance(node, ast.Call):
                self.check_call(node)
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                for target in getattr(node, "targets", None) or [node.target]:
                    self.check_target(target, node.value)
            elif isinstance(node, ast.Delete):
                for target in node.targets:
                    self.check_target(target, None)
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                self.check_target(node.target, None)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                self.check_target(node.optional_vars, None)
            elif isinstance(node, ast.JoinedStr):
                skip.update(id(v) for v in node.values)
                strings.append(("".join(v.value if isinstance(v, ast.Constant) else " " for v in node.values),
                                node))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                strings.append((node.value, node))
        for text, node in strings:
            self.check_cpp(text, node, "cpp_ext" in self.tags)


def _defines(tree: ast.Module) -> str | None:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):  # ``ModelNew = FusedModel``
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return next((n for n in ("ModelNew", "Model") if n in names), None)


def check_source(source: str, *, task_module_names: Iterable[str] = ()) -> StaticReport:
    """Static checks and tags for one candidate's source (evaluator step 1)."""
    try:
        tree = parse(source)
    except SyntaxError as e:
        return StaticReport(False, [f"line {e.lineno or 1}: syntax error: {e.msg}"], [], None)
    except ValueError as e:  # e.g. null bytes
        return StaticReport(False, [f"line 1: cannot parse: {e}"], [], None)
    checker = _Checker(tree, task_module_names)
    checker.run()
    defines = _defines(tree)
    if defines is None:
        checker.violations.append((1, "defines neither class ModelNew nor class Model"))
    violations = [f"line {line}: {msg}" for line, msg in sorted(checker.violations, key=lambda v: v[0])]
    return StaticReport(not violations, violations, sorted(checker.tags), defines)
