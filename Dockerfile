# syntax=docker/dockerfile:1

# Alpine: the smallest official Node image, and argon2 ships a prebuilt binary for musl
# (node_modules/argon2/prebuilds/linux-x64/argon2.musl.node, and linux-arm64), which needs only
# libstdc++ and libgcc, as Node itself does. PGlite is WebAssembly and pg is JavaScript: nothing
# else is native. So no stage needs a compiler.

# --- build: compile TypeScript, then keep the production dependencies only ----------------------
FROM node:24-alpine AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
# npm ci runs the `prepare` script, which builds dist/src; argon2's install step finds its musl
# prebuild and compiles nothing.
RUN npm ci && npm prune --omit=dev && npm cache clean --force

# --- runtime: Node, the production dependencies and the compiled server --------------------------
FROM node:24-alpine AS runtime
# The admin API listens on the container's own loopback: reachable with `docker exec` (the CLI
# inside the image), never from another container of the network or a published port by
# accident. To reach it from outside, set ADMIN_HOST=0.0.0.0 and publish 8081 on a trusted
# address yourself (README, Deploying).
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    ADMIN_HOST=127.0.0.1 \
    ADMIN_PORT=8081 \
    DATA_DIR=/data
# The server never runs npm or yarn: without them the image is smaller and has less to patch.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/bin/npm /usr/local/bin/npx /opt/yarn-* /usr/local/bin/yarn /usr/local/bin/yarnpkg
WORKDIR /app
# package.json stays beside migrations/: the server finds its migrations by walking up to the
# directory that holds both.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY migrations ./migrations
# Fail the image build, not the container, if the native module does not load here.
RUN node -e "require('argon2').hash('tessera').then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })"
# The embedded database, key-encryption-key and admin-client.json live in DATA_DIR (unused with
# DATABASE_URL), owned by the unprivileged user the server runs as and closed to everyone else.
RUN mkdir -p /data && chown node:node /data && chmod 700 /data
USER node
VOLUME ["/data"]
# The public API only: the admin port is not for publishing (above).
EXPOSE 8080
# Liveness; an orchestrator's readiness check should ask /readyz (docker-compose.yml does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "dist/src/cli/main.js", "serve"]
