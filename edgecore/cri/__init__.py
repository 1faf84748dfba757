"""CRI for Edged: the minimal runtime.v1 proto (proto/api.proto), compiled on first use (generate.py),
typed mirrors of its messages (types.py) and an asyncio gRPC client (client.py).
"""

from edgecore.cri.client import CRIClient, CRIError, grpc_target
from edgecore.cri.generate import CRIProtoError

__all__ = ["CRIClient", "CRIError", "CRIProtoError", "grpc_target"]
