import * as effectEslint from "@effect/eslint-plugin"
import tseslint from "typescript-eslint"

const services = ["agent", "tool", "integrator"]

export default tseslint.config(
  { ignores: ["**/dist", "**/node_modules", "**/*.md", "**/coverage"] },
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
  // The services talk only through the domain's contracts and write the audit log: no service imports another.
  {
    files: ["packages/domain/src/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{ group: ["@altan/*"], message: "domain holds contracts only" }]
      }]
    }
  },
  {
    files: ["packages/audit/src/**/*.ts", "packages/audit/test/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{
          group: ["@altan/*", "!@altan/domain", "!@altan/domain/*"],
          message: "the audit library depends only on @altan/domain"
        }]
      }]
    }
  },
  ...services.map((service) => ({
    files: [`packages/${service}/src/**/*.ts`, `packages/${service}/test/**/*.ts`],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{
          // the audit library's internals are not part of it: its package.json does not export them either
          group: [
            "@altan/*",
            ...[service, "domain", "audit"].flatMap((allowed) => [`!@altan/${allowed}`, `!@altan/${allowed}/*`]),
            "@altan/audit/internal/*"
          ],
          message: "services depend only on @altan/domain and @altan/audit; compose them in packages/cluster"
        }]
      }]
    }
  }))
)
