# syntax=docker/dockerfile:1
# healthswitch-sidecar. Build from the repository root:
#   docker build -f examples/docker/sidecar.Dockerfile -t healthswitch/sidecar:dev .
#   docker build -f examples/docker/sidecar.Dockerfile --target node -t healthswitch/sidecar-node:dev .
#
# Two images from one build:
#   (default)  distroless, non-root, no capabilities: http, tcp, dns and
#              postgres checks, and the ovs preset (it reads /proc directly).
#   node       the same binary plus the programs the node presets fork:
#              crictl (pods), iptables (iptables), nft (nftables),
#              systemctl (crio), virsh (vm). See examples/docker/README.md
#              for the privileges each preset needs at run time.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/healthswitch-sidecar ./cmd/healthswitch-sidecar

# crictl is not packaged in Debian; take the release tarball and check it
# against the checksum published with it.
FROM debian:bookworm-slim AS crictl
ARG CRICTL_VERSION=v1.32.0
ARG TARGETARCH=amd64
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSLo /tmp/crictl.tgz "https://github.com/kubernetes-sigs/cri-tools/releases/download/${CRICTL_VERSION}/crictl-${CRICTL_VERSION}-linux-${TARGETARCH}.tar.gz" \
 && curl -fsSLo /tmp/crictl.tgz.sha256 "https://github.com/kubernetes-sigs/cri-tools/releases/download/${CRICTL_VERSION}/crictl-${CRICTL_VERSION}-linux-${TARGETARCH}.tar.gz.sha256" \
 && echo "$(cat /tmp/crictl.tgz.sha256)  /tmp/crictl.tgz" | sha256sum -c - \
 && tar -xzf /tmp/crictl.tgz -C /usr/local/bin crictl

# The node image: a slim Debian, because the presets fork real tools.
# It still runs as a non-root user by default; the DaemonSet chooses uid 0
# and exactly the capabilities it needs (examples/kubernetes/components/node-sidecar).
FROM debian:bookworm-slim AS node
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables libvirt-clients systemd \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --no-create-home nonroot
COPY --from=crictl /usr/local/bin/crictl /usr/local/bin/crictl
COPY --from=build /out/healthswitch-sidecar /healthswitch-sidecar
USER 65532:65532
EXPOSE 9100/tcp
ENTRYPOINT ["/healthswitch-sidecar"]
CMD ["-config", "/etc/healthswitch/config/sidecar.yaml"]

# The default image (last stage): app-level checks only.
FROM gcr.io/distroless/static-debian12:nonroot AS app
COPY --from=build /out/healthswitch-sidecar /healthswitch-sidecar
USER nonroot:nonroot
EXPOSE 9100/tcp
ENTRYPOINT ["/healthswitch-sidecar"]
CMD ["-config", "/etc/healthswitch/config/sidecar.yaml"]
