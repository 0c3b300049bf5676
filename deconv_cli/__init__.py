"""deconv: convolution, its exact adjoint, and true deconvolution."""

__version__ = "0.1.0"
