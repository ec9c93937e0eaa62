"""Networks: the Models Genesis 3D U-Net, PCRL's heads, the 2D ResNet-18 U-Net, checkpoint loading.

See docs/method.md "Networks" and docs/INTERFACES.md (pcrl/networks). Import from the
modules (this package imports none of them, so that fine-tuning a task loads only the
networks it builds, and its dvc.yaml code deps list only those):

    unet3d          the Models Genesis 3D U-Net (Zhou et al., MICCAI 2019)
    resnet18        the ResNet-18 encoder (torchvision's key names)
    heads           PCRL's projection head and TCA gate, for either U-Net
    blocks          what the two U-Nets share (checks, group norm, output layer)
    pcrl_net        the 3D U-Net with PCRL's heads
    resnet_unet2d   the 2D U-Net over the ResNet-18 with PCRL's heads
    factory         the pretraining networks by ``pretrain.network.arch``
    state_dict      loading checkpoints by the release's key names
"""
