# One image for every pullgate process; the command chooses which: `pullgate serve <service> ...`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pullgate ./pullgate
COPY gateway ./gateway
COPY services ./services
COPY resilience ./resilience
RUN pip install --no-cache-dir . && useradd --create-home pullgate && mkdir -p /data && chown pullgate /data
USER pullgate
# A health probe: the grpc.health.v1 Check of the server on $PORT, through TLS with the certificate that
# $TLS_CERT, $TLS_KEY and $TLS_CA name (docker/healthcheck.py; plaintext without them, for an --insecure server).
COPY --chown=pullgate docker/healthcheck.py /app/healthcheck.py
# gRPC on the port each service is given; Prometheus metrics on $PULLGATE_METRICS_PORT (compose: 9464).
EXPOSE 9464
ENTRYPOINT ["pullgate"]
