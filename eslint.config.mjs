import * as effectEslint from "@effect/eslint-plugin"
import tseslint from "typescript-eslint"

const services = ["agent", "tool", "integrator"]
const libraries = ["audit", "redis", "storage", "observability"]

export default tseslint.config(
  { ignores: ["**/dist", "**/node_modules", "**/*.md", "**/coverage", ".readme-example-*"] },
  ...tseslint.configs.recommended,
  ...effectEslint.configs.dprint,
  {
    rules: {
      "object-shorthand": "error",
      "@typescript-eslint/array-type": ["warn", { default: "generic", readonly: "generic" }],
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/consistent-type-imports": "warn",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@effect/dprint": ["error", {
        config: {
          indentWidth: 2,
          lineWidth: 120,
          semiColons: "asi",
          quoteStyle: "alwaysDouble",
          trailingCommas: "never",
          operatorPosition: "maintain",
          "arrowFunction.useParentheses": "force"
        }
      }]
    }
  },
  // The services talk only through the domain's contracts: no service imports another. Beside the domain they
  // may use the libraries (`@altan/audit`, `@altan/redis`, `@altan/storage`, `@altan/observability`), which import
  // nothing of ours but the domain.
  {
    files: ["packages/domain/src/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{ group: ["@altan/*"], message: "domain holds contracts only" }]
      }]
    }
  },
  {
    files: libraries.flatMap((library) => [`packages/${library}/src/**/*.ts`, `packages/${library}/test/**/*.ts`]),
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{
          group: ["@altan/*", "!@altan/domain", "!@altan/domain/*"],
          message: "a library imports only @altan/domain"
        }]
      }]
    }
  },
  // the client package is for the API's callers: the contracts, nothing that runs in the services
  {
    files: ["packages/client/src/**/*.ts", "packages/client/test/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{
          group: ["@altan/*", "!@altan/domain", "!@altan/domain/*", "!@altan/client", "!@altan/client/*"],
          message: "@altan/client imports only @altan/domain"
        }]
      }]
    }
  },
  ...services.map((service) => ({
    files: [`packages/${service}/src/**/*.ts`, `packages/${service}/test/**/*.ts`],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{
          // a library's internals are not part of it: its package.json does not export them either
          group: [
            "@altan/*",
            ...[service, "domain", ...libraries].flatMap((allowed) => [`!@altan/${allowed}`, `!@altan/${allowed}/*`]),
            ...libraries.map((library) => `@altan/${library}/internal/*`)
          ],
          message: "services depend only on @altan/domain and the libraries; compose them in packages/cluster"
        }]
      }]
    }
  }))
)
