# The image holds one file: the static musl binary that `make static` builds (`make image`
# runs both). HTTPS roots are compiled into the binary, so no CA bundle is needed, and the
# binary needs no libc, /etc or shell.
FROM scratch
ARG BINARY=target/x86_64-unknown-linux-musl/release/fly-autoscaler
COPY ${BINARY} /fly-autoscaler
# Unprivileged by number: a scratch image has no /etc/passwd to look names up in.
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/fly-autoscaler"]
CMD ["serve"]
