# The segstream worker image (also runs `segstream replay` / `generate` for load tests).
#
# Two stages so the runtime image carries the installed venv and nothing of the
# build (pip caches, sources). Every dependency ships manylinux wheels, so the
# slim base needs no compiler.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Exactly what `pip install .` reads: pyproject's package-dir folders and readme.
COPY pyproject.toml README.md ./
COPY segstream ./segstream
COPY flows ./flows
COPY operators ./operators
COPY state ./state
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed non-root uid; the directories compose mounts named volumes on are
# created here, owned by that user, because a new named volume copies the
# ownership of the image directory it is mounted on (else it is root-owned and
# the worker cannot create its recovery store).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/segstream \
        --shell /usr/sbin/nologin segstream \
    && install -d -o segstream -g segstream /var/lib/segstream /var/lib/segstream/recovery /data
COPY --from=build /opt/venv /opt/venv
USER segstream
WORKDIR /var/lib/segstream
EXPOSE 9464
# Exec form: segstream is PID 1 and receives SIGTERM itself (a shell would not
# forward it), so `docker stop` gives the clean, flushed stop.
ENTRYPOINT ["segstream"]
CMD ["run"]
