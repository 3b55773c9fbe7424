# volreg: the service (`volreg serve`, the default command) and the host agent
# (`docker run --rm --volumes-from C IMAGE volreg backup ...`).

# ---- build: compile the TypeScript sources to dist/ (the service runs compiled JavaScript)
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
COPY migrations ./migrations
COPY schemas ./schemas
RUN npm run build

# ---- dependencies: production packages only (tsx stays: the host agent commands run through it)
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

# ---- runtime
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    VOLREG_ADDR=0.0.0.0:5000 \
    VOLREG_DATA_DIR=/data
# zstd: `volreg push --compression zstd` compresses through the zstd program
RUN apt-get update \
 && apt-get install -y --no-install-recommends zstd \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system volreg \
 && useradd --system --gid volreg --home-dir /app --shell /usr/sbin/nologin volreg \
 && mkdir -p /data \
 && chown volreg:volreg /data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json package-lock.json ./
COPY bin ./bin
COPY src ./src
COPY migrations ./migrations
COPY schemas ./schemas
RUN ln -s /app/bin/volreg.js /usr/local/bin/volreg
USER volreg
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const s = process.env.VOLREG_TLS_CERT ? 'https' : 'http'; const port = (process.env.VOLREG_ADDR || ':5000').split(':').pop(); require(s).get(s + '://127.0.0.1:' + port + '/healthz', { rejectUnauthorized: false }, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
# the service runs the compiled output (no TypeScript loader thread, ~40 MB less memory), with
# the node flags of `npm start` (see the README's Benchmark section)
CMD ["node", "--max-semi-space-size=4", "dist/src/cli/main.js", "serve"]
