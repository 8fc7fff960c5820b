"""Hostile inputs, built here deterministically (no random numbers): tiny model files that
ask for gigabytes, a decompression-bomb PNG, model files with names that are not printable,
an ONNX Pad to a huge size, graphs whose size tests the loader's and the converter's
cost, and peers (an MQTT "broker" that stops reading).  Used by tests/test_hardening.py
and tests/bad_input.py (docs/bad-input.md)."""
import json
import os
import socket
import struct
import threading
import zlib

import numpy as np

PAD = 46339  # [1, 1 + PAD, 1 + PAD, 1] float32 = 2,147,395,600 elements (< 2**31): 8.0 GiB


def pad_graph(n_outputs=1, pad=PAD):
    """A graph of ``n_outputs`` pad nodes, each turning a 1x1 input into a
    (1 + pad) x (1 + pad) image; every one is a graph output (kept alive at once)."""
    side = 1 + pad
    values = [{"name": "x", "kind": "float", "shape": [1, 1, 1, 1]}]
    nodes, outputs = [], []
    for i in range(n_outputs):
        values.append({"name": "p%d" % i, "kind": "float", "shape": [1, side, side, 1]})
        nodes.append({"op": "pad", "name": "pad%d" % i, "inputs": ["x"], "outputs": ["p%d" % i],
                      "attrs": {"pads": [0, 0, pad, pad]}})
        outputs.append({"name": "p%d" % i, "shape": [1, 1, side, side], "layout": "NCHW"})
    return {"format": "bnn-graph", "producer": "tests.hostile", "metadata": {},
            "inputs": [{"name": "x", "shape": [1, 1, 1, 1], "layout": "NCHW"}],
            "outputs": outputs, "values": values, "nodes": nodes}


def write_pad_model(path, n_outputs=1):
    """A valid model file of a few hundred bytes whose run would need 8 GiB per output."""
    from firmware_py.model_format import write_model
    write_model(path, pad_graph(n_outputs), {})
    return path


def _container(graph_bytes, data=b""):
    """A model file around raw graph JSON bytes (valid header and CRCs)."""
    from firmware_py.model_format import (_HEADER, ALIGN, HEADER_SIZE, MAGIC, VERSION_MAJOR,
                                          VERSION_MINOR)
    data_offset = (HEADER_SIZE + len(graph_bytes) + ALIGN - 1) // ALIGN * ALIGN
    head = _HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, HEADER_SIZE, HEADER_SIZE,
                        len(graph_bytes), data_offset, len(data),
                        zlib.crc32(graph_bytes) & 0xFFFFFFFF, zlib.crc32(data) & 0xFFFFFFFF, 0, 0)
    head = head[:60] + struct.pack("<I", zlib.crc32(head[:60]) & 0xFFFFFFFF)
    return head + graph_bytes + bytes(data_offset - HEADER_SIZE - len(graph_bytes)) + data


def relu_graph(node_name="relu"):
    return {"format": "bnn-graph", "producer": "tests.hostile", "metadata": {},
            "inputs": [{"name": "x", "shape": [1, 4, 2, 2], "layout": "NCHW"}],
            "outputs": [{"name": "y", "shape": [1, 4, 2, 2], "layout": "NCHW"}],
            "values": [{"name": "x", "kind": "float", "shape": [1, 2, 2, 4]},
                       {"name": "y", "kind": "float", "shape": [1, 2, 2, 4]}],
            "nodes": [{"op": "relu", "name": node_name, "inputs": ["x"], "outputs": ["y"]}],
            "tensors": []}


def write_named_model(path, node_name):
    """A one-node model file whose node is called ``node_name``, written as JSON with
    \\u escapes (so a lone surrogate or a control character gets into a file that is
    valid UTF-8 with right CRCs)."""
    data = _container(json.dumps(relu_graph(node_name), ensure_ascii=True).encode("ascii"))
    with open(path, "wb") as f:
        f.write(data)
    return path


def png_bomb(path, side=20000):
    """A valid 1-bit grayscale PNG of side x side pixels, all black: ~60 KB on disk
    (20000 x 20000: 400 megapixels, 1.2 GB once decoded as BGR)."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte 0 + the packed row
    comp = zlib.compressobj(9)
    parts = []
    block = row * 256
    for _ in range(side // 256):
        parts.append(comp.compress(block))
    parts.append(comp.compress(row * (side % 256)))
    parts.append(comp.flush())
    idat = b"".join(parts)

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                + chunk(b"IEND", b""))
    return path


def onnx_pad(path, pad=46000, out_name="y"):
    """x [1, 1, 4, 4] -> Pad (constant, bottom/right ``pad``) -> [1, 1, 4 + pad, 4 + pad]:
    an ordinary-looking graph whose output is 2.1 G elements (8 GB)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, pad, pad], np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], [out_name], name="the_pad", mode="constant")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y], [pads]),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path)
    return path


def onnx_chain(n, c=4):
    """An ONNX graph of n nodes: Mul / Add by per-channel constants and Relu, in turn."""
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 4, 4])
    nodes, inits, prev = [], [], "x"
    for i in range(n):
        out = "v%d" % i
        if i % 3 == 0:
            inits.append(numpy_helper.from_array(np.full((1, c, 1, 1), 1.01, np.float32), "m%d" % i))
            nodes.append(helper.make_node("Mul", [prev, "m%d" % i], [out], name="mul%d" % i))
        elif i % 3 == 1:
            inits.append(numpy_helper.from_array(np.full((1, c, 1, 1), 0.01, np.float32), "a%d" % i))
            nodes.append(helper.make_node("Add", [prev, "a%d" % i], [out], name="add%d" % i))
        else:
            nodes.append(helper.make_node("Relu", [prev], [out], name="relu%d" % i))
        prev = out
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def fan_in_graph(n):
    """A graph that keeps n values alive at once (n relus of the input, concatenated),
    then runs a chain of n relus on the concatenation: after the concat the planner has
    n free buffers, none large enough, for each of the n allocations that follow."""
    c = 32
    values = [{"name": "x", "kind": "float", "shape": [1, 1, 1, c]},
              {"name": "cat", "kind": "float", "shape": [1, 1, 1, c * n]}]
    nodes = []
    for i in range(n):
        values.append({"name": "v%d" % i, "kind": "float", "shape": [1, 1, 1, c]})
        nodes.append({"op": "relu", "name": "r%d" % i, "inputs": ["x"], "outputs": ["v%d" % i]})
    nodes.append({"op": "concat", "name": "cat", "inputs": ["v%d" % i for i in range(n)],
                  "outputs": ["cat"], "attrs": {"axis": 3}})
    prev = "cat"
    for i in range(n):
        values.append({"name": "w%d" % i, "kind": "float", "shape": [1, 1, 1, c * n]})
        nodes.append({"op": "relu", "name": "s%d" % i, "inputs": [prev], "outputs": ["w%d" % i]})
        prev = "w%d" % i
    return {"format": "bnn-graph", "producer": "tests.hostile", "metadata": {},
            "inputs": [{"name": "x", "shape": [1, c, 1, 1], "layout": "NCHW"}],
            "outputs": [{"name": prev, "shape": [1, c * n, 1, 1], "layout": "NCHW"}],
            "values": values, "nodes": nodes}


class StalledBroker:
    """An MQTT "broker" on 127.0.0.1 that accepts a connection, answers CONNECT with a
    CONNACK and then never reads again (tiny receive buffers, so the client's socket fills
    at once).  Every connection is treated the same; close() ends them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.connects = 0
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                c.settimeout(5)
                c.recv(256)  # CONNECT (small)
                c.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
            except OSError:
                c.close()
                continue
            self.connects += 1
            self.conns.append(c)  # ... and never read from it again

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def make_fifo(path):
    os.mkfifo(path)
    return path
