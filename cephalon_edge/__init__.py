"""cephalon-edge: ship dynamic neural networks to phones and boards.

This package imports nothing heavy: the device half (manifest, router, runtimes)
must work with numpy and a runtime alone.
"""

__version__ = "0.1.0"
