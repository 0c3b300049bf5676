"""deconv: convolution, its exact adjoint, and true deconvolution.

The public Python API (``docs/api.md``)::

    from deconv_cli import convolve, transpose, invert, analyze, compare
    from deconv_cli import ConvOperator, dottest, load_kernel, read_image, write_image

The names are imported on first use (:func:`__getattr__`), so that importing the
package, and ``deconv --help``, stay fast.
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "convolve": "deconv_cli.api",
    "transpose": "deconv_cli.api",
    "invert": "deconv_cli.api",
    "analyze": "deconv_cli.api",
    "compare": "deconv_cli.api",
    "load_kernel": "deconv_cli.api",
    "read_image": "deconv_cli.api",
    "write_image": "deconv_cli.api",
    "ConvOperator": "deconv_cli.operators",
    "dottest": "deconv_cli.operators",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deconv_cli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
