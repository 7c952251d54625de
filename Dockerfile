# syntax=docker/dockerfile:1
# Altan: one image for the three runner roles (ROLE=agent|tool|integrator, or all). The CI check
# packages/cluster/test/ProdBuild.test.ts runs the same steps without Docker: `npm run build`, a tree with only
# production dependencies, the package.json files and the dist folders, then `npm run start:prod`'s command.
#
#   docker build -t ghcr.io/altan/altan:0.1.0 .
#   docker run --rm -p 8080:8080 ghcr.io/altan/altan:0.1.0

# Node 20, pinned; set NODE_IMAGE to a digest (node:20.20.2-bookworm-slim@sha256:...) for byte-identical rebuilds.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# 1. What npm ci needs: the lockfile, every workspace's package.json, and the dependency patches (npm ci's
# postinstall applies them with patch-package; the patched dependencies run in production too).
FROM ${NODE_IMAGE} AS manifests
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/domain/package.json packages/domain/
COPY packages/audit/package.json packages/audit/
COPY packages/redis/package.json packages/redis/
COPY packages/storage/package.json packages/storage/
COPY packages/observability/package.json packages/observability/
COPY packages/tool/package.json packages/tool/
COPY packages/agent/package.json packages/agent/
COPY packages/integrator/package.json packages/integrator/
COPY packages/cluster/package.json packages/cluster/
COPY packages/client/package.json packages/client/
COPY patches/ patches/

# 2. Build: every dependency, then tsc -b to packages/*/dist.
FROM manifests AS build
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.base.json ./
COPY packages/ packages/
RUN npm run build

# 3. Production dependencies only (the workspaces are linked, as npm ci links them).
FROM manifests AS deps
RUN npm ci --omit=dev --no-audit --no-fund

# 4. Runtime: production dependencies, package.json files and compiled JavaScript; no sources, no build tools.
# Files stay owned by root and read-only to the runtime user (the pods also mount the root file system read-only).
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/ ./
COPY --from=build /app/packages/domain/dist/ packages/domain/dist/
COPY --from=build /app/packages/audit/dist/ packages/audit/dist/
COPY --from=build /app/packages/redis/dist/ packages/redis/dist/
COPY --from=build /app/packages/storage/dist/ packages/storage/dist/
COPY --from=build /app/packages/observability/dist/ packages/observability/dist/
COPY --from=build /app/packages/tool/dist/ packages/tool/dist/
COPY --from=build /app/packages/agent/dist/ packages/agent/dist/
COPY --from=build /app/packages/integrator/dist/ packages/integrator/dist/
COPY --from=build /app/packages/cluster/dist/ packages/cluster/dist/
COPY --from=build /app/packages/client/dist/ packages/client/dist/
# a numeric, non-root user with no entry in /etc/passwd (Kubernetes' runAsNonRoot can check a number)
USER 10001:10001
# API (integrator), runner port, metrics
EXPOSE 8080 34431 9464
# `npm run start:prod`, exec form: node is PID 1 and gets SIGTERM itself; no shell or npm at run time. A 32 MB
# semi-space: a task allocates enough short-lived objects that the default young generation is scavenged several
# times over per few tasks (see docs/benchmarks.md)
CMD ["node", "--max-semi-space-size=32", "packages/cluster/dist/main.js"]
