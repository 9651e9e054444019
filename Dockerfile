# The qis regional broker in a container. Multi-stage: the build stage compiles TypeScript with the
# dev dependencies, the runtime stage holds only the built JavaScript and production dependencies,
# and runs as the unprivileged `node` user.
#
#   docker build -t qis-broker .
#   docker run -d --name qis -p 1883:1883 -v qis-data:/data qis-broker
#   docker run --rm qis-broker broker --help            # any qis command: the entrypoint is `qis`
#
# The durable store lives in the /data volume (back it up: README "Deploying"). /healthz and
# /metrics listen on 127.0.0.1:9100 inside the container (HEALTHCHECK below); to scrape metrics
# from outside add `--http 0.0.0.0:9100` and publish the port.
# The listener is not on loopback, so anonymous clients are refused by default (README "Security"):
# give clients credentials (`--auth.password-file`, node login, mTLS), or, on a closed network
# only, add `--auth.allow-anonymous true`.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY broker ./broker
COPY cli ./cli
COPY firmware-bridge ./firmware-bridge
COPY console ./console
COPY bench ./bench
COPY examples ./examples
# npm ci builds dist/ (the prepare script); then drop the dev dependencies.
RUN npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/broker ./dist/broker
COPY --from=build /app/dist/cli ./dist/cli
COPY --from=build /app/dist/firmware-bridge ./dist/firmware-bridge
COPY --from=build /app/dist/console/www ./dist/console/www
COPY examples/*.yaml ./examples/
COPY LICENSE README.md ./
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 1883
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9100/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli/qis.js"]
CMD ["broker", "--data-dir", "/data", "--listen", "tcp://0.0.0.0:1883", "--http", "127.0.0.1:9100"]
