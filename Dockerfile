# The operator image: slim, non-root, dependencies pinned by pyproject.toml.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# Only the operator package goes into the image (devtools are for tests).
RUN sed -i 's/where = \["operator", "devtools"\]/where = ["operator"]/' pyproject.toml \
 && pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["cachetier-operator"]
