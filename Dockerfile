# The upload-plane API image: `upload-plane serve` by default; also runs `upload-plane worker`,
# `migrate`, `init-storage` and `users create`. WORKDIR /app holds migrations/, alembic.ini and web-demo/, which the commands
# find from the working directory.
# The web demo's browser packages (Uppy, CRC64NVME, SHA-256, Swagger UI) from npm, pinned by the lock file.
FROM node:20-slim AS web
WORKDIR /web
COPY web-demo/package.json web-demo/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 upload-plane \
    && useradd --system --uid 10001 --gid upload-plane --home-dir /app --shell /usr/sbin/nologin upload-plane

WORKDIR /app

# The processing workers' decoders: ffmpeg/ffprobe (video), libmagic (identification).
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends ffmpeg libmagic1 \
    && rm -rf /var/lib/apt/lists/*

# The pinned dependencies (requirements.lock, hashes checked), then the package itself. The embedded
# store (moto) and SQLite driver are an extra the image leaves out.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --no-deps . && rm -rf build src/*.egg-info

COPY alembic.ini ./
COPY migrations/ migrations/
COPY web-demo/ web-demo/
COPY --from=web /web/node_modules web-demo/node_modules

USER upload-plane
EXPOSE 8000
CMD ["upload-plane", "serve", "--host", "0.0.0.0", "--port", "8000"]
