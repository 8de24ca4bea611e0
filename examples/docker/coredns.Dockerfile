# syntax=docker/dockerfile:1
# CoreDNS with the healthswitch plugin. Build from the repository root:
#   docker build -f examples/docker/coredns.Dockerfile -t healthswitch/coredns:dev .
# The image needs no capabilities: it listens on 1053 (DNS), 8053 (push API),
# 9153 (metrics), 8080 (health) and 8181 (ready); the Service maps 53 to 1053.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/coredns ./cmd/coredns

# distroless/static: CA certificates, /etc/passwd with `nonroot`, tzdata; no
# shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/coredns /coredns
USER nonroot:nonroot
EXPOSE 1053/udp 1053/tcp 8053/tcp 9153/tcp 8080/tcp 8181/tcp
ENTRYPOINT ["/coredns"]
CMD ["-conf", "/etc/coredns/Corefile"]
