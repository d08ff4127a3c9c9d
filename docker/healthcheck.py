"""Container health check: exit 0 if the pullgate server on localhost:$PORT reports SERVING.

It calls as the server's peers do, through TLS: presenting the certificate $TLS_CERT (key $TLS_KEY; health is
open to any caller with a certificate from the CA), trusting the CA bundle $TLS_CA, and checking that the server's
certificate names service $SERVICE. Without the three files, plaintext: a server started `--insecure`.
"""

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullgate.security.tls import TlsChannels, TlsError, TlsFiles

address = f"127.0.0.1:{os.environ.get('PORT', '50050')}"
files = [os.environ.get(name, "") for name in ("TLS_CERT", "TLS_KEY", "TLS_CA")]
if not any(files):
    channel = grpc.insecure_channel(address)
elif all(files) and os.environ.get("SERVICE"):
    try:
        tls = TlsChannels(TlsFiles(*(Path(f) for f in files)))
    except TlsError as error:
        sys.exit(f"healthcheck: {error}")
    channel = tls.sync_channel(os.environ["SERVICE"], address)
else:
    sys.exit("healthcheck: TLS_CERT, TLS_KEY, TLS_CA and SERVICE go together")

with channel:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.RpcError:
        sys.exit(1)
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
