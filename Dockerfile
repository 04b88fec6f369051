# banditloop: the same service as `make run`, in a container.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    BANDITLOOP_HOST=0.0.0.0 BANDITLOOP_PORT=8080 BANDITLOOP_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system --home /data banditloop \
    && mkdir -p /data && chown banditloop /data

USER banditloop
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["banditloop", "serve"]
