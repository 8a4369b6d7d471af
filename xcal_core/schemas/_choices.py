"""Names the list parameters of the schemas accept, as literal tuples.

The schemas are read when a batch is planned, so they do not import the registries (which load torch
and torchvision); ``tests/test_params.py`` checks that these tuples equal the registries
(``xcal_core.models.available_models()``, ``xcal_core.explainers.available_methods()``,
``xcal_core.data.DATASETS``). A string holding ``*`` is a pattern (:class:`xcal_core.params.Param`).
"""

EXPLAINERS = (
    'deconvolution', 'deeplift', 'feature_ablation', 'gradcam', 'gradient', 'gradient_shap',
    'guided_backprop', 'guided_gradcam', 'input_x_gradient', 'integrated_gradients', 'kernel_shap',
    'lime', 'lrp', 'meaningful_perturbation', 'occlusion', 'rise', 'saliency', 'shapley_exact',
    'shapley_sampling', 'smoothgrad', 'vargrad',
)
"""Registered explanation methods (``xcal_core.explainers.available_methods()``)."""

BUILTIN_MODELS = (
    'mlp', 'tabular_resnet', 'small_cnn', 'resnet18_cifar', 'resnet_cifar', 'resnet20', 'vgg_cifar',
)
"""Built-in architectures (``xcal_core.models.MODELS``)."""

TORCHVISION_MODELS = (
    'tv:alexnet', 'tv:convnext_base', 'tv:convnext_large', 'tv:convnext_small', 'tv:convnext_tiny',
    'tv:densenet121', 'tv:densenet161', 'tv:densenet169', 'tv:densenet201', 'tv:efficientnet_b0',
    'tv:efficientnet_b1', 'tv:efficientnet_b2', 'tv:efficientnet_b3', 'tv:efficientnet_b4',
    'tv:efficientnet_b5', 'tv:efficientnet_b6', 'tv:efficientnet_b7', 'tv:efficientnet_v2_l',
    'tv:efficientnet_v2_m', 'tv:efficientnet_v2_s', 'tv:googlenet', 'tv:inception_v3',
    'tv:maxvit_t', 'tv:mnasnet0_5', 'tv:mnasnet0_75', 'tv:mnasnet1_0', 'tv:mnasnet1_3',
    'tv:mobilenet_v2', 'tv:mobilenet_v3_large', 'tv:mobilenet_v3_small', 'tv:regnet_x_16gf',
    'tv:regnet_x_1_6gf', 'tv:regnet_x_32gf', 'tv:regnet_x_3_2gf', 'tv:regnet_x_400mf',
    'tv:regnet_x_800mf', 'tv:regnet_x_8gf', 'tv:regnet_y_128gf', 'tv:regnet_y_16gf',
    'tv:regnet_y_1_6gf', 'tv:regnet_y_32gf', 'tv:regnet_y_3_2gf', 'tv:regnet_y_400mf',
    'tv:regnet_y_800mf', 'tv:regnet_y_8gf', 'tv:resnet101', 'tv:resnet152', 'tv:resnet18',
    'tv:resnet34', 'tv:resnet50', 'tv:resnext101_32x8d', 'tv:resnext101_64x4d',
    'tv:resnext50_32x4d', 'tv:shufflenet_v2_x0_5', 'tv:shufflenet_v2_x1_0', 'tv:shufflenet_v2_x1_5',
    'tv:shufflenet_v2_x2_0', 'tv:squeezenet1_0', 'tv:squeezenet1_1', 'tv:swin_b', 'tv:swin_s',
    'tv:swin_t', 'tv:swin_v2_b', 'tv:swin_v2_s', 'tv:swin_v2_t', 'tv:vgg11', 'tv:vgg11_bn',
    'tv:vgg13', 'tv:vgg13_bn', 'tv:vgg16', 'tv:vgg16_bn', 'tv:vgg19', 'tv:vgg19_bn', 'tv:vit_b_16',
    'tv:vit_b_32', 'tv:vit_h_14', 'tv:vit_l_16', 'tv:vit_l_32', 'tv:wide_resnet101_2',
    'tv:wide_resnet50_2',
)
"""Torchvision classification architectures as ``tv:<arch>`` (the pinned torchvision's list)."""

MODELS = BUILTIN_MODELS + TORCHVISION_MODELS
"""Every name ``xcal_core.models.build_model`` accepts."""

DATASETS = (
    'digits', 'breast_cancer', 'wine', 'iris', 'diabetes', 'shapes', 'synthetic_tabular', 'cifar10',
    'cifar100', 'stl10', 'imagenet', 'california_housing', 'food101', 'cub200', 'fashion_mnist',
) + ("openml:*",) + tuple("standin:" + n for n in (
    'california_housing', 'cifar10', 'cifar100', 'covertype', 'credit', 'cub200', 'electricity',
    'food101', 'imagenet', 'pol', 'stl10',
))
"""Every name ``xcal_core.data.load_dataset`` accepts (``openml:<id or name>`` as a pattern)."""
