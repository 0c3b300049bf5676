"""Build a small ONNX network with random weights, for docs/models.md (needs `onnx` only).

    python samples/make_model.py tiny model.onnx       # 5 conv layers, any input size
    python samples/make_model.py resnet18 model.onnx   # the 20 conv layers of ResNet-18

``tiny``: Conv 3→8 3×3 pad 1; Conv 8→16 3×3 stride 2; depthwise 3×3 (groups 16);
Conv 16→8 1×1; ConvTranspose 8→4 4×4 stride 2 (ReLU in between). ``resnet18``:
ResNet-18's convolutions, max-pool and residual additions (He et al., 2016), without
batch norm or the classifier. Weights are He-initialized from a fixed seed, so the
file is the same on every run.
"""

from __future__ import annotations

import sys

import numpy as np


class _Graph:
    """Nodes and initializers of a graph under construction."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes, self.weights, self.rng, self.count = [], [], np.random.default_rng(seed), 0

    def conv(self, x, c_in, c_out, k, *, stride=1, pad=None, groups=1, transpose=False):
        from onnx import helper, numpy_helper

        self.count += 1
        name = f"conv{self.count}"
        pad = k // 2 if pad is None else pad
        shape = (c_in, c_out // groups, k, k) if transpose else (c_out, c_in // groups, k, k)
        weight = self.rng.standard_normal(shape) * np.sqrt(2.0 / (shape[1] * k * k))
        self.weights.append(numpy_helper.from_array(weight.astype(np.float32), f"{name}.weight"))
        self.nodes.append(
            helper.make_node(
                "ConvTranspose" if transpose else "Conv",
                [x, f"{name}.weight"],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
                dilations=[1, 1],
                group=groups,
            )
        )
        return name

    def op(self, kind, inputs, **attrs):
        from onnx import helper

        self.count += 1
        name = f"{kind.lower()}{self.count}"
        self.nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def model(self, output, channels):
        from onnx import TensorProto, helper

        image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, channels, "H", "W"])
        result = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, "net", [image], [result], self.weights)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def tiny():
    g = _Graph()
    x = g.op("Relu", [g.conv("image", 3, 8, 3)])
    x = g.op("Relu", [g.conv(x, 8, 16, 3, stride=2)])
    x = g.op("Relu", [g.conv(x, 16, 16, 3, groups=16)])
    x = g.op("Relu", [g.conv(x, 16, 8, 1)])
    return g.model(g.conv(x, 8, 4, 4, stride=2, pad=1, transpose=True), 3)


def resnet18():
    g = _Graph()
    x = g.op("Relu", [g.conv("image", 3, 64, 7, stride=2)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for c_out, first_stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for stride in (first_stride, 1):
            y = g.op("Relu", [g.conv(x, c_in, c_out, 3, stride=stride)])
            y = g.conv(y, c_out, c_out, 3)
            skip = x if stride == 1 and c_in == c_out else g.conv(x, c_in, c_out, 1, stride=stride)
            x, c_in = g.op("Relu", [g.op("Add", [y, skip])]), c_out
    return g.model(x, 3)


if __name__ == "__main__":
    import onnx

    builders = {"tiny": tiny, "resnet18": resnet18}
    if len(sys.argv) != 3 or sys.argv[1] not in builders:
        sys.exit(f"usage: python {sys.argv[0]} {{tiny|resnet18}} OUT.onnx")
    onnx.save(builders[sys.argv[1]](), sys.argv[2])
