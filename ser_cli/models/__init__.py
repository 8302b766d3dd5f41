"""Networks of SER (Bellitto et al., NeurIPS 2024): backbones by name, the saliency predictor, the modulation.

`build_backbone("resnet18", num_classes)` gives the continual-learning ResNet-18 with five pre-ReLU taps
(`resnet50`, `mobilenet_v2`, `efficientnet_b0`: torchvision's, cut at five pre-activation taps);
`SaliencyNet("resnet18")` the UNISAL-style saliency predictor on the same architecture; `build_modulation("multiply",
channels, blocks)` how the saliency taps modulate the classifier's (method.md section 3).
"""

from ser_cli.models.modulation import (
    MODULATIONS,
    Modulation,
    build_modulation,
    modulation_names,
    register_modulation,
)
from ser_cli.models.registry import BACKBONES, Backbone, backbone_names, build_backbone, register_backbone
from ser_cli.models.resnet import ResNet, resnet18, resnet18_reduced
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.models.torchvision_backbones import (
    TorchvisionBackbone,
    efficientnet_b0,
    load_torchvision_weights,
    mobilenet_v2,
    resnet50,
)

__all__ = [
    "BACKBONES",
    "MODULATIONS",
    "Backbone",
    "Modulation",
    "ResNet",
    "SaliencyNet",
    "TorchvisionBackbone",
    "backbone_names",
    "build_backbone",
    "build_modulation",
    "efficientnet_b0",
    "load_torchvision_weights",
    "mobilenet_v2",
    "modulation_names",
    "register_backbone",
    "register_modulation",
    "resnet18",
    "resnet50",
    "resnet18_reduced",
]
