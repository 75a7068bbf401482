# syntax=docker/dockerfile:1

# --- build: compile TypeScript, and argon2 for this image ---------------------------------------
FROM node:20-bookworm-slim AS build
# argon2 0.45's prebuilt linux-x64 binary crashes (SIGSEGV) when Node 20 loads it on Debian
# bookworm, so it is compiled from source here; that needs a toolchain.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
# npm ci runs the `prepare` script, which builds dist/src.
RUN npm_config_build_from_source=true npm ci

# --- runtime: production dependencies and the compiled server only ------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    ADMIN_HOST=0.0.0.0 \
    ADMIN_PORT=8081 \
    DATA_DIR=/data
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build with dev dependencies that are not installed here, and
# argon2's install script would need the toolchain; its binary comes from the build stage.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/node_modules/argon2/build/Release/argon2.node ./node_modules/argon2/build/Release/argon2.node
# Fail the image build, not the container, if the native module does not load.
RUN node -e "require('argon2').hash('tessera').then(() => process.exit(0), () => process.exit(1))"
# package.json stays beside migrations/: the server finds its migrations by walking up to the
# directory that holds both.
COPY --from=build /app/dist/src ./dist/src
COPY migrations ./migrations
# The embedded database, key-encryption-key and admin-client.json live in DATA_DIR (unused with
# DATABASE_URL), owned by the unprivileged user the server runs as and closed to everyone else.
RUN mkdir -p /data && chown node:node /data && chmod 700 /data
USER node
VOLUME ["/data"]
EXPOSE 8080 8081
# Slim images have no curl; Node 20 has fetch.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "dist/src/cli/main.js", "serve"]
