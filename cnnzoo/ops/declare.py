"""The machinery behind ``library.py``: an operator is declared once, as an :class:`Operator`, and this
module makes a ``torch.ops.cnnzoo.*`` operator of it, with its fake kernel, autograd, forward-mode and
vmap rules, and the two ``autograd.Function`` twins that eager code and ``torch.func`` use.

A declaration gives:

* the **output rule**: a function with the operator's signature (its type hints make the schema) that
  checks the arguments and returns the output's :class:`Output` (size, memory format, dtype). The fake
  kernel is the rule plus an allocation; the real kernel runs the rule, then an implementation;
* the **implementations**: the reference (``conv.py``, ``pool.py``) for every device and dtype, and
  faster ones (:meth:`Operator.implement`) that serve the calls their backend ``applies`` to (the
  compiled C++ kernels: float32 on the CPU). Each is called with the operator's arguments and the
  rule's answer as ``out``, and returns the result; a result in another memory format is copied into
  the rule's. An operator may also take a **route** argument (conv2d's ``algorithm``): a chooser
  (:meth:`Operator.routes`) names the route of each call, only that route's implementations serve it,
  and the kernels are called without that argument. The reference and the implementations declared
  without a route make the default route, ``None``;
* the **formulas**: one gradient and one tangent per differentiable input, by name (:meth:`Operator.grad`,
  :meth:`Operator.tangent`), and a vmap rule. A formula reads the call's arguments by name from a
  :class:`Saved` record: the tensors listed in ``saves`` in full, every other tensor as its shape.

An operator reaches autograd by three routes, all built here from the same formulas (:meth:`Operator.__call__`
picks one per call):

* under ``torch.compile``, ``torch.export`` and ``torch.jit.trace``, the operator itself, with its
  ``register_autograd`` formula (the tracers record it; they would record a Function as an opaque call);
* under a ``torch.func`` transform or forward-mode AD, a ``setup_context``-style Function, the kind
  torch.func accepts (it refuses the wrapper ``register_autograd`` generates, pytorch#170834);
* otherwise a classic ``autograd.Function``, the cheapest per call (about 7 us, against 15-25 us for
  either of the others): it runs the kernel's Python body itself, sparing the dispatcher's round trip,
  unless a dispatch mode or a tensor subclass must see the operator. Where autograd has nothing to
  record (gradients off, as in inference and in a first-order backward, or no argument that wants
  one) the body runs without a Function.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from operator import itemgetter
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd import forward_ad

from ._args import outside_autocast
from .layout import empty, in_format


class Output:
    """What an output rule says of one output: its size, memory format and dtype (None: the dtype of
    the operator's first tensor argument)."""

    __slots__ = ("size", "channels_last", "dtype")

    def __init__(self, size: Sequence[int], channels_last: bool = False, dtype: torch.dtype | None = None) -> None:
        self.size, self.channels_last, self.dtype = size, channels_last, dtype

    def new(self, like: Tensor) -> Tensor:
        """The output, allocated (uninitialised) on ``like``'s device."""
        return empty(like, self.size, self.channels_last, self.dtype)


class Saved(list):
    """A call's arguments by name, for the formulas: non-tensors as given, the tensors the declaration
    saves in full, every other tensor as a record of its shape; then the outputs by name, and ``out``,
    the output rule's answer. A list of all these, read by name through one property per name, in a
    subclass made per operator by :meth:`fields` (a formula reads several names per call, and a
    property over ``itemgetter`` reads one in C)."""

    __slots__ = ()

    @staticmethod
    def fields(names: Sequence[str]) -> type[Saved]:
        if clash := set(names) & set(dir(list)):
            raise ValueError(f"argument names that are list attributes: {sorted(clash)}")
        properties = {name: property(itemgetter(i)) for i, name in enumerate((*names, "out"))}
        return type("Saved", (Saved,), {"__slots__": (), **properties})


class Shape(typing.NamedTuple):
    """An unsaved tensor argument, as the formulas see it."""

    shape: torch.Size


class _Implementation(typing.NamedTuple):
    """A kernel, and which calls it serves: those its backend's ``applies(*tensors)`` accepts (every
    call, without a backend), except where ``unless(*args)`` holds. A kernel with an ``out`` parameter
    receives the output rule's answer."""

    backend: ModuleType | None  # None: every call, run as the reference is (outside autocast)
    unless: Callable[..., bool] | None
    kernel: Callable
    takes_out: bool
    route: str | None

    @classmethod
    def of(cls, backend: ModuleType | None, kernel: Callable, unless=None, route: str | None = None):
        return cls(backend, unless, kernel, "out" in inspect.signature(kernel).parameters, route)


class Operator:
    """One operator, ``torch.ops.cnnzoo.<name>``, declared from its output rule (see the module's doc).
    Calling it calls the operator with autograd, by the cheapest route the context allows."""

    def __init__(
        self,
        rule: Callable,
        reference: Callable,
        saves: Sequence[str] = (),
        outputs: Sequence[str] = ("output",),
        no_grad: Sequence[str] = (),
        route: str | None = None,
    ) -> None:
        self.rule, self.saves, self.outputs = rule, tuple(saves), tuple(outputs)
        self.integer_outputs = tuple(self.outputs.index(name) for name in no_grad)
        self.reference = _Implementation.of(None, reference)
        self.name = f"cnnzoo::{rule.__name__}"
        parameters = inspect.signature(rule).parameters.values()
        self.params = tuple(p.name for p in parameters)
        self.defaults = tuple(p.default for p in parameters if p.default is not p.empty)
        hints = typing.get_type_hints(rule)
        self.tensors = tuple(i for i, p in enumerate(self.params) if "Tensor" in str(hints[p]))
        self.many = len(self.outputs) > 1
        self.saved_type = Saved.fields((*self.params, *self.outputs))
        names = (*self.params, *self.outputs)
        self.saved_at = tuple(names.index(name) for name in self.saves)
        take = itemgetter(*self.saved_at) if self.saved_at else lambda _: ()
        self.kept = take if len(self.saved_at) != 1 else lambda saved: (take(saved),)
        # the tensors not saved, inputs and outputs, are kept as their shapes: a reference to an output
        # would keep it alive through a cycle (output -> grad_fn -> ctx -> output) that gc cannot see
        self.shapes_at = tuple(
            i for i in (*self.tensors, *range(len(self.params), len(names))) if names[i] not in self.saves
        )
        self.implementations: list[_Implementation] = []
        self.route_at = None if route is None else self.params.index(route)  # the argument that names a route
        self.chooser: Callable[..., str | None] = lambda *args: None
        self.grad_formulas: list[tuple[int, Callable]] = []  # (argument position, formula)
        self.tangents: dict[str, Callable] = {}
        schema = torch.library.infer_schema(rule, mutates_args=())
        custom = torch.library.custom_op(self.name, self.run, mutates_args=(), schema=schema)
        custom.register_fake(self.fake)
        custom.register_autograd(self.backward, setup_context=self.setup_context)
        # private: the OpOverload behind the CustomOpDef (torch.ops.cnnzoo.<name>.default), which the
        # compiled and transformed routes call directly, sparing CustomOpDef.__call__'s Python layer
        self.custom, self.overload = custom, custom._opoverload
        self.eager, self.transformable = _functions(self)

    def __repr__(self) -> str:
        return f"Operator({self.name})"

    # --- declaring ----------------------------------------------------------------------------

    def implement(
        self, backend: ModuleType | None, kernel: Callable | None = None, *, unless=None, route: str | None = None
    ) -> None:
        """Run ``kernel`` (by default the backend's function named like the operator) for the calls of
        ``route`` that ``backend.applies`` to (all tensor arguments; every call, without a backend),
        except those for which ``unless(*args)`` holds."""
        kernel = getattr(backend, self.name.split("::")[1]) if kernel is None else kernel
        self.implementations.append(_Implementation.of(backend, kernel, unless, route))

    def routes(self, chooser: Callable[..., str | None]) -> None:
        """``chooser(*args)`` names the route of a call (None: the default one)."""
        if self.route_at is None:
            raise ValueError(f"{self.name} was declared without a route argument")
        self.chooser = chooser

    def grad(self, name: str) -> Callable:
        """Decorator: ``formula(saved, grad)`` is the gradient with respect to argument ``name``."""

        def register(formula: Callable) -> Callable:
            self.grad_formulas.append((self.params.index(name), formula))
            return formula

        return register

    def tangent(self, name: str) -> Callable:
        """Decorator: ``formula(saved, tangent)`` is the output's tangent from argument ``name``'s."""

        def register(formula: Callable) -> Callable:
            self.tangents[name] = formula
            return formula

        return register

    def linear_in(self, *names: str) -> None:
        """The operator is linear in each of these arguments: the tangent from one is the operator
        itself with the tangent in that argument's place (and no other tensor that is not saved, such as
        a bias, whose tangent is its own)."""
        for name in names:
            self.tangents[name] = functools.partial(self._linear_tangent, self.params.index(name))

    def _linear_tangent(self, at: int, saved: Saved, tangent: Tensor) -> Tensor:
        args = [None if isinstance(a, Shape) else a for a in saved[: len(self.params)]]
        args[at] = tangent
        return self(*args)

    def vmap(self, rule: Callable) -> Callable:
        """Decorator: ``rule(info, in_dims, *args)``, torch.library's vmap rule."""
        self.custom.register_vmap(rule)
        return rule

    # --- the kernels --------------------------------------------------------------------------

    def run(self, *args):
        """The real kernel: the output rule, then the first implementation that serves the call."""
        if len(args) < len(self.params):  # the dispatcher leaves out trailing arguments equal to their defaults
            args = self.complete(args)
        return self.compute(args, self.rule(*args))

    def complete(self, args: tuple) -> tuple:
        """``args`` with the defaults of the trailing arguments they leave out."""
        return (*args, *self.defaults[len(self.defaults) - (len(self.params) - len(args)) :])

    def compute(self, args: tuple, out, tensors: list | None = None):
        """The first implementation that serves the call (the reference if none does), its result in
        the memory format the output rule gives. ``tensors``: the tensor arguments, if at hand."""
        if tensors is None:
            tensors = [args[i] for i in self.tensors]
        route, at = None, self.route_at
        if at is not None:
            route, args = self.chooser(*args), (*args[:at], *args[at + 1 :])
        for impl in self.implementations:
            if impl.route != route or (impl.backend is not None and not impl.backend.applies(*tensors)):
                continue
            if impl.unless is None or not impl.unless(*args):
                break
        else:
            if route is not None:
                raise RuntimeError(f"{self.name}: no implementation serves route {route!r}")
            impl = self.reference
        kernel, takes_out = impl.kernel, impl.takes_out
        if impl.backend is None:
            with outside_autocast(tensors[0]):
                result = kernel(*args, out=out) if takes_out else kernel(*args)
        else:
            result = kernel(*args, out=out) if takes_out else kernel(*args)
        if self.many:
            return tuple([in_format(r, o.channels_last) for r, o in zip(result, out)])
        return in_format(result, out.channels_last)

    def fake(self, *args):
        out = self.rule(*args)
        like = args[self.tensors[0]]
        return tuple(o.new(like) for o in out) if isinstance(out, tuple) else out.new(like)

    # --- the formulas, as autograd wants them -------------------------------------------------

    def setup_context(self, ctx, inputs: tuple, output, out=None) -> tuple[Tensor, ...]:
        """Keep what the formulas read: the saved tensors for autograd, the rest in a :class:`Saved`.
        Returns the saved tensors (for ``save_for_forward``), which ``ctx`` must not hold itself."""
        outputs = output if isinstance(output, tuple) else (output,)
        if self.integer_outputs:  # outputs without a gradient, such as max pooling's indices
            ctx.mark_non_differentiable(*[outputs[i] for i in self.integer_outputs])
        saved = self.saved_type((*inputs, *outputs, self.rule(*inputs) if out is None else out))
        kept = self.kept(saved)
        for i in self.saved_at:
            saved[i] = None  # autograd holds them (a reference here could keep an output alive in a cycle)
        for i in self.shapes_at:  # the unsaved tensors: their shapes only
            if saved[i] is not None:
                saved[i] = Shape(saved[i].shape)
        ctx.save_for_backward(*kept)
        ctx.saved = saved
        return kept

    def restore(self, ctx) -> Saved:
        saved = ctx.saved
        for i, t in zip(self.saved_at, ctx.saved_tensors):
            saved[i] = t
        return saved

    def backward(self, ctx, grad, *_grads_of_other_outputs):
        """One gradient per input, in order: each input's formula where one was asked for, else None."""
        saved, needs = self.restore(ctx), ctx.needs_input_grad
        grads = [None] * len(self.params)
        for i, formula in self.grad_formulas:
            if needs[i]:
                grads[i] = formula(saved, grad)
        return tuple(grads)

    def jvp(self, ctx, *tangents):
        """The output's tangent: the sum of every input tangent's contribution."""
        saved = self.restore(ctx)
        terms = [
            self.tangents[name](saved, t)
            for name, t in zip(self.params, tangents)
            if t is not None and name in self.tangents
        ]
        total = sum(terms[1:], terms[0]) if terms else None
        return (total, *(None,) * (len(self.outputs) - 1)) if len(self.outputs) > 1 else total

    # --- calling it ---------------------------------------------------------------------------

    def __call__(self, *args):
        if len(args) < len(self.params):
            args = self.complete(args)
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return self.overload(*args)
        # private, both: whether a torch.func transform or forward-mode AD is active (no public API asks)
        if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
            return self.transformable.apply(*map(_Leaf.wrap, args))
        tensors = [args[i] for i in self.tensors]
        if _recorded(tensors):
            return self.eager.apply(*args)
        return self.compute(args, self.rule(*args), tensors)  # inference, a first-order backward: no Function


_PLAIN = (Tensor, torch.nn.Parameter)


def _dispatcher_needed(tensors: list) -> bool:
    """Whether something below Python must see the operator itself: a dispatch mode (fake tensors, a
    FLOP counter, a recorder) or a tensor that is not a plain tensor with data."""
    if torch._C._len_torch_dispatch_stack():  # private: no public way to ask whether a dispatch mode is on
        return True
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN or t.is_meta):
            return True
    return False


def _recorded(tensors: list) -> bool:
    """Whether the call goes through the eager Function: for autograd to record (gradients on and an
    argument that wants one), or for the dispatcher (see :func:`_dispatcher_needed`)."""
    if torch._C._len_torch_dispatch_stack():
        return True
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and ((grad and t.requires_grad) or type(t) not in _PLAIN or t.is_meta):
            return True
    return False


class _Leaf:
    """A list argument held as one pytree leaf. torch.func's generated vmap rule for a Function's jvp
    flattens list arguments into their elements but gives each list one tangent, and then fails to
    match the two; as one opaque leaf, a list has one of each."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    @staticmethod
    def wrap(arg):
        return _Leaf(arg) if isinstance(arg, (list, tuple)) else arg

    @staticmethod
    def unwrap(arg):
        return arg.value if isinstance(arg, _Leaf) else arg


def _functions(op: Operator) -> tuple[type, type]:
    """The operator's two ``autograd.Function`` twins: the eager one, named like ``Conv2dFunction``
    (its graph nodes are ``Conv2dFunctionBackward``), and the one torch.func transforms."""
    short = op.name.split("::")[1]
    name = "".join(part.capitalize() for part in short.split("_")) + "Function"
    doc = f"``torch.ops.cnnzoo.{short}`` as an autograd.Function (see ``cnnzoo.ops.declare``)."

    def eager_forward(ctx, *args):
        if _dispatcher_needed([args[i] for i in op.tensors]):
            output, out = op.overload(*args), None
        else:
            out = op.rule(*args)
            output = op.compute(args, out)
        op.setup_context(ctx, args, output, out)
        return output

    def transformable_setup_context(ctx, inputs, output):
        ctx.save_for_forward(*op.setup_context(ctx, tuple(map(_Leaf.unwrap, inputs)), output))

    eager = type(
        name,
        (torch.autograd.Function,),
        {"__doc__": doc, "forward": staticmethod(eager_forward), "backward": staticmethod(op.backward)},
    )
    transformable = type(
        f"Transformable{name}",
        (torch.autograd.Function,),
        {
            "__doc__": doc,
            "forward": staticmethod(lambda *args: op.overload(*map(_Leaf.unwrap, args))),
            "setup_context": staticmethod(transformable_setup_context),
            "backward": staticmethod(op.backward),
            "jvp": staticmethod(op.jvp),
            "generate_vmap_rule": True,
        },
    )
    return eager, transformable


# --- vmap helpers: a vmapped dimension folded into the batch, or into the groups ------------------


def front(t: Tensor, dim: int | None, size: int) -> Tensor:
    """``t`` with its vmapped dimension first (broadcast to ``size`` if it has none)."""
    return t.expand(size, *t.shape) if dim is None else t.movedim(dim, 0)


def batch_rule(op: Operator, tensors: Sequence[str], size: str | None = None) -> Callable:
    """A vmap rule for an operator applied image by image: the vmapped dimension is folded into the
    batch of the tensor arguments named in ``tensors``, (B, N, ...) -> (B*N, ...); ``size`` names an
    input size argument to grow to match."""
    positions = [op.params.index(name) for name in tensors]
    size_at = None if size is None else op.params.index(size)

    def rule(info, in_dims, *args):
        b, args = info.batch_size, list(args)
        for i in positions:
            args[i] = front(args[i], in_dims[i], b).flatten(0, 1)
        if size_at is not None:
            args[size_at] = [b * args[size_at][0], *args[size_at][1:]]
        out = op.overload(*args)
        if isinstance(out, tuple):
            return tuple(o.unflatten(0, (b, -1)) for o in out), (0,) * len(out)
        return out.unflatten(0, (b, -1)), 0

    return rule


def into_groups(t: Tensor, dim: int | None, size: int) -> Tensor:
    """(B, N, C, ...) -> (N, B*C, ...): a vmapped dimension as B groups of channels."""
    return front(t, dim, size).movedim(0, 1).flatten(1, 2)


def out_of_groups(t: Tensor, size: int) -> Tensor:
    return t.unflatten(1, (size, -1)).movedim(1, 0)
