# fastclv container images, built from the pinned dependencies in uv.lock.
#
#   docker build -t fastclv .                            the command line (default target)
#   docker run --rm fastclv run --input s3://bucket/in/ --staging s3://bucket/staging --pg-uri ...
#   docker build --target airflow -t fastclv-airflow .   Airflow 3 with fastclv installed (docker-compose.yml)
#
# Both run as a non-root user. Nothing is downloaded at run time: DuckDB needs no extension.

ARG PYTHON_VERSION=3.11
ARG AIRFLOW_VERSION=3.3.2
ARG UV_VERSION=0.13.8
# -- builder: resolve nothing, install exactly what uv.lock pins; build the wheel -------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ARG UV_VERSION
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
    && apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# The Rust toolchain that builds the native scanner (native/, by maturin).
COPY --from=rust:1.95-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1.95-slim-bookworm /usr/local/rustup /usr/local/rustup
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/fastclv
WORKDIR /src
# Dependencies first (a layer that survives code changes), then the package itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project \
    && uv export --frozen --no-dev --no-emit-project --output-file /requirements.txt
COPY native ./native
COPY fastclv ./fastclv
RUN uv sync --frozen --no-dev --no-editable \
    && uv build --wheel --out-dir /dist

# -- airflow: the DAG's runtime (docker-compose.yml mounts dags/) --------------------------------
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS airflow
# uv.lock was resolved together with this Airflow version (dev group), so its pins fit it.
COPY --from=builder /requirements.txt /tmp/fastclv/requirements.txt
COPY --from=builder /dist/ /tmp/fastclv/dist/
RUN pip install --no-cache-dir --no-deps --require-hashes -r /tmp/fastclv/requirements.txt \
    && pip install --no-cache-dir --no-deps /tmp/fastclv/dist/*.whl
USER root
# Local staging (FASTCLV_STAGING=/data/staging) and a work folder the airflow user owns.
RUN mkdir -p /data/staging /data/input && chown -R airflow:0 /data && rm -rf /tmp/fastclv
USER airflow
ENV OPENBLAS_NUM_THREADS=1

# -- runtime: the fastclv command line (default target) -----------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --gid 10001 fastclv \
    && useradd --uid 10001 --gid fastclv --create-home --shell /usr/sbin/nologin fastclv
COPY --from=builder /opt/fastclv /opt/fastclv
ENV PATH=/opt/fastclv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1
USER fastclv
WORKDIR /home/fastclv
ENTRYPOINT ["fastclv"]
CMD ["--help"]
