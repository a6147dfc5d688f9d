"""Checks a rule's code when the :class:`~fastopt.rules.Rule` is defined, and reports a
mistake at the rule's own file and line.

Without this a typo surfaced only in the generated ``rules.pyx`` (once per generated
loop), a misspelt state name silently became a temporary, and a never-assigned state
silently stayed constant. The code is Python syntax (Cython accepts the same
assignments and conditional expressions), so :mod:`ast` sees what the kernel will do.
"""
import ast
import linecache
import os
import sys

from ._layout import COMMON_SCALARS

#: libm functions a body or the scalars may call; the generator cimports exactly these
#: and maps them to the float32 forms (``sqrtf``) in float32 kernels.
FUNCTIONS = ("sqrt", "fabs", "exp", "log")

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(_HERE))


class RuleError(ValueError):
    """A mistake in a rule's declaration; the message starts ``path:line:`` like a compiler's."""


def definition_site():
    """``(filename, line)`` of the statement that defined the rule being checked: the
    first caller outside this package's machinery (dataclass-generated ``__init__``,
    :func:`dataclasses.replace`, ``_spec``/``_check``)."""
    import dataclasses
    skip = {os.path.abspath(dataclasses.__file__), os.path.join(_HERE, "_spec.py"), os.path.join(_HERE, "_check.py")}
    f = sys._getframe(1)
    while f is not None:
        name = f.f_code.co_filename
        if not name.startswith("<") and os.path.abspath(name) not in skip:
            return name, f.f_lineno
        f = f.f_back
    return "<unknown>", 0


def show_path(filename):
    """The file as a reader finds it: relative to the source tree when inside it."""
    full = os.path.abspath(filename)
    if full.startswith(_PACKAGE_ROOT + os.sep):
        return os.path.relpath(full, _PACKAGE_ROOT)
    return filename


def locate(site, text):
    """The line of ``site``'s file holding the code line ``text`` (nearest to the
    defining statement when it appears more than once), else the defining line. A body
    is usually a string literal in the rule's file, or built from string literals, so
    its lines can be found there whatever the string was put together from."""
    filename, call_line = site
    text = text.strip()
    best = None
    if text:
        for number, line in enumerate(linecache.getlines(filename), 1):
            if text in line and (best is None or abs(number - call_line) < abs(best - call_line)):
                best = number
    return best or call_line


def _fail(rule, site, text, message):
    raise RuleError(f"{show_path(site[0])}:{locate(site, text)}: rule {rule.name}: {message}")


#: C and Cython words a rule's names may not take (they would not compile)
RESERVED = frozenset("""auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef union unsigned void
volatile cdef cpdef ctypedef cimport include nogil noexcept gil except object bint Py_ssize_t size_t NULL
sqrtf fabsf expf logf libc""".split()) | set(FUNCTIONS)
#: operators whose C meaning differs from Python's (fmod's sign, truncating division)
_UNSAFE_OPS = {ast.Mod: "%", ast.FloorDiv: "//", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
               ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@", ast.Invert: "~"}
#: float32's smallest normal and largest finite value: other literals change in a float32 kernel
_F32_TINY, _F32_MAX = 1.1754943508222875e-38, 3.4028234663852886e+38


def _literal_problem(stmt):
    """What is wrong with a constant or operator in ``stmt`` for the kernels, or None."""
    parents = {}
    for n in ast.walk(stmt):
        for child in ast.iter_child_nodes(n):
            parents[id(child)] = n
    for n in ast.walk(stmt):
        op = getattr(n, "op", None)
        if type(op) in _UNSAFE_OPS:
            return f"uses '{_UNSAFE_OPS[type(op)]}', whose C meaning differs from Python's"
        if isinstance(n, ast.Constant):
            v = n.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"uses the constant {v!r}; only numbers are allowed"
            if isinstance(v, int):
                # an int may be a whole value (a 0/1 flag), never an operand: C truncates 1 / 3 to 0
                parent = parents.get(id(n))
                if not (isinstance(parent, ast.Assign) or (isinstance(parent, ast.IfExp) and n is not parent.test)):
                    return f"uses the integer literal {v} in arithmetic; write {v}.0 (C divides integers by truncation)"
            elif v != 0.0 and not (_F32_TINY <= abs(v) <= _F32_MAX):
                return f"uses the literal {v!r}, which float32 kernels cannot hold (it becomes 0 or inf)"
    return None


def check_names(rule, site):
    """Names a rule declares: distinct, not C or Cython words, not starting with ``_``
    (the generator's own names do), and outputs not shadowing the common scalars."""
    from ._layout import COMMON_SCALARS as common
    declared = ([("state", n) for n in rule.state] + [("hyper-parameter", h.name) for h in rule.hyper]
                + [("output", n) for n in rule.outputs] + [("scalar state", n) for n, _ in rule.scalar_state])
    for what, name in declared:
        if not name.isidentifier() or name.startswith("_") or name in RESERVED:
            _fail(rule, site, "", f"the {what} name {name!r} is not allowed (an identifier, not starting with '_', "
                                  "not a C/Cython word)")
    for what, names in (("state", rule.state), ("hyper-parameter", rule.hyper_names),
                        ("output", rule.outputs), ("scalar state", tuple(n for n, _ in rule.scalar_state))):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            _fail(rule, site, "", f"{what} names repeat: {dup}")
    clash = (set(rule.hyper_names) | set(rule.outputs) | set(rule.state)) & ({"p", "g", "t", "lr"} | set(common))
    if clash:
        _fail(rule, site, "", f"{sorted(clash)} are the kernel's own names (p, g, t, lr and the common scalars)")
    for state, hyper in rule.state_init.items():
        if state not in rule.state or hyper not in rule.hyper_names:
            _fail(rule, site, "", f"state_init maps {state!r} to {hyper!r}: it needs a state name and a "
                                  "hyper-parameter name")


def _reads(node):
    """Names the expression reads, in source order; calls must be to :data:`FUNCTIONS`."""
    names, calls = [], []
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            calls.append(n)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            names.append(n)
    funcs = {id(c.func) for c in calls}
    bad_calls = [c for c in calls if not (isinstance(c.func, ast.Name) and c.func.id in FUNCTIONS)]
    return [n.id for n in names if id(n) not in funcs], bad_calls


def _statements(rule, site, code, what):
    """``(source text, target name, names read)`` per assignment of ``code``."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        bad = code.splitlines()[e.lineno - 1] if e.lineno else ""
        _fail(rule, site, bad, f"{what} is not valid: {e.msg}")
    out = []
    for stmt in tree.body:
        text = ast.get_source_segment(code, stmt) or ""
        if stmt.end_lineno != stmt.lineno:
            _fail(rule, site, text.split("\n")[0], f"{what}: write each statement on one line")
        problem = _literal_problem(stmt)
        if problem:
            _fail(rule, site, text, f"{what} {problem}")
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        if not isinstance(stmt, (ast.Assign, ast.AugAssign)) or len(targets) != 1 \
                or not isinstance(targets[0], ast.Name):
            _fail(rule, site, text, f"{what} may only assign single names (x = expression), got: {text}")
        reads, bad_calls = _reads(stmt.value)
        if bad_calls:
            _fail(rule, site, text, f"{what} calls {ast.get_source_segment(code, bad_calls[0].func)}(); "
                                    f"only {', '.join(FUNCTIONS)} are available")
        if isinstance(stmt, ast.AugAssign):
            reads.insert(0, targets[0].id)
        out.append((text, targets[0].id, reads))
    return out


def _check_flow(rule, site, statements, what, inputs, readonly, must_assign, kept):
    """Every name read is an input or assigned before; read-only names are not assigned;
    everything in ``must_assign`` is assigned; every temporary (not in ``kept``) is read."""
    known = set(inputs)
    assigned, read_later = {}, set()
    for text, target, reads in statements:
        for name in reads:
            if name not in known:
                hint = " (assigned only further down)" if any(t == name for _, t, _ in statements) else ""
                _fail(rule, site, text, f"{what} reads unknown name '{name}'{hint}; it can read "
                                        f"{', '.join(sorted(inputs))} and the names it assigned before")
            read_later.add(name)
        if target in readonly:
            _fail(rule, site, text, f"{what} assigns '{target}', which it may only read")
        known.add(target)
        assigned.setdefault(target, text)
    for name in must_assign:
        if name not in assigned:
            text = statements[-1][0] if statements else ""
            _fail(rule, site, text, f"{what} never assigns '{name}'")
    for name, text in assigned.items():
        if name not in kept and name not in read_later:
            _fail(rule, site, text, f"{what} assigns '{name}', which nothing reads (a misspelt state name?)")


def check_rule(rule, site):
    """Raise :class:`RuleError` at the offending line if the rule's code is inconsistent
    with its declaration (see :class:`~fastopt.rules.Rule` for what each part sees)."""
    check_names(rule, site)
    sstate = tuple(n for n, _ in rule.scalar_state)
    scalar_inputs = ("t", "lr") + rule.hyper_names + sstate
    statements = _statements(rule, site, rule.scalars, "scalars")
    _check_flow(rule, site, statements, "scalars", scalar_inputs, readonly=("t", "lr") + rule.hyper_names,
                must_assign=tuple(o for o in rule.outputs if o not in rule.hyper_names) + sstate,
                kept=set(rule.outputs) | set(sstate))
    # sigma (the noise's scale, a double) is the generator's: read in a float32 body it
    # would promote the arithmetic to double
    body_inputs = ("p", "g") + rule.state + tuple(rule.outputs) + tuple(c for c in COMMON_SCALARS if c != "sigma")
    statements = _statements(rule, site, rule.body, "body")
    _check_flow(rule, site, statements, "body", body_inputs, readonly=("g",) + tuple(rule.outputs) + COMMON_SCALARS,
                must_assign=("p",) + rule.state, kept={"p"} | set(rule.state))


def line_origins(rule, site, code):
    """``{line index in code: line in the rule's file}`` for each statement of ``code``."""
    tree = ast.parse(code)
    return {stmt.lineno - 1: locate(site, ast.get_source_segment(code, stmt) or "") for stmt in tree.body}
