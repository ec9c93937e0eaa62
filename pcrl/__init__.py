"""PCRL: Preservational Contrastive Representation Learning (Zhou et al., ICCV 2021) as a pipeline."""

__version__ = "0.1.0"
