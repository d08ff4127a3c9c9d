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
# A health probe that needs nothing but the image: the grpc.health.v1 Check of the server on $PORT.
COPY --chown=pullgate docker/healthcheck.py /app/healthcheck.py
# gRPC on the port each service is given; Prometheus metrics on $PULLGATE_METRICS_PORT (compose: 9464).
EXPOSE 9464
ENTRYPOINT ["pullgate"]
