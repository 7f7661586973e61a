# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# /data/videos exists (owned by the gateway user) so a fresh volume mounted there is writable too
RUN useradd --create-home --uid 10001 gateway && mkdir -p /data/videos /etc/sora-gateway && chown -R gateway /data
COPY --from=build /install /usr/local
COPY config /etc/sora-gateway/examples
USER gateway
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
ENTRYPOINT ["sora-gateway"]
CMD ["serve", "--config", "/etc/sora-gateway/gateway.toml", "--host", "0.0.0.0", "--port", "8080"]
