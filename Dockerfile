# syntax=docker/dockerfile:1
# Minimal image (completed by the deployment issue): build a wheel, install it into a clean venv,
# run as a non-root user with config and policies mounted.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/tenantgate --create-home tenantgate
COPY --from=build /opt/venv /opt/venv
COPY policies /etc/tenantgate/policies
COPY deploy/tenantgate.example.toml /etc/tenantgate/tenantgate.toml
USER 10001
ENV PATH=/opt/venv/bin:$PATH
EXPOSE 50051 9464
ENTRYPOINT ["tenantgate", "serve", "--config", "/etc/tenantgate/tenantgate.toml"]
