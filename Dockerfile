# One image for every role; the command picks it (see docker-compose.yml and the Procfile).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins -p api -p worker

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/api /src/target/release/worker /usr/local/bin/
ENV STOFLOW_API__BIND=0.0.0.0:8080
# Production mode: the processes refuse to start until the keys are set (docker-compose.yml and
# README, "Production settings").
ENV STOFLOW_ENV=production
