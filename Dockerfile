# Tipline in a container: SQLite in the /data volume, serve as the command, run as a non-root user.
#   docker build -t tipline .
#   docker run --rm -v tipline-data:/data tipline init            # once: key ring + database (back the key up apart)
#   docker run -d -p 8080:8080 -v tipline-data:/data --env-file tipline.env tipline
# serve never makes a line: on an empty /data (a volume that did not mount) it stops in one line.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PTB_TIMEDELTA=1 \
    TIPLINE_DATA_DIR=/data TIPLINE_HOST=0.0.0.0 TIPLINE_PORT=8080

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tipline \
    && mkdir -p /data && chown tipline:tipline /data && chmod 0700 /data
WORKDIR /app
COPY pyproject.toml README.md main.py ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY locales ./locales
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER tipline
VOLUME ["/data"]
EXPOSE 8080
# /healthz says only ok or degraded (details are behind TIPLINE_SERVER__HEALTH_TOKEN).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["tipline"]
CMD ["serve"]
