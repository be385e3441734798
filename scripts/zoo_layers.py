"""Representative convolution and pooling layers of the zoo, shared by the validation demo and the
benchmark. Each case is (name, op, input shape, op arguments); conv cases carry the weight shape."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layer:
    name: str
    op: str  # conv2d | max_pool2d | avg_pool2d | adaptive_avg_pool2d
    input_shape: tuple[int, int, int, int]
    weight_shape: tuple[int, int, int, int] | None = None
    kwargs: dict = field(default_factory=dict)

    def shrunk(self, batch: int = 1, channels: int = 8, size: int = 16) -> Layer:
        """A smaller version of the same layer (fewer images and channels, smaller planes, same kernel,
        stride, padding and groups), for smoke runs and quick checks."""
        n, c, h, w = self.input_shape
        kernel = self.weight_shape[2:] if self.weight_shape else (0, 0)
        groups = self.kwargs.get("groups", 1)
        c_small = max(min(c, channels * groups) // groups, 1) * groups
        side = max(min(h, size), max(kernel) * self.kwargs.get("dilation", 1) + 1)
        weight = None
        if self.weight_shape:
            o = self.weight_shape[0]
            o_small = max(min(o, channels * groups) // groups, 1) * groups
            weight = (o_small, c_small // groups, *kernel)
        return Layer(self.name, self.op, (min(n, batch), c_small, side, side), weight, self.kwargs)


LAYERS = [
    Layer("lenet C1 5x5", "conv2d", (64, 1, 32, 32), (6, 1, 5, 5)),
    Layer("lenet C3 5x5", "conv2d", (64, 6, 14, 14), (16, 6, 5, 5)),
    Layer("alexnet conv1 11x11/4", "conv2d", (8, 3, 224, 224), (64, 3, 11, 11), dict(stride=4, padding=2)),
    Layer("alexnet2012 conv2 5x5 g2", "conv2d", (8, 96, 27, 27), (256, 48, 5, 5), dict(padding=2, groups=2)),
    Layer("vgg 3x3 @56", "conv2d", (8, 128, 56, 56), (128, 128, 3, 3), dict(padding=1)),
    Layer("vgg 3x3 @28", "conv2d", (8, 256, 28, 28), (256, 256, 3, 3), dict(padding=1)),
    Layer("vgg 3x3 @14", "conv2d", (8, 512, 14, 14), (512, 512, 3, 3), dict(padding=1)),
    Layer("cifar resnet 3x3", "conv2d", (32, 16, 32, 32), (16, 16, 3, 3), dict(padding=1)),
    Layer("cifar resnet 3x3 32ch @16", "conv2d", (32, 32, 16, 16), (32, 32, 3, 3), dict(padding=1)),
    Layer("cifar resnet 3x3 64ch @8", "conv2d", (32, 64, 8, 8), (64, 64, 3, 3), dict(padding=1)),
    Layer("resnet18 3x3 @56", "conv2d", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    Layer("cifar resnet 3x3/2", "conv2d", (32, 16, 32, 32), (32, 16, 3, 3), dict(stride=2, padding=1)),
    Layer("resnet50 stem 7x7/2", "conv2d", (8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),
    Layer("resnet50 1x1 reduce", "conv2d", (8, 256, 56, 56), (64, 256, 1, 1)),
    Layer("resnet50 1x1 expand", "conv2d", (8, 64, 56, 56), (256, 64, 1, 1)),
    Layer("resnet50 1x1/2 downsample", "conv2d", (8, 256, 56, 56), (512, 256, 1, 1), dict(stride=2)),
    Layer("inception 1x1", "conv2d", (8, 192, 28, 28), (64, 192, 1, 1)),
    Layer("inception 3x3", "conv2d", (8, 96, 28, 28), (128, 96, 3, 3), dict(padding=1)),
    Layer("inception 5x5", "conv2d", (8, 16, 28, 28), (32, 16, 5, 5), dict(padding=2)),
    Layer("max pool 2x2/2", "max_pool2d", (8, 64, 112, 112), None, dict(kernel_size=2, stride=2)),
    Layer("max pool 3x3/2 pad 1", "max_pool2d", (8, 64, 112, 112), None, dict(kernel_size=3, stride=2, padding=1)),
    Layer("avg pool 2x2/2", "avg_pool2d", (64, 6, 28, 28), None, dict(kernel_size=2, stride=2)),
    Layer("adaptive avg 7x7->1", "adaptive_avg_pool2d", (8, 512, 7, 7), None, dict(output_size=1)),
    Layer("adaptive avg 13x13->6", "adaptive_avg_pool2d", (8, 256, 13, 13), None, dict(output_size=6)),
]

# Every distinct convolution of VGG-16 (batch 4) and ResNet-18 (batch 8) at a 224x224 input, the
# layers where the direct kernels' planes outgrow the cache (bench_ops.py --imagenet).
IMAGENET_LAYERS = [
    Layer("vgg16 3->64 @224", "conv2d", (4, 3, 224, 224), (64, 3, 3, 3), dict(padding=1)),
    Layer("vgg16 64->64 @224", "conv2d", (4, 64, 224, 224), (64, 64, 3, 3), dict(padding=1)),
    Layer("vgg16 64->128 @112", "conv2d", (4, 64, 112, 112), (128, 64, 3, 3), dict(padding=1)),
    Layer("vgg16 128->128 @112", "conv2d", (4, 128, 112, 112), (128, 128, 3, 3), dict(padding=1)),
    Layer("vgg16 128->256 @56", "conv2d", (4, 128, 56, 56), (256, 128, 3, 3), dict(padding=1)),
    Layer("vgg16 256->256 @56", "conv2d", (4, 256, 56, 56), (256, 256, 3, 3), dict(padding=1)),
    Layer("vgg16 256->512 @28", "conv2d", (4, 256, 28, 28), (512, 256, 3, 3), dict(padding=1)),
    Layer("vgg16 512->512 @28", "conv2d", (4, 512, 28, 28), (512, 512, 3, 3), dict(padding=1)),
    Layer("vgg16 512->512 @14", "conv2d", (4, 512, 14, 14), (512, 512, 3, 3), dict(padding=1)),
    Layer("resnet18 stem 7x7/2", "conv2d", (8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),
    Layer("resnet18 64->64 @56", "conv2d", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    Layer("resnet18 64->128 3x3/2", "conv2d", (8, 64, 56, 56), (128, 64, 3, 3), dict(stride=2, padding=1)),
    Layer("resnet18 64->128 1x1/2", "conv2d", (8, 64, 56, 56), (128, 64, 1, 1), dict(stride=2)),
    Layer("resnet18 128->128 @28", "conv2d", (8, 128, 28, 28), (128, 128, 3, 3), dict(padding=1)),
    Layer("resnet18 128->256 3x3/2", "conv2d", (8, 128, 28, 28), (256, 128, 3, 3), dict(stride=2, padding=1)),
    Layer("resnet18 128->256 1x1/2", "conv2d", (8, 128, 28, 28), (256, 128, 1, 1), dict(stride=2)),
    Layer("resnet18 256->256 @14", "conv2d", (8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1)),
    Layer("resnet18 256->512 3x3/2", "conv2d", (8, 256, 14, 14), (512, 256, 3, 3), dict(stride=2, padding=1)),
    Layer("resnet18 256->512 1x1/2", "conv2d", (8, 256, 14, 14), (512, 256, 1, 1), dict(stride=2)),
    Layer("resnet18 512->512 @7", "conv2d", (8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1)),
]
