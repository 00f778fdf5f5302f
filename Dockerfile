# syntax=docker/dockerfile:1
# drip: a slim image with pinned, hash-checked dependencies, run as a non-root user.
# Build: docker build -t drip .   Dependencies: requirements.lock, and what builds them:
# requirements-build.lock (refresh both: make lock).

# -- build: every wheel, from the lock files, checked against their hashes ----------------
FROM python:3.11.13-slim-bookworm AS build
WORKDIR /src
COPY requirements-build.lock requirements.lock ./
# the build tools themselves hash-checked; then no isolated build fetches unpinned ones
RUN pip install --no-cache-dir --require-hashes -r requirements-build.lock \
    && pip wheel --no-cache-dir --require-hashes --no-build-isolation \
        --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY drip ./drip
COPY emails ./emails
COPY courses ./courses
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# -- runtime: the wheels installed, no compiler, no pip cache, no build files -------------
FROM python:3.11.13-slim-bookworm
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin drip \
    && mkdir -p /data /app/courses && chown drip:drip /data
# the wheels are mounted for this step only: no layer keeps them
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl
COPY courses /app/courses
WORKDIR /data
USER drip
# the SQLite database and its generated signing key live here: mount a volume on it
VOLUME ["/data"]
ENV DRIP_DATABASE_URL=sqlite:////data/drip.db \
    DRIP_COURSES_DIR=/app/courses \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# for `drip serve`; the compose file turns it off for the services that serve no HTTP
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["drip"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
