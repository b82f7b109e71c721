"""The ringserve SDK: sync and asyncio clients over TCP or a Unix socket.

Installs without TensorFlow: it needs numpy and msgpack and imports only
`ringserve.ipc` beside itself.

    from ringserve.client import Client
    with Client("unix:///run/ringserve/ringserve.sock") as c:
        outputs = c.infer("mlp", {"x": batch})
"""

from .aio import AsyncClient
from .errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RingserveError,
    Unauthenticated,
    Unavailable,
)
from .shm import SharedRegion, ShmTensor
from .sync import Client

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "RingserveError",
    "SharedRegion",
    "ShmTensor",
    "Unauthenticated",
    "Unavailable",
]
