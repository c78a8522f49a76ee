# mqgate in a container: one static binary on distroless, as a non-root user.
#
#   docker build -t mqgate --build-arg COMMIT=$(git rev-parse HEAD) --build-arg VERSION=$(git describe --tags --always) .
#   docker run -p 1883:1883 -v $PWD/mqgate.yaml:/etc/mqgate/mqgate.yaml:ro mqgate
#
# The build step is scripts/build-static.sh, which the tests run with the
# same flags (deploy/deploy_test.go), since Docker does not run where they do.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN VERSION="${VERSION}" COMMIT="${COMMIT}" scripts/build-static.sh /out/mqgate \
 && mkdir -p /out/state

# distroless/static: CA certificates, /etc/passwd with the nonroot user
# (65532), tzdata, and nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mqgate /usr/local/bin/mqgate
# The Admin API's state file goes here (state_file: /var/lib/mqgate/...);
# a volume mounted on it starts with this owner.
COPY --from=build --chown=65532:65532 /out/state /var/lib/mqgate
USER 65532:65532
# MQTT, MQTT over TLS, MQTT over WebSocket, the Admin API and dashboard.
# All above 1024: no capability is needed to listen.
EXPOSE 1883 8883 8083 9180
ENTRYPOINT ["/usr/local/bin/mqgate"]
CMD ["run", "-c", "/etc/mqgate/mqgate.yaml"]
