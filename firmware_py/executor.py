"""Runs a ``.bnn`` model (docs/model-format.md) with the C runtime and numpy.

    model = firmware_py.load("model.bnn", num_threads=4)
    y = model.run(x)            # x: float32 NCHW, exactly model.inputs[0].shape

Everything that can be done once is done at load: the file is validated
(model_format.read_model), every C layer (BConv2d / FConv2d; ``dense`` is an FConv2d
1x1 on a 1x1 image, ``bdense`` a BConv2d 1x1 on a 1x1 image) is created, and every
intermediate array is allocated by a buffer planner that lets values whose lifetimes do
not overlap share memory.  A run only copies the inputs in (NCHW -> NHWC), calls the
nodes in order writing into the planned buffers, and copies the outputs out.

Inputs: float32 only, exactly the shape of ``inputs[i].shape`` (NCHW for layout
``NCHW``, NHWC -- copied as it is -- for ``NHWC``); another dtype (float64 included) is refused with a ValueError naming the
input, never converted silently -- call ``x.astype(np.float32)``.

Outputs: in the layout of ``outputs[i].layout`` (NCHW transposed back from the internal
NHWC; ``bits`` values unpacked to +-1 float32).  The arrays returned are fresh copies:
they stay valid after later runs.

Fusion (``fuse=True``, the default): at load, runs of adjacent per-channel elementwise
nodes -- ``affine`` / ``prelu`` / ``relu`` / ``leaky_relu`` / ``clip`` and at most one
two-input ``add``, each intermediate value read only by the next node and not a graph
output -- become one C pass (ops.eltwise: Bi-Real's residual add + ReActNet's RPReLU); a
run that reads the float output of a binary conv (``bconv2d`` / ``bdense``) that nothing
else reads runs in that conv's output transform instead (the conv moved to the run's place)
(ops.BConv2d steps: QuickNet's ReLU, BatchNorm and shortcut add cost no pass of their
own); and an ``affine`` read only by a ``bitpack`` becomes one packing pass
(ops.bitpack_affine: RSign).  The C code does the same float32 operations in the same
order as the unfused nodes, so the outputs are the same bits (``fuse=False`` runs every
node on its own, for comparison).  The profile then lists the fused step once (op
``eltwise`` / ``bitpack_affine`` / the conv's, named after its first node, "+N" when it
covers N more).

Threads: a Model owns one ops.Context (``num_threads`` workers) and its buffers; runs of
one Model are serialised by a lock (a Model is meant to be used by one thread at a time;
load one Model per thread to run in parallel).  Different Models are independent.
"""

import bisect
import collections
import platform
import statistics
import tempfile
import threading
import time
import os

import numpy as np

from . import ops, registry
from .model_format import (read_model, validate_graph, write_model, _check_tensor_data, DTYPES,
                           ModelFormatError)

__all__ = ["load", "Model", "IOSpec", "Profile", "overhead_report", "memory_budget"]

IOSpec = collections.namedtuple("IOSpec", "name shape layout")


def load(path, num_threads=None, fuse=True, memory_limit=None):
    """Loads and validates a model file; builds its layers and buffers.

    num_threads: worker threads of the model's ops.Context (None: one per CPU).
    fuse: run elementwise chains as single C passes (see the module docstring).
    memory_limit: bytes (or "512M"; 0 / "none": no limit) the model may need at run time,
    checked before anything is allocated (memory.MemoryBudgetError, a ModelFormatError);
    None: $BNN_MEMORY_LIMIT, else the memory available now (firmware_py/memory.py)."""
    try:
        graph, tensors = read_model(path, mmap=True)
    except ModelFormatError as e:
        if isinstance(path, (str, os.PathLike)) and str(e).startswith("bad magic") and \
                os.fspath(path).lower().endswith(".onnx"):
            raise ModelFormatError("%s; %s looks like an ONNX model: convert it first "
                                   "(python -m firmware_py convert %s)"
                                   % (e, os.fspath(path), os.fspath(path))) from None
        raise
    return Model(graph, tensors, num_threads=num_threads, fuse=fuse, memory_limit=memory_limit,
                 _validated=True)


_BINARY_FLOAT_OUT = ("bconv2d", "bdense")  # their float outputs take a fused chain


def _fuse(nodes, keep):
    """Groups runs of adjacent per-channel elementwise nodes (registry.CHAIN_OPS and at most
    one two-input add; see the module docstring) into one internal node: ``eltwise`` (key
    ``_chain``: the original nodes; inputs: the chain's input and the add's other input), or,
    when the run reads the float output of a binary conv that nothing else reads, that conv
    itself, moved to the run's place (``_chain``: its output steps; the residual appended
    to its inputs); and an ``affine`` read only by a ``bitpack`` into ``bitpack_affine`` (``_chain``:
    [affine, bitpack]).  keep: the graph outputs."""
    uses = collections.Counter(nm for n in nodes for nm in n["inputs"])

    def private(value):  # read by exactly one input of one node, not a graph output
        return uses[value] == 1 and value not in keep

    def packs(i):  # nodes[i] is an affine read only by the bitpack nodes[i + 1]
        return (i + 1 < len(nodes) and nodes[i]["op"] == "affine" and nodes[i + 1]["op"] == "bitpack"
                and nodes[i + 1]["inputs"][0] == nodes[i]["outputs"][0] and private(nodes[i]["outputs"][0]))

    def chainable(n):
        return n["op"] in registry.CHAIN_OPS or (n["op"] == "add" and len(n["inputs"]) == 2)

    def residual(n, value):  # the other input of an add that reads value once, else None
        a, b = n["inputs"]
        return b if a == value and b != value else a if b == value and a != value else None

    out, i = [], 0
    made = {}  # float binary conv output read by one node only -> its index in out
    while i < len(nodes):
        n = nodes[i]
        if packs(i):
            out.append(dict(nodes[i + 1], op="bitpack_affine", name=n["name"] + " +1", inputs=n["inputs"],
                            _chain=[n, nodes[i + 1]]))
            i += 2
            continue
        if not chainable(n):
            if n["op"] in _BINARY_FLOAT_OUT and n.get("attrs", {}).get("output", "float") == "float" \
                    and private(n["outputs"][0]):
                made[n["outputs"][0]] = len(out)
            out.append(n)
            i += 1
            continue
        # the float binary conv whose output only this chain reads, made before it (moved
        # here: nothing in between reads its output, and its own inputs are older)
        k = next((made[v] for v in n["inputs"] if v in made), None)
        conv = out[k] if k is not None else None
        x = conv["outputs"][0] if conv else n["inputs"][0]
        res = None
        if n["op"] == "add":
            res = residual(n, x) if conv else n["inputs"][1]
            if res is None:  # add(y, y) of the conv's output
                conv, x, res = None, n["inputs"][0], n["inputs"][1]
        chain, j = [n], i + 1
        # at most ops.EW_MAX_STEPS steps: one C pass takes no more (longer runs are split)
        while j < len(nodes) and len(chain) < ops.EW_MAX_STEPS and chainable(nodes[j]) and not packs(j) \
                and private(chain[-1]["outputs"][0]) and chain[-1]["outputs"][0] in nodes[j]["inputs"]:
            if nodes[j]["op"] == "add":
                other = residual(nodes[j], chain[-1]["outputs"][0])
                if res is not None or other is None:
                    break
                res = other
            elif nodes[j]["inputs"][0] != chain[-1]["outputs"][0]:
                break
            chain.append(nodes[j])
            j += 1
        name = n["name"] + (" +%d" % (len(chain) - 1) if len(chain) > 1 else "")
        extra = [res] if res is not None else []
        if conv:
            out[k] = None
            out.append(dict(conv, name=conv["name"] + " +%d" % len(chain), inputs=list(conv["inputs"]) + extra,
                            outputs=list(chain[-1]["outputs"]), _chain=chain))
        elif len(chain) > 1 or n["op"] != "add":
            out.append({"op": "eltwise", "name": name, "inputs": [x] + extra,
                        "outputs": list(chain[-1]["outputs"]), "_chain": chain})
        else:
            out.append(n)
        i = j
    return [n for n in out if n is not None]


def _parts(node):
    """the graph's nodes an executed node runs (itself unless fused)"""
    if node["op"] in _BINARY_FLOAT_OUT:
        return [node] + node.get("_chain", [])
    return node.get("_chain", [node])


class StepBuilder:
    """One node as its op's spec sees it while the executor builds it (registry.OpSpec.build):
    its input and output buffers (the model's planned arrays, NHWC; bits packed), the
    context, its attributes and parameters."""

    def __init__(self, model, node, tensors):
        self.node = node
        self.attrs, self.params = node.get("attrs", {}), node.get("params", {})
        self.xs = [model._buf[n] for n in node["inputs"]]
        self.x = self.xs[0]
        self.y = model._buf[node["outputs"][0]]
        self.in_kind, self.in_shape = model._values[node["inputs"][0]]
        self.out_kind = model._values[node["outputs"][0]][0]
        self.ctx = model._ctx
        self.win = {}
        if "kernel" in self.attrs:
            self.win = dict(kernel=tuple(self.attrs["kernel"]), stride=tuple(self.attrs["stride"]),
                            padding=tuple(self.attrs["pads"]))
        self._tensors, self._layers = tensors, model._layers

    def param(self, key):
        """this node's parameter `key` (a read-only array), or None"""
        return self.node_param(self.node, key)

    def node_param(self, node, key):
        name = node.get("params", {}).get(key)
        return None if name is None else self._tensors[name]

    def keep(self, layer):
        """a C layer the step uses: the model owns it (closed with the model)"""
        self._layers.append(layer)
        return layer


class _Planner:
    """Assigns values to shared byte buffers by lifetime: best fit (the smallest free
    buffer that is large enough), else the largest free buffer grown, else a new one.

    The free buffers are kept by size (a dict size -> ids, and the distinct sizes in a
    sorted list searched by bisection), so an allocation or a release costs O(log n)
    comparisons however many buffers are free; a scan of the free list per allocation
    made a 40k-node model take minutes to load."""

    def __init__(self):
        self.sizes = []
        self.assign = {}  # value -> (buffer id, nbytes)
        self._by_size = {}  # size -> [free buffer ids]
        self._free_sizes = []  # the keys of _by_size, sorted

    @property
    def free(self):
        """the free buffer ids (a list; for inspection)"""
        return [b for s in self._free_sizes for b in self._by_size[s]]

    def _take(self, i):
        size = self._free_sizes[i]
        ids = self._by_size[size]
        b = ids.pop()
        if not ids:
            del self._by_size[size]
            del self._free_sizes[i]
        return b

    def alloc(self, name, nbytes):
        nbytes = max(int(nbytes), 1)
        if self._free_sizes:
            i = bisect.bisect_left(self._free_sizes, nbytes)
            if i < len(self._free_sizes):
                b = self._take(i)
            else:  # none is large enough: grow the largest
                b = self._take(len(self._free_sizes) - 1)
                self.sizes[b] = nbytes
        else:
            b = len(self.sizes)
            self.sizes.append(nbytes)
        self.assign[name] = (b, nbytes)

    def release(self, name):
        b = self.assign[name][0]
        size = self.sizes[b]
        ids = self._by_size.get(size)
        if ids is None:
            bisect.insort(self._free_sizes, size)
            self._by_size[size] = [b]
        else:
            ids.append(b)

    def peak_bytes(self):
        """what materialise() allocates"""
        return sum((s + 7) // 8 * 8 for s in self.sizes)

    def materialise(self):
        raws = [np.empty((s + 7) // 8, dtype=np.uint64).view(np.uint8) for s in self.sizes]
        return raws


def _value_nbytes(kind, shape):
    n = 1
    for d in shape[:-1]:
        n *= int(d)
    if kind == "bits":
        return n * ops.packed_words(int(shape[-1])) * 4
    return n * int(shape[-1]) * 4


def _plan(values, exec_nodes, inputs, outputs):
    """The buffer plan of a graph (values: name -> (kind, shape); exec_nodes: the nodes as
    executed, fused or not; inputs / outputs: value names): a _Planner."""
    last = {}
    for i, node in enumerate(exec_nodes):
        for nm in node["inputs"]:
            last[nm] = i
    keep = set(outputs)
    p = _Planner()
    for name in inputs:
        p.alloc(name, _value_nbytes(*values[name]))
    for name in inputs:
        if name not in keep and name not in last:
            p.release(name)
    for i, node in enumerate(exec_nodes):
        out = node["outputs"][0]
        p.alloc(out, _value_nbytes(*values[out]))
        dying = [nm for nm in set(node["inputs"]) if last.get(nm) == i and nm not in keep]
        if out not in last and out not in keep:
            dying.append(out)
        for nm in dying:
            p.release(nm)
    return p


def _words(c):
    return (int(c) + 31) // 32


# x86-64 libraries keep a second, nibble-split copy of a binary conv's blocked weights (2x
# their size) for the AVX2 kernel, which also reads its input nibble-split (bconv2d/kernel.h)
_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _node_extra(node, values, tensor_bytes):
    """(bytes the C layer of a node keeps -- its own blocked copy of the weights --,
    scratch bytes while it runs) for one executed node; the sizes follow
    csrc/neon/{bconv2d,fconv2d} and registry's numpy steps."""
    op = node["op"]
    attrs = node.get("attrs", {})
    params = node.get("params", {})
    in_kind, in_shape = values[node["inputs"][0]]
    out_kind, out_shape = values[node["outputs"][0]]
    layer = scratch = 0
    if op in ("bconv2d", "bdense"):
        n = int(in_shape[0])
        if op == "bconv2d":
            kh, kw = attrs["kernel"]
            h, w, c = in_shape[1:]
            pads = attrs["pads"]
        else:  # a 1x1 bconv2d on a 1x1 image
            kh = kw = h = w = 1
            c, pads = in_shape[-1], (0, 0, 0, 0)
        oc = out_shape[-1]
        pt, pl, pb, pr = pads
        split = 2 if _X86 else 1  # words per input word the kernel reads (bconv2d/kernel.h)
        if any(pads) or split == 2:  # the padded and / or nibble-split input, in the context's scratch
            scratch = n * (h + pt + pb) * (w + pl + pr) * _words(c) * 4 * split
        k = kh * kw * _words(c)
        blocked = (int(oc) + 15) // 16 * 16 * k * 4
        layer = blocked * (3 if _X86 else 1) + kh * kw * int(oc) * 4 + 16 * int(oc)  # + the nibble copy (2x)
    elif op in ("fconv2d", "dense"):
        layer = sum(tensor_bytes.get(t, 0) for t in params.values())
        groups = int(attrs.get("groups", 1))
        if groups > 1:  # fconv2d.c's padded copies: depthwise [kh*kw + 1][c], else blocks of 16 per group
            kh, kw = attrs["kernel"]
            c, oc = int(in_shape[-1]), int(out_shape[-1])
            if groups == c == oc:
                layer = (kh * kw + 1) * ((c + 15) // 16 * 16) * 4
            else:
                layer = groups * ((oc // groups + 15) // 16 * 16) * (kh * kw * c // groups + 1) * 4
    elif op == "xnor_scale":
        scratch = int(in_shape[0]) * int(in_shape[1]) * int(in_shape[2]) * 4
    elif op == "flatten" and in_kind == "bits":
        n, h, w, c = (int(d) for d in in_shape)
        layer = n * h * w * c * 4 * (2 if out_kind == "bits" else 1)  # its float temporaries
    elif op == "softmax":
        full = _value_nbytes(out_kind, out_shape)
        scratch = full if attrs.get("log") else full // max(int(out_shape[-1]), 1) * 2
    return layer, scratch


def memory_budget(graph, tensors=None, fuse=True):
    """What running a (validated) graph takes, in bytes, computed from the graph alone
    (nothing is allocated): a dict with

      activations  the buffer planner's peak (the arrays every value lives in)
      weights      the tensors (mapped from the file, or in memory)
      layers       the C layers' own copies of their weights, per-step numpy temporaries
      scratch      the largest scratch one step needs (the C context's, numpy's)
      outputs      the copies of the outputs each run returns
      total        their sum
      largest      (value, kind, shape, bytes, what writes it) of the largest value

    tensors: {name: array} when the graph has no tensor table yet (the converter)."""
    values = {v["name"]: (v["kind"], tuple(v["shape"])) for v in graph["values"]}
    outputs = [o["name"] for o in graph["outputs"]]
    nodes = graph["nodes"]
    exec_nodes = _fuse(nodes, set(outputs)) if fuse else list(nodes)
    plan = _plan(values, exec_nodes, [i["name"] for i in graph["inputs"]], outputs)
    if tensors is not None:
        tensor_bytes = {k: int(np.asarray(a).nbytes) for k, a in tensors.items()}
    else:
        tensor_bytes = {t["name"]: int(t["nbytes"]) for t in graph.get("tensors", [])}
    layers = scratch = 0
    for node in exec_nodes:
        for n in _parts(node):
            lb, sb = _node_extra(n, values, tensor_bytes)
            layers += lb
            scratch = max(scratch, sb)
    out_bytes = 0
    for name in outputs:
        kind, shape = values[name]
        f = _value_nbytes("float", shape)
        out_bytes += 2 * f if kind == "bits" else f
    largest = max(((nm, k, list(sh), _value_nbytes(k, sh)) for nm, (k, sh) in values.items()),
                  key=lambda t: t[3])
    maker = next((n for n in nodes if n["outputs"][0] == largest[0]), None)
    largest += ("%s node %r" % (maker["op"], maker["name"]) if maker else "the graph input",)
    budget = {"activations": plan.peak_bytes(), "weights": sum(tensor_bytes.values()),
              "layers": layers, "scratch": scratch, "outputs": out_bytes}
    budget["total"] = sum(budget.values())
    budget["largest"] = tuple(largest)
    budget["_plan"] = plan
    return budget


def describe_budget(budget):
    """The budget in words (for error messages and Model.summary)."""
    from .memory import format_bytes as fb
    name, kind, shape, nb, maker = budget["largest"]
    return ("%s (activations %s, weights %s, layer copies and temporaries %s, scratch %s, "
            "output copies %s; the largest value is %r from %s, %s %s = %s)"
            % (fb(budget["total"]), fb(budget["activations"]), fb(budget["weights"]),
               fb(budget["layers"]), fb(budget["scratch"]), fb(budget["outputs"]), name, maker,
               kind, shape, fb(nb)))


def check_memory(budget, memory_limit=None, what="the model"):
    """Raises memory.MemoryBudgetError when budget["total"] is over the limit
    (memory.resolve_limit(memory_limit)); returns (limit or None, how it was chosen)."""
    from .memory import MemoryBudgetError, format_bytes, resolve_limit
    limit, how = resolve_limit(memory_limit)
    if limit is not None and budget["total"] > limit:
        raise MemoryBudgetError("%s needs %s at run time, more than the memory limit of %s "
                                "(%s)" % (what, describe_budget(budget), format_bytes(limit), how))
    return limit, how


class Profile(list):
    """Model.profile's result: a list of per-node dicts {name, op, ms, out_shape} (ms:
    median over the repeats), with ``total_ms`` (median of whole runs, input and output
    copies included) and ``nodes_ms`` (the sum of the node medians)."""

    total_ms = 0.0
    nodes_ms = 0.0

    def __str__(self):
        lines = ["%-28s %-15s %10s  %s" % ("node", "op", "ms", "out_shape")]
        for d in self:
            lines.append("%-28s %-15s %10.3f  %s" % (d["name"][:28], d["op"], d["ms"],
                                                      list(d["out_shape"])))
        lines.append("%-28s %-15s %10.3f" % ("(sum of nodes)", "", self.nodes_ms))
        lines.append("%-28s %-15s %10.3f" % ("(total run)", "", self.total_ms))
        return "\n".join(lines)


class Model:
    """A loaded model; see the module docstring.  Build it with :func:`load`."""

    def __init__(self, graph, tensors, num_threads=None, fuse=True, memory_limit=None,
                 _validated=False):
        if not _validated:
            validate_graph(graph, None)
            for t in graph["tensors"]:
                a = tensors.get(t["name"])
                if not isinstance(a, np.ndarray) or a.dtype != DTYPES[t["dtype"]] \
                        or list(a.shape) != t["shape"]:
                    raise ValueError("tensor %r does not match the graph's tensor table" % t["name"])
            _check_tensor_data(graph, tensors)
        # what the model needs, checked before anything is allocated (a tiny file can ask
        # for gigabytes: the format bounds each value, not their sum)
        budget = memory_budget(graph, fuse=fuse)
        self.memory_limit, _ = check_memory(budget, memory_limit)
        self.memory = {k: v for k, v in budget.items() if not k.startswith("_")}
        self._lock = threading.Lock()
        self._ctx = ops.Context(num_threads)
        self.inputs = [IOSpec(i["name"], tuple(i["shape"]), i["layout"]) for i in graph["inputs"]]
        self.outputs = [IOSpec(o["name"], tuple(o["shape"]), o["layout"]) for o in graph["outputs"]]
        self.metadata = graph.get("metadata", {})
        self.producer = graph.get("producer", "")
        self._values = {v["name"]: (v["kind"], tuple(v["shape"])) for v in graph["values"]}
        self._nodes = graph["nodes"]
        keep = {o.name for o in self.outputs}
        self._exec_nodes = _fuse(self._nodes, keep) if fuse else list(self._nodes)
        self._layers = []
        self._plan_buffers(budget["_plan"])
        self._steps = [self._build(node, tensors) for node in self._exec_nodes]
        self._feeds = [self._feed_fn(spec) for spec in self.inputs]
        self._collects = [self._collect_fn(spec) for spec in self.outputs]

    # ---- planning ---------------------------------------------------------------------------
    def _nbytes(self, name):
        kind, shape = self._values[name]
        if kind == "bits":
            return int(np.prod(shape[:-1])) * ops.packed_words(shape[-1]) * 4
        return int(np.prod(shape)) * 4

    def _plan_buffers(self, plan=None):
        if plan is None:
            plan = _plan(self._values, self._exec_nodes, [s.name for s in self.inputs],
                         [o.name for o in self.outputs])
        raws = plan.materialise()
        self._buf = {}
        for name, (b, nbytes) in plan.assign.items():
            kind, shape = self._values[name]
            if kind == "bits":
                dt, shp = np.uint32, shape[:-1] + (ops.packed_words(shape[-1]),)
            else:
                dt, shp = np.float32, shape
            self._buf[name] = raws[b][:nbytes].view(dt).reshape(shp)
        self.buffer_bytes = sum(r.nbytes for r in raws)
        self.value_bytes = sum(self._nbytes(n) for n in self._values)

    # ---- layers -----------------------------------------------------------------------------
    def _build(self, node, tensors):
        """(name, op, step, out shape) of a node: its op's spec builds the step
        (registry.OpSpec.build); the fused nodes of _fuse have their own builders."""
        b = StepBuilder(self, node, tensors)
        op = node["op"]
        if op == "eltwise":
            fn = registry.build_eltwise(b, node["_chain"])
        elif op == "bitpack_affine":
            fn = registry.build_bitpack_affine(b, node["_chain"])
        else:
            fn = registry.OPS[op].build(b)
        return (node["name"], op, fn, self._values[node["outputs"][0]][1])

    # ---- boundary ----------------------------------------------------------------------------
    def _feed_fn(self, spec):
        buf = self._buf[spec.name]
        src_shape = spec.shape
        if spec.layout == "NCHW" and (spec.shape[1] == 1 or np.prod(spec.shape[2:]) == 1):
            # one channel or a 1x1 image: NCHW and NHWC hold the values in the same order
            def feed(x):
                np.copyto(buf, x.reshape(buf.shape))
        elif spec.layout == "NCHW" and spec.shape[1] <= 8:
            # an image (few channels): stacking the planes is ~5x faster than a transposed
            # copy, whose innermost loop strides over whole planes
            chans = range(spec.shape[1])

            def feed(x):
                np.stack([x[:, i] for i in chans], axis=-1, out=buf)
        elif spec.layout == "NCHW":
            def feed(x):
                np.copyto(buf, x.transpose(0, 2, 3, 1))
        else:
            def feed(x):
                np.copyto(buf, x)
        return src_shape, feed

    def _collect_fn(self, spec):
        kind, shape = self._values[spec.name]
        buf = self._buf[spec.name]
        nchw = spec.layout == "NCHW"
        if kind == "bits":
            c = shape[-1]
            if nchw:
                return lambda: np.ascontiguousarray(ops.unpack(buf, c, ctx=self._ctx).transpose(0, 3, 1, 2))
            return lambda: ops.unpack(buf, c, ctx=self._ctx)
        if nchw:
            return lambda: np.ascontiguousarray(buf.transpose(0, 3, 1, 2))
        return lambda: buf.copy()

    def _check_inputs(self, x):
        specs = self.inputs
        if isinstance(x, dict):
            missing = [s.name for s in specs if s.name not in x]
            if missing:
                raise ValueError("missing input(s) %s (the model's inputs: %s)"
                                 % (missing, [s.name for s in specs]))
            extra = sorted(str(k) for k in x if k not in {s.name for s in specs})
            if extra:
                raise ValueError("unknown input(s) %s (the model's inputs: %s)"
                                 % (extra, [s.name for s in specs]))
            xs = [x[s.name] for s in specs]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(specs):
                raise ValueError("the model takes %d input(s) %s, got %d"
                                 % (len(specs), [s.name for s in specs], len(x)))
            xs = list(x)
        else:
            if len(specs) != 1:
                raise ValueError("the model takes %d inputs %s: pass a list or a dict"
                                 % (len(specs), [s.name for s in specs]))
            xs = [x]
        for s, a in zip(specs, xs):
            if not isinstance(a, np.ndarray):
                raise ValueError("input %r must be a float32 numpy.ndarray of shape %s (%s), got %s"
                                 % (s.name, list(s.shape), s.layout, type(a).__name__))
            if a.dtype != np.float32:
                raise ValueError("input %r must be float32, got %s: other dtypes are not converted "
                                 "(use x.astype(np.float32))" % (s.name, a.dtype))
            if a.shape != s.shape:
                raise ValueError("input %r must have shape %s (%s), got %s"
                                 % (s.name, list(s.shape), s.layout, list(a.shape)))
        return xs

    # ---- running -------------------------------------------------------------------------------
    def run(self, x):
        """x: a float32 array (one input), or a list (in order) / dict (by name) of them.
        Returns one array, or a list when the model has several outputs (fresh copies)."""
        xs = self._check_inputs(x)
        with self._lock:
            self._check_open()
            for (_, feed), a in zip(self._feeds, xs):
                feed(a)
            for step in self._steps:
                step[2]()
            outs = [c() for c in self._collects]
        return outs[0] if len(outs) == 1 else outs

    __call__ = run

    def profile(self, x, repeat=10):
        """Runs ``repeat`` times timing every node; returns a :class:`Profile`."""
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError("repeat must be a positive int, got %r" % (repeat,))
        xs = self._check_inputs(x)
        per = [[] for _ in self._steps]
        totals = []
        clock = time.perf_counter
        with self._lock:
            self._check_open()
            for _ in range(repeat):
                t0 = clock()
                for (_, feed), a in zip(self._feeds, xs):
                    feed(a)
                for i, step in enumerate(self._steps):
                    t = clock()
                    step[2]()
                    per[i].append(clock() - t)
                [c() for c in self._collects]
                totals.append(clock() - t0)
        prof = Profile({"name": s[0], "op": s[1], "ms": statistics.median(t) * 1e3,
                        "out_shape": s[3]} for s, t in zip(self._steps, per))
        prof.total_ms = statistics.median(totals) * 1e3
        prof.nodes_ms = sum(d["ms"] for d in prof)
        return prof

    def summary(self):
        """A text table of the graph: nodes, ops, output kinds and shapes, memory."""
        lines = ["firmware_py model (%s), %d nodes, context: %d threads, %s path"
                 % (self.producer or "unknown producer", len(self._steps),
                    self._ctx.num_threads, self._ctx.path)]
        for s in self.inputs:
            lines.append("  input  %-24s %s %s" % (s.name, list(s.shape), s.layout))
        for s in self.outputs:
            lines.append("  output %-24s %s %s" % (s.name, list(s.shape), s.layout))
        lines.append("  %-4s %-24s %-15s %-5s %s" % ("#", "node", "op", "kind", "out (internal)"))
        for i, node in enumerate(self._nodes):
            kind, shape = self._values[node["outputs"][0]]
            lines.append("  %-4d %-24s %-15s %-5s %s" % (i, node["name"][:24], node["op"], kind,
                                                       list(shape)))
        fused = [n["name"] for n in self._exec_nodes if len(_parts(n)) > 1]
        lines.append("  executed as %d steps (%d fused elementwise runs)" % (len(self._exec_nodes), len(fused)))
        lines.append("  activation buffers: %.1f KiB planned (%.1f KiB without sharing)"
                     % (self.buffer_bytes / 1024, self.value_bytes / 1024))
        from .memory import format_bytes
        lines.append("  memory needed: %s (limit %s)" % (
            describe_budget(self.memory), "none" if self.memory_limit is None
            else format_bytes(self.memory_limit)))
        return "\n".join(lines)

    def _check_open(self):
        if self._ctx is None:
            raise ValueError("this Model is closed")
        self._ctx.num_threads  # ValueError in a forked child: the bound C calls skip ops' checks

    def close(self):
        """Frees the C layers and the context (the Model cannot run afterwards)."""
        with self._lock:
            for layer in self._layers:
                layer.close()
            self._layers = []
            if self._ctx is not None:
                self._ctx.close()
                self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<firmware_py.Model inputs=%s outputs=%s nodes=%d>" % (
            [(s.name, list(s.shape)) for s in self.inputs],
            [(s.name, list(s.shape)) for s in self.outputs], len(self._steps))


# ---- overhead measurement ----------------------------------------------------------------------------
def _tiny_chain(op, n_nodes):
    """A graph of n_nodes tiny layers (1x1 image, 32 channels) and its tensors."""
    c = 32
    values = [{"name": "x", "kind": "float", "shape": [1, 1, 1, c]}]
    nodes, tensors = [], {}
    prev = "x"
    if op == "bconv2d":
        values.append({"name": "b0", "kind": "bits", "shape": [1, 1, 1, c]})
        nodes.append({"op": "bitpack", "name": "pack", "inputs": ["x"], "outputs": ["b0"],
                      "attrs": {"threshold": 0.0}})
        prev = "b0"
        tensors["w"] = np.full((c, 1, 1, 1), 0x5555AAAA, dtype=np.uint32)
        tensors["t"] = np.zeros(c, dtype=np.int32)
    for i in range(n_nodes):
        nm = "v%d" % i
        if op == "bconv2d":
            values.append({"name": nm, "kind": "bits", "shape": [1, 1, 1, c]})
            nodes.append({"op": "bconv2d", "name": "n%d" % i, "inputs": [prev], "outputs": [nm],
                          "attrs": {"kernel": [1, 1], "stride": [1, 1], "pads": [0, 0, 0, 0],
                                    "pad_mode": "zero", "output": "bits"},
                          "params": {"weights": "w", "threshold": "t"}})
        else:
            values.append({"name": nm, "kind": "float", "shape": [1, 1, 1, c]})
            nodes.append({"op": op, "name": "n%d" % i, "inputs": [prev], "outputs": [nm]})
        prev = nm
    out = prev
    if op == "bconv2d":
        values.append({"name": "y", "kind": "float", "shape": [1, 1, 1, c]})
        nodes.append({"op": "unpack", "name": "unpack", "inputs": [prev], "outputs": ["y"]})
        out = "y"
    graph = {"format": "bnn-graph", "producer": "overhead_report", "metadata": {},
             "inputs": [{"name": "x", "shape": [1, c, 1, 1], "layout": "NCHW"}],
             "outputs": [{"name": out, "shape": [1, c, 1, 1], "layout": "NCHW"}],
             "values": values, "nodes": nodes}
    return graph, tensors


def _median_time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def overhead_report(model, x, repeat=20, n_tiny=64):
    """Measures the executor's Python overhead.

    * On ``model`` with input ``x``: the median run time, the sum of the per-node
      medians and the boundary (input/output copies and loop) time.
    * On a chain of ``n_tiny`` tiny layers (1x1 image, 32 channels; the C work is a
      fraction of a microsecond): the time per node for a C-backed node (bconv2d) and a
      numpy node (sigmoid) -- almost all of it Python overhead -- and the bare C call
      (bnn_bconv2d_run through cffi with prepared pointers) for comparison.
    Returns a dict (times in ms and us) and puts a readable text in d["text"].
    """
    prof = model.profile(x, repeat=repeat)
    run_ms = statistics.median(
        [_median_time(lambda: model.run(x), 1) for _ in range(repeat)]) * 1e3
    per_node = {}
    with tempfile.TemporaryDirectory() as d:
        for op in ("bconv2d", "sigmoid"):
            g, t = _tiny_chain(op, n_tiny)
            path = os.path.join(d, op + ".bnn")
            write_model(path, g, t)
            small = load(path, num_threads=model._ctx.num_threads)
            xs = np.ones((1, 32, 1, 1), dtype=np.float32)
            small.run(xs)
            prof_small = small.profile(xs, repeat=repeat)
            ms = [p["ms"] for p in prof_small if p["op"] == op]
            per_node[op] = statistics.median(ms) * 1e3  # us
            if op == "bconv2d":
                step = [s for s in small._steps if s[1] == "bconv2d"][0]
                layer = small._layers[0]
                xb = small._buf["b0"]
                yb = small._buf["v0"]
                lib = ops.lib()
                px = ops.ffi.from_buffer("uint32_t[]", xb)
                py = ops.ffi.from_buffer(yb, require_writable=True)
                cptr, lptr = small._ctx._handle(), layer._ptr
                nul = ops.ffi.NULL

                def raw():
                    lib.bnn_bconv2d_run(cptr, lptr, px, xb.size, nul, 0, py, yb.size)

                for _ in range(100):
                    raw()
                c_us = _median_time(lambda: [raw() for _ in range(100)], repeat) * 1e4
                step_us = _median_time(lambda: [step[2]() for _ in range(100)], repeat) * 1e4
                per_node["bconv2d_step_loop"] = step_us
            small.close()
    report = {
        "run_ms": run_ms,
        "profile_total_ms": prof.total_ms,
        "nodes_ms": prof.nodes_ms,
        "boundary_ms": max(prof.total_ms - prof.nodes_ms, 0.0),
        "n_nodes": len(prof),
        "tiny_bconv2d_node_us": per_node["bconv2d"],
        "tiny_bconv2d_step_us": per_node["bconv2d_step_loop"],
        "tiny_numpy_node_us": per_node["sigmoid"],
        "bare_c_call_us": c_us,
        "python_overhead_per_c_node_us": per_node["bconv2d_step_loop"] - c_us,
    }
    report["estimated_overhead_ms"] = (
        report["python_overhead_per_c_node_us"] * report["n_nodes"] / 1e3)
    report["text"] = (
        "model: run %.3f ms (profiled %.3f ms; nodes %.3f ms over %d nodes; boundary %.3f ms)\n"
        "per-node overhead (tiny layers): C-backed node %.1f us (bare C call %.1f us -> "
        "Python overhead %.1f us); numpy node (sigmoid) %.1f us\n"
        "estimated Python overhead in this model: ~%.3f ms"
        % (run_ms, prof.total_ms, prof.nodes_ms, len(prof), report["boundary_ms"],
           report["tiny_bconv2d_step_us"], c_us, report["python_overhead_per_c_node_us"],
           report["tiny_numpy_node_us"], report["estimated_overhead_ms"]))
    return report
