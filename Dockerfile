# The demo service of docker-compose.yml: `instrumented-clients demo` serving /metrics and /health.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY instrumented_clients ./instrumented_clients
RUN pip install '.[all]'

# An unprivileged user: the demo needs no root.
RUN useradd --create-home --uid 10001 demo
USER demo

EXPOSE 8000
ENTRYPOINT ["instrumented-clients"]
CMD ["demo"]
