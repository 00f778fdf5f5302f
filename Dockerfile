# drip: a slim image with pinned, hash-checked dependencies, run as a non-root user.
# Build: docker build -t drip .   Dependencies: requirements.lock (refresh: make lock).

# -- build: every wheel, from the lock file, checked against its hashes -------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY drip ./drip
COPY emails ./emails
COPY courses ./courses
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- runtime: the wheels installed, no compiler, no pip cache, no build files -------------
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin drip \
    && mkdir -p /data /app/courses && chown drip:drip /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && rm -rf /wheels
COPY courses /app/courses
WORKDIR /data
USER drip
ENV DRIP_DATABASE_URL=sqlite:////data/drip.db \
    DRIP_COURSES_DIR=/app/courses \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["drip"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
