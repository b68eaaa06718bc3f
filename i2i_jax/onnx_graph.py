"""A generator's jaxpr as an ONNX graph, for `export --format=onnx`.

Written here rather than taken from a converter package: the test-time generators use about
twenty primitives, the converters on PyPI pin other orbax versions (jax2onnx) or need TF graph
ops that jax2tf no longer emits (tf2onnx), and owning the mapping lets every choice below be
checked against the JAX artifact.

The function is traced with symbolic batch, height and width, and the weights are folded in as
constants: any equation whose inputs are all constants (kernel flips, batch-norm scales) is
computed here, so the graph holds only the work that depends on the image. Layout stays NHWC
at the inputs and outputs, as the JAX artifact's; each convolution transposes to ONNX's NCHW
and back.
Slices whose bounds depend on the height or width (reflection padding) become negative
indices, counted from the end, so no shape is computed at run time.
"""

import re

import numpy as np
import onnx
from jax.extend import core
from onnx import TensorProto, helper, numpy_helper

INT64_MAX = np.iinfo(np.int64).max
# Primitives that pass their operand through, or whose body is inlined.
_IDENTITY = ("name", "copy", "optimization_barrier")
_CALLS = ("jit", "pjit", "custom_jvp_call", "custom_vjp_call", "closed_call", "checkpoint")
_ELEMENTWISE = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "tanh": "Tanh",
    "exp": "Exp",
    "log": "Log",
    "neg": "Neg",
    "abs": "Abs",
    "sqrt": "Sqrt",
    "logistic": "Sigmoid",
    "ge": "GreaterOrEqual",
    "gt": "Greater",
    "le": "LessOrEqual",
    "lt": "Less",
    "eq": "Equal",
}
_ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.bool_): TensorProto.BOOL}


class UnsupportedError(ValueError):
    """The jaxpr holds a primitive (or a form of one) that has no ONNX mapping here."""


class _Dim:
    """A dimension variable's value at run time (an int64 scalar in the graph), with the
    arithmetic jax's symbolic expressions use to evaluate themselves."""

    def __init__(self, graph: "_Graph", value: str):
        self.graph, self.value = graph, value

    def _apply(self, op: str, other) -> "_Dim":
        other = other.value if isinstance(other, _Dim) else np.array(int(other), np.int64)
        return _Dim(self.graph, self.graph.node(op, [self.value, other]))

    def __add__(self, other):
        return self._apply("Add", other)

    def __mul__(self, other):
        return self._apply("Mul", other)

    __radd__, __rmul__ = __add__, __mul__


class _Graph:
    """ONNX nodes and initializers being built; values are numpy arrays (constants) or names.
    `dims` maps the input's dimension variables (b, h, w) to their values at run time."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0
        self.dims: dict[str, _Dim] = {}

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, value) -> str:
        name = self.name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ref(self, value) -> str:
        return self.constant(value) if isinstance(value, np.ndarray) else value

    def node(self, op: str, inputs: list, **attributes) -> str:
        output = self.name(op.lower())
        self.nodes.append(
            helper.make_node(op, [self.ref(i) for i in inputs], [output], **attributes)
        )
        return output


def _is_constant(value) -> bool:
    return isinstance(value, np.ndarray)


def _index(bound, size) -> int:
    """A slice bound as ONNX takes it: an int, or, when it depends on a symbolic axis size,
    its distance from the end (negative)."""
    if isinstance(bound, int):
        return bound
    from_end = bound - size
    if not isinstance(from_end, int):
        raise UnsupportedError(f"a slice bound {bound} that is not the axis size minus a constant")
    return from_end if from_end < 0 else INT64_MAX


def _convert(graph: _Graph, eqn, inputs: list):
    """The ONNX value of `eqn`'s single output, given its inputs' values."""
    p, name = eqn.params, eqn.primitive.name
    if name in _ELEMENTWISE:
        return graph.node(_ELEMENTWISE[name], inputs)
    if name in _IDENTITY:
        return inputs[0]
    if name == "square":
        return graph.node("Mul", [inputs[0], inputs[0]])
    if name == "rsqrt":
        return graph.node("Reciprocal", [graph.node("Sqrt", inputs)])
    if name == "integer_pow":
        return graph.node("Pow", [inputs[0], np.float32(p["y"])])
    if name == "select_n":
        if len(inputs) != 3:
            raise UnsupportedError("select_n of more than two cases")
        return graph.node("Where", [inputs[0], inputs[2], inputs[1]])
    if name == "convert_element_type":
        return graph.node("Cast", inputs, to=_ONNX_TYPES[np.dtype(p["new_dtype"])])
    if name == "transpose":
        return graph.node("Transpose", inputs, perm=list(p["permutation"]))
    if name == "concatenate":
        return graph.node("Concat", inputs, axis=p["dimension"])
    if name == "reduce_sum":
        return graph.node("ReduceSum", [inputs[0], np.array(p["axes"], np.int64)], keepdims=0)
    if name == "reduce_max":
        return graph.node("ReduceMax", [inputs[0], np.array(p["axes"], np.int64)], keepdims=0)
    if name == "broadcast_in_dim":
        return _broadcast(graph, eqn, inputs[0])
    if name == "slice":
        return _slice(graph, eqn, inputs[0])
    if name == "rev":
        axes = list(p["dimensions"])
        return graph.node(
            "Slice",
            [
                inputs[0],
                np.full(len(axes), -1, np.int64),
                np.full(len(axes), -INT64_MAX, np.int64),
                np.array(axes, np.int64),
                np.full(len(axes), -1, np.int64),
            ],
        )
    if name == "conv_general_dilated":
        return _convolution(graph, eqn, inputs)
    raise UnsupportedError(f"no ONNX mapping for the primitive {name!r}")


def _broadcast(graph: _Graph, eqn, operand):
    """Unsqueezed to the output's rank (axes of size 1 where the output has new ones): ONNX's
    elementwise operators broadcast the rest, as every consumer in these generators is one."""
    out_rank = len(eqn.outvars[0].aval.shape)
    kept = eqn.params["broadcast_dimensions"]
    new_axes = [axis for axis in range(out_rank) if axis not in kept]
    if not new_axes:
        return operand
    return graph.node("Unsqueeze", [operand, np.array(new_axes, np.int64)])


def _slice(graph: _Graph, eqn, operand):
    shape = eqn.invars[0].aval.shape
    if eqn.params["strides"] not in (None, (1,) * len(shape)):
        raise UnsupportedError("a strided slice")
    starts = [_index(b, s) for b, s in zip(eqn.params["start_indices"], shape, strict=True)]
    ends = [_index(b, s) for b, s in zip(eqn.params["limit_indices"], shape, strict=True)]
    return graph.node("Slice", [operand, np.array(starts, np.int64), np.array(ends, np.int64)])


def _convolution(graph: _Graph, eqn, inputs: list):
    """NHWC x HWIO -> NHWC as ONNX's NCHW Conv, or ConvTranspose where the input is dilated
    (a transposed convolution, traced as a convolution of the zero-stuffed input)."""
    p = eqn.params
    lhs, rhs, out = p["dimension_numbers"]
    if (lhs, rhs, out) != ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)):
        raise UnsupportedError(f"convolution dimension numbers {p['dimension_numbers']}")
    if p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
        raise UnsupportedError("a grouped convolution")
    image, kernel = inputs
    if not _is_constant(kernel):
        raise UnsupportedError("a convolution whose kernel is not a constant")
    nchw = graph.node("Transpose", [image], perm=[0, 3, 1, 2])
    k_h, k_w = kernel.shape[:2]
    (top, bottom), (left, right) = p["padding"]
    if tuple(p["lhs_dilation"]) == (1, 1):
        result = graph.node(
            "Conv",
            [nchw, np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))],
            strides=list(p["window_strides"]),
            dilations=list(p["rhs_dilation"]),
            pads=[top, left, bottom, right],
        )
    else:
        if tuple(p["window_strides"]) != (1, 1) or tuple(p["rhs_dilation"]) != (1, 1):
            raise UnsupportedError("a dilated input with strides or a dilated kernel")
        # Convolving the s-dilated input, padded (lo, hi), with K is ConvTranspose with stride s,
        # the kernel K flipped back, and pads k-1-lo, k-1-hi.
        pads = [k_h - 1 - top, k_w - 1 - left, k_h - 1 - bottom, k_w - 1 - right]
        if min(pads) < 0:
            raise UnsupportedError("a transposed convolution padded beyond its kernel")
        weight = np.ascontiguousarray(kernel[::-1, ::-1].transpose(2, 3, 0, 1))
        result = graph.node(
            "ConvTranspose", [nchw, weight], strides=list(p["lhs_dilation"]), pads=pads
        )
    return graph.node("Transpose", [result], perm=[0, 2, 3, 1])


def _evaluate(eqn, values: list):
    """An equation whose inputs are all constants, computed now (constant folding)."""
    results = eqn.primitive.bind(*values, **eqn.params)
    results = results if eqn.primitive.multiple_results else [results]
    return [np.asarray(r) for r in results]


def _walk(graph: _Graph, jaxpr, consts: list, values: list) -> list:
    """The values of `jaxpr`'s outputs, its constants and inputs bound to `consts`, `values`."""
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, values, strict=True))

    def read(atom):
        return np.asarray(atom.val) if isinstance(atom, core.Literal) else env[atom]

    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "dim_as_value":  # A size that depends on the image's (a mean's count).
            outputs = [eqn.params["dim"]._evaluate(graph.dims).value]
        elif all(_is_constant(v) for v in inputs):
            outputs = _evaluate(eqn, inputs)
        elif name in _CALLS:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            inner_consts = [np.asarray(c) for c in getattr(inner, "consts", ())]
            outputs = _walk(graph, getattr(inner, "jaxpr", inner), inner_consts, inputs)
        else:
            if len(eqn.outvars) != 1:
                raise UnsupportedError(f"{name} with {len(eqn.outvars)} outputs")
            outputs = [_convert(graph, eqn, inputs)]
        env.update(zip(eqn.outvars, outputs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def to_onnx(closed_jaxpr, input_name: str, output_name: str, dims: list[str]) -> onnx.ModelProto:
    """The model of `closed_jaxpr` (one image input, one image output; its constants are the
    weights), with the input's and output's axes named `dims` (e.g. batch, height, width, C)."""
    graph = _Graph()
    jaxpr = closed_jaxpr.jaxpr
    consts = [np.asarray(c) for c in closed_jaxpr.consts]
    graph.dims = _dimension_variables(graph, input_name, jaxpr.invars[0].aval.shape)
    (result,) = _walk(graph, jaxpr, consts, [input_name])
    graph.nodes.append(helper.make_node("Identity", [graph.ref(result)], [output_name]))
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "generator",
            [_value_info(input_name, jaxpr.invars[0].aval, dims)],
            [_value_info(output_name, jaxpr.outvars[0].aval, dims)],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="i2i_jax",
    )
    onnx.checker.check_model(model)
    return model


def _dimension_variables(graph: _Graph, input_name: str, shape) -> dict[str, _Dim]:
    """Each variable of the input's symbolic shape (an axis `v` or `k*v`) read from the
    input's shape at run time: axis size // k."""
    shape_of_input = graph.node("Shape", [input_name])
    found = {}
    for axis, size in enumerate(shape):
        term = re.fullmatch(r"(?:(\d+)\*)?([A-Za-z_]\w*)", str(size).replace(" ", ""))
        if isinstance(size, int) or not term:
            continue
        axis_size = graph.node("Gather", [shape_of_input, np.array(axis, np.int64)], axis=0)
        factor = np.array(int(term.group(1) or 1), np.int64)
        found[term.group(2)] = _Dim(graph, graph.node("Div", [axis_size, factor]))
    return found


def _value_info(name: str, aval, dims: list[str]):
    shape = [d if isinstance(d, int) else dims[axis] for axis, d in enumerate(aval.shape)]
    return helper.make_tensor_value_info(name, _ONNX_TYPES[np.dtype(aval.dtype)], shape)
