"""cpixelcnn: fast, exact class-conditional PixelCNN++."""

from cpixelcnn._extension import extension_available
from cpixelcnn._version import __version__  # noqa: F401  (public: cpixelcnn.__version__)
from cpixelcnn.classifier import class_log_likelihoods, classify
from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.model_config import ModelConfig
from cpixelcnn.ops.dmol import bits_per_dim, dmol_log_prob
from cpixelcnn.per_class_model import PerClassPixelCNN
from cpixelcnn.pixelcnnpp_port import import_pixelcnnpp
from cpixelcnn.rundir import load_run, save_run
from cpixelcnn.sampling import sample

__all__ = [
    "ConditionalPixelCNN",
    "ModelConfig",
    "PerClassPixelCNN",
    "dmol_log_prob",
    "bits_per_dim",
    "sample",
    "classify",
    "class_log_likelihoods",
    "extension_available",
    "import_pixelcnnpp",
    "save_run",
    "load_run",
]
