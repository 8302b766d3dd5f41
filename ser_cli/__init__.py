"""ser: Saliency-driven Experience Replay (Bellitto et al., NeurIPS 2024) as a command-line toolkit and library."""

__version__ = "0.1.0"
