# syntax=docker/dockerfile:1
# The image deploy/k8s runs: one image for every role; the command picks it
# (`fleet worker <pool>`, `fleet api`, `fleet beat`). No secret enters the build:
# settings and credentials arrive at run time from the ConfigMap and the Secret.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml app.py queues.py routing.py ./
COPY fleet ./fleet
# Wheels for fleet and its pinned dependencies, so the runtime stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLEET_VAR_DIR=/var/lib/fleet
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fleet --no-create-home \
       --shell /usr/sbin/nologin fleet \
    && install -d -o 10001 -g 10001 /var/lib/fleet
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/fleet
EXPOSE 5000 9808
# Exec form: the fleet process is PID 1 and receives SIGTERM for its warm shutdown.
ENTRYPOINT ["fleet"]
CMD ["worker", "default"]
