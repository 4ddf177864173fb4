# syntax=docker/dockerfile:1
# The image of the fedgate hub (embedded etcd, compile loop, gRPC API for spokes and hubctl), for a Docker daemon or BuildKit:
#
#   docker build -f deploy/images/hub.Dockerfile --build-arg VERSION=$(hack/version.sh) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t fedgate/hub:$(hack/version.sh) .
#
# `make images` (hack/images) builds the same image without a daemon: a static binary, the numeric non-root user
# 65532, the binary as entrypoint.
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=
ARG TARGETOS
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/fedgate/fedgate/internal/version.version=${VERSION} -X github.com/fedgate/fedgate/internal/version.revision=${REVISION}" \
      -o /out/hub ./cmd/hub

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=
LABEL org.opencontainers.image.title="fedgate hub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/fedgate/fedgate"
COPY --from=build /out/hub /hub
USER 65532:65532
ENTRYPOINT ["/hub"]
