"""ringserve: serve TensorFlow SavedModels on one host through shared-memory rings.

`import ringserve` loads only the SDK's dependencies (numpy, msgpack); the server parts
live in `ringserve.runtime` and `ringserve.frontend` and TensorFlow is imported only by
`ringserve.runtime.worker`.
"""

__version__ = "0.1.0"

from ringserve.native import install_switch as _install_switch

_install_switch()
