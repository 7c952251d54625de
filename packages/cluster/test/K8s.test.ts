import { beforeAll, describe, expect, it } from "@effect/vitest"
import { parser as promql } from "@prometheus-io/lezer-promql"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import ts from "typescript"
import { parseAllDocuments } from "yaml"

/**
 * The k8s/ folder: every overlay (and the base, a tenant stamped out by new-tenant.sh, the GKE overlay with the
 * mesh component) rendered with `kubectl kustomize` (local files only), every object validated against the
 * Kubernetes schemas (kubernetes-models; unknown fields by TypeScript's excess property checks on its types, since
 * the schemas allow them; the CRDs of GKE and Istio by their own structural checks below), then our rules:
 * restricted pods, autoscaling and disruption budgets, secrets only by reference, pinned images, probes, network
 * policies (evaluated: who may reach whom on which port), RBAC, quotas.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url))
const k8s = path.join(root, "k8s")
const roles = ["agent", "tool", "integrator"] as const
type Role = typeof roles[number]

type K8sObject = {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
  [key: string]: any
}

interface Rendering {
  readonly name: string
  readonly objects: ReadonlyArray<K8sObject>
  readonly namespace: string
}

/** `kubectl kustomize` (kubectl's built-in kustomize; the overlays use local files only). */
const kustomize = (dir: string): Array<K8sObject> => {
  let rendered: string
  try {
    rendered = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", maxBuffer: 64 * 2 ** 20, stdio: "pipe" })
  } catch (error: any) {
    throw new Error(
      error.code === "ENOENT"
        ? "kubectl (with its built-in kustomize) is needed to render k8s/"
        : `kubectl kustomize ${path.relative(root, dir)}: ${error.stderr}`
    )
  }
  return parseAllDocuments(rendered)
    .map((doc) => {
      if (doc.errors.length > 0) throw doc.errors[0]
      return doc.toJS() as K8sObject
    })
    .filter((o) => o !== null)
}

const renderings: Array<Rendering> = []
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "altan-k8s-"))

const addRendering = (name: string, dir: string) => {
  const objects = kustomize(dir)
  const namespaces = objects.filter((o) => o.kind === "Namespace")
  expect(namespaces, `${name}: one Namespace`).toHaveLength(1)
  renderings.push({ name, objects, namespace: namespaces[0]!.metadata.name })
}

beforeAll(() => {
  try {
    addRendering("base", path.join(k8s, "base"))
    for (const overlay of fs.readdirSync(path.join(k8s, "overlays")).sort()) {
      if (fs.existsSync(path.join(k8s, "overlays", overlay, "kustomization.yaml"))) {
        addRendering(`overlays/${overlay}`, path.join(k8s, "overlays", overlay))
      }
    }
    // components are rendered inside a kustomization that uses them, as an operator adds them to the GKE overlay
    const mesh = path.join(scratch, "gke-mesh")
    fs.mkdirSync(mesh)
    fs.writeFileSync(
      path.join(mesh, "kustomization.yaml"),
      [
        "namespace: altan",
        `resources: [${path.relative(mesh, path.join(k8s, "overlays/gke"))}]`,
        `components: [${path.relative(mesh, path.join(k8s, "components/mesh"))}]`
      ].join("\n")
    )
    addRendering("overlays/gke + components/mesh", mesh)
    const globex = path.join(scratch, "tenant-globex")
    execFileSync(path.join(k8s, "overlays/tenant/new-tenant.sh"), ["globex", "api.globex.example", "", globex], {
      stdio: "pipe"
    })
    addRendering("new-tenant.sh globex", globex)
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true })
  }
}, 60_000)

const each = (f: (r: Rendering) => void) => () => {
  expect(renderings.length).toBeGreaterThanOrEqual(5)
  for (const r of renderings) f(r)
}
const ofKind = (r: Rendering, kind: string) => r.objects.filter((o) => o.kind === kind)
const named = (r: Rendering, kind: string, name: string) => {
  const found = r.objects.find((o) => o.kind === kind && o.metadata.name === name)
  expect(found, `${r.name}: ${kind} ${name}`).toBeDefined()
  return found!
}
const roleOf = (sts: K8sObject): Role => sts.spec.template.metadata.labels["app.kubernetes.io/component"]
const statefulSet = (r: Rendering, role: Role) => named(r, "StatefulSet", `altan-${role}`)
const containersOf = (sts: K8sObject): Array<any> => [
  ...(sts.spec.template.spec.initContainers ?? []),
  ...sts.spec.template.spec.containers
]

const matchesSelector = (selector: any, labels: Record<string, string> = {}) =>
  Object.entries(selector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
  (selector?.matchExpressions ?? []).every((e: any) => {
    switch (e.operator) {
      case "In":
        return e.values.includes(labels[e.key])
      case "NotIn":
        return !e.values.includes(labels[e.key])
      case "Exists":
        return e.key in labels
      case "DoesNotExist":
        return !(e.key in labels)
    }
    throw new Error(`unknown operator ${e.operator}`)
  })

// --- schemas ---

/** Structural checks of the custom resources we use (their schemas are not in kubernetes-models). */
const duration = /^(\d+(ms|s|m|h|d))+$/
const customResources: Record<string, (o: K8sObject) => void> = {
  "monitoring.googleapis.com/v1 PodMonitoring": (o) => {
    expect(Object.keys(o.spec.selector.matchLabels ?? {}).length).toBeGreaterThan(0)
    expect(o.spec.endpoints.length).toBeGreaterThan(0)
    for (const e of o.spec.endpoints) {
      expect(typeof e.port === "string" || Number.isInteger(e.port)).toBe(true)
      expect(e.interval ?? "30s").toMatch(duration)
    }
  },
  "monitoring.googleapis.com/v1 Rules": (o) => {
    for (const group of o.spec.groups) {
      expect(group.name).toMatch(/\S/)
      for (const rule of group.rules) {
        expect(typeof rule.record === "string" !== (typeof rule.alert === "string"), JSON.stringify(rule)).toBe(true)
        let error = false
        promql.parse(rule.expr).iterate({ enter: (n) => void (error ||= n.type.isError) })
        expect(error, `PromQL of ${rule.alert ?? rule.record}: ${rule.expr}`).toBe(false)
        if (rule.for !== undefined) expect(rule.for).toMatch(duration)
        if (rule.alert) {
          expect(rule.labels.severity).toMatch(/^(warning|critical)$/)
          expect(rule.annotations.summary).toMatch(/\S/)
        }
      }
    }
  },
  "networking.gke.io/v1 ManagedCertificate": (o) => {
    expect(o.spec.domains.length).toBeGreaterThan(0)
    for (const d of o.spec.domains) expect(d).toMatch(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/)
  },
  "cloud.google.com/v1 BackendConfig": (o) => {
    expect(Number.isInteger(o.spec.timeoutSec)).toBe(true)
    expect(o.spec.healthCheck.requestPath).toMatch(/^\//)
  },
  "security.istio.io/v1 PeerAuthentication": (o) => {
    expect(["STRICT", "PERMISSIVE", "DISABLE"]).toContain(o.spec.mtls.mode)
    for (const [port, mtls] of Object.entries<any>(o.spec.portLevelMtls ?? {})) {
      expect(port).toMatch(/^\d+$/)
      expect(["STRICT", "PERMISSIVE", "DISABLE"]).toContain(mtls.mode)
      expect(o.spec.selector, "port-level mTLS needs a workload selector").toBeDefined()
    }
  }
}

const builtIn = (o: K8sObject) => customResources[`${o.apiVersion} ${o.kind}`] === undefined

/**
 * The objects as TypeScript constants typed by kubernetes-models, one per line, in a file that exists only in memory:
 * excess property checks name every field a type does not have.
 */
const unknownFields = (objects: ReadonlyArray<{ where: string; object: K8sObject }>) => {
  const file = path.join(root, "packages/cluster/test/rendered-k8s-objects.ts")
  const types = new Map(
    objects.map(({ object: o }) => [`${o.apiVersion}/${o.kind}`, `${o.kind}_${o.apiVersion.replace(/\W/g, "_")}`])
  )
  const source = [
    ...[...types].map(([module, alias]) =>
      `import type { I${module.split("/").at(-1)} as ${alias} } from "kubernetes-models/${module}"`
    ),
    ...objects.map(({ object: o }, i) =>
      `export const o${i}: ${types.get(`${o.apiVersion}/${o.kind}`)} = ${JSON.stringify(o)}`
    )
  ].join("\n")
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: []
  }
  const host = ts.createCompilerHost(options)
  const { fileExists, getSourceFile, readFile } = host
  host.fileExists = (f) => f === file || fileExists.call(host, f)
  host.readFile = (f) => f === file ? source : readFile.call(host, f)
  host.getSourceFile = (f, language, ...rest) =>
    f === file ? ts.createSourceFile(f, source, language) : getSourceFile.call(host, f, language, ...rest)
  const program = ts.createProgram([file], options, host)
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1
    const object = objects[line - types.size]
    return `${object ? object.where : "?"}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`
  })
}

describe("k8s/ renders and validates", () => {
  it(
    "every overlay renders, each into its own namespace, labelled for restricted Pod Security",
    each((r) => {
      const ns = named(r, "Namespace", r.namespace)
      expect(ns.metadata.labels?.["pod-security.kubernetes.io/enforce"]).toBe("restricted")
      for (const o of r.objects) {
        if (o.kind === "Namespace") continue
        expect(o.metadata.namespace, `${r.name}: ${o.kind} ${o.metadata.name}`).toBe(r.namespace)
      }
      expect(r.objects.map((o) => o.kind)).toEqual(
        expect.arrayContaining(["StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"])
      )
    })
  )

  it("every built-in object is valid against the Kubernetes schemas (kubernetes-models)", async () => {
    expect(renderings.length).toBeGreaterThanOrEqual(5)
    for (const r of renderings) {
      for (const o of r.objects.filter(builtIn)) {
        const module = await import(/* @vite-ignore */ `kubernetes-models/${o.apiVersion}/${o.kind}`)
        const Model = module[o.kind]
        expect(Model, `${o.apiVersion} ${o.kind} is a kind kubernetes-models knows`).toBeDefined()
        expect(() => new Model(o).validate(), `${r.name}: ${o.kind} ${o.metadata.name}`).not.toThrow()
      }
    }
  })

  it("no built-in object has a field its type does not have (a misspelt key is ignored by the schemas)", () => {
    expect(renderings.length).toBeGreaterThanOrEqual(5)
    const objects = renderings.flatMap((r) =>
      r.objects.filter(builtIn).map((object) => ({
        where: `${r.name}: ${object.kind} ${object.metadata.name}`,
        object
      }))
    )
    expect(unknownFields(objects)).toEqual([])
  }, 60_000)

  it("and the checks see a misspelt field", () => {
    const sts = structuredClone(statefulSet(renderings[0]!, "agent"))
    sts.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true
    expect(unknownFields([{ where: "misspelt", object: sts }]).join("\n")).toMatch(
      /^misspelt: .*readOnlyRootFileSystem/
    )
  }, 60_000)

  it(
    "the custom resources (GKE, Managed Prometheus, Istio) have the shape their controllers read",
    each((r) => {
      for (const o of r.objects.filter((o) => !builtIn(o))) customResources[`${o.apiVersion} ${o.kind}`]!(o)
    })
  )
})

describe("runners", () => {
  it(
    "each role is a StatefulSet of runners: pod IP as HOST, runner port 34431, its ROLE, a headless Service",
    each((r) => {
      for (const role of roles) {
        const sts = statefulSet(r, role)
        expect(roleOf(sts)).toBe(role)
        const container = sts.spec.template.spec.containers[0]
        const env = Object.fromEntries(container.env.map((e: any) => [e.name, e]))
        expect(env.ROLE.value).toBe(role)
        expect(env.HOST.valueFrom.fieldRef.fieldPath).toBe("status.podIP")
        expect(env.RUNNER_PORT.value).toBe("34431")
        expect(container.ports).toEqual(expect.arrayContaining([{ name: "runner", containerPort: 34431 }]))
        const service = named(r, "Service", sts.spec.serviceName)
        expect(service.spec.clusterIP).toBe("None")
        expect(matchesSelector({ matchLabels: service.spec.selector }, sts.spec.template.metadata.labels)).toBe(true)
        expect(service.spec.ports.map((p: any) => p.port)).toEqual([34431])
        // configuration from ConfigMaps, RUNNER_HEALTH=k8s among it
        const config = container.envFrom.map((e: any) => named(r, "ConfigMap", e.configMapRef.name).data)
        expect(Object.assign({}, ...config).RUNNER_HEALTH).toBe("k8s")
      }
    })
  )

  it(
    "only the integrator serves the public API, on 8080, behind a ClusterIP Service",
    each((r) => {
      const api = named(r, "Service", "altan-api")
      expect(api.spec.type ?? "ClusterIP").toBe("ClusterIP")
      expect(api.spec.ports.map((p: any) => p.port)).toEqual([8080])
      for (const role of roles) {
        const labels = statefulSet(r, role).spec.template.metadata.labels
        expect(matchesSelector({ matchLabels: api.spec.selector }, labels)).toBe(role === "integrator")
      }
      for (const ingress of ofKind(r, "Ingress")) {
        const backends = ingress.spec.rules.flatMap((rule: any) => rule.http.paths.map((p: any) => p.backend.service))
        expect(backends).toEqual(backends.map(() => ({ name: "altan-api", port: { number: 8080 } })))
      }
    })
  )

  it(
    "probes: /healthz and /readyz on the integrator's API port, on the operator port (9464) for agent and tool",
    each((r) => {
      for (const role of roles) {
        const container = statefulSet(r, role).spec.template.spec.containers[0]
        const port = (p: string | number) =>
          typeof p === "number" ? p : container.ports.find((c: any) => c.name === p)?.containerPort
        if (role === "integrator") {
          expect(container.livenessProbe.httpGet.path).toBe("/healthz")
          expect(container.readinessProbe.httpGet.path).toBe("/readyz")
          expect(port(container.livenessProbe.httpGet.port)).toBe(8080)
          expect(port(container.readinessProbe.httpGet.port)).toBe(8080)
        } else {
          // every role serves /healthz and /readyz on METRICS_PORT (OperatorServer.layer)
          expect(container.livenessProbe.httpGet.path).toBe("/healthz")
          expect(container.readinessProbe.httpGet.path).toBe("/readyz")
          expect(port(container.livenessProbe.httpGet.port)).toBe(9464)
          expect(port(container.readinessProbe.httpGet.port)).toBe(9464)
        }
      }
    })
  )

  it(
    "termination grace above the runner's own shutdown: 120 s for the agent, 60 s for tool and integrator",
    each((r) => {
      for (const role of roles) {
        const pod = statefulSet(r, role).spec.template.spec
        expect(pod.terminationGracePeriodSeconds).toBe(role === "agent" ? 120 : 60)
        const pause = pod.containers[0].lifecycle?.preStop?.sleep?.seconds ?? 0
        expect(pause).toBeLessThan(pod.terminationGracePeriodSeconds / 4)
      }
    })
  )

  it(
    "resources: requests and limits of CPU and memory, requests within limits",
    each((r) => {
      const quantity = (q: string | number) => {
        const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?$/.exec(String(q))!
        return Number(m[1]) *
            ({ m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 } as Record<string, number>)[m[2] ?? ""]! ||
          Number(m[1])
      }
      for (const sts of ofKind(r, "StatefulSet")) {
        for (const c of containersOf(sts)) {
          for (const resource of ["cpu", "memory"]) {
            expect(quantity(c.resources.requests[resource])).toBeGreaterThan(0)
            expect(quantity(c.resources.requests[resource])).toBeLessThanOrEqual(quantity(c.resources.limits[resource]))
          }
        }
      }
    })
  )

  it(
    "spread across zones (topology.kubernetes.io/zone) by their own labels",
    each((r) => {
      for (const sts of ofKind(r, "StatefulSet")) {
        const zone = sts.spec.template.spec.topologySpreadConstraints.find((c: any) =>
          c.topologyKey === "topology.kubernetes.io/zone"
        )
        expect(zone.maxSkew).toBe(1)
        expect(matchesSelector(zone.labelSelector, sts.spec.template.metadata.labels)).toBe(true)
      }
    })
  )

  it(
    "every StatefulSet is covered by an HPA (CPU; the agent also tasks in flight) and a PDB (maxUnavailable 1)",
    each((r) => {
      for (const sts of ofKind(r, "StatefulSet")) {
        const hpas = ofKind(r, "HorizontalPodAutoscaler").filter((h) =>
          h.spec.scaleTargetRef.kind === "StatefulSet" && h.spec.scaleTargetRef.name === sts.metadata.name
        )
        expect(hpas, `${r.name}: HPA of ${sts.metadata.name}`).toHaveLength(1)
        const hpa = hpas[0]!
        expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2)
        expect(sts.spec.replicas, "the HPA owns the replica count").toBeUndefined()
        expect(hpa.spec.metrics).toContainEqual({
          type: "Resource",
          resource: { name: "cpu", target: { type: "Utilization", averageUtilization: expect.any(Number) } }
        })
        const custom = hpa.spec.metrics.filter((m: any) => m.type === "Pods")
        if (roleOf(sts) === "agent") {
          expect(custom).toHaveLength(1)
          expect(custom[0].pods.metric.name).toMatch(/(^|\|)altan_tasks_in_flight(\||$)/)
          expect(custom[0].pods.target.type).toBe("AverageValue")
        } else expect(custom).toEqual([])
        const pdbs = ofKind(r, "PodDisruptionBudget").filter((p) =>
          matchesSelector(p.spec.selector, sts.spec.template.metadata.labels)
        )
        expect(pdbs, `${r.name}: PDB of ${sts.metadata.name}`).toHaveLength(1)
        expect(pdbs[0]!.spec.maxUnavailable).toBe(1)
      }
    })
  )

  it(
    "images pinned by tag or digest, never latest or untagged",
    each((r) => {
      for (const sts of ofKind(r, "StatefulSet")) {
        for (const c of containersOf(sts)) {
          const image: string = c.image
          const [name, digest] = image.split("@")
          const tag = /:([^/:]+)$/.exec(name!)?.[1]
          expect(digest === undefined ? tag : digest, image).toMatch(
            digest === undefined ? /^(?!latest$)[\w][\w.-]*$/ : /^sha256:[0-9a-f]{64}$/
          )
          expect(tag).not.toBe("latest")
        }
      }
    })
  )
})

describe("pod security (restricted)", () => {
  it(
    "every container: non-root numeric user, no privilege escalation, read-only root, no capabilities, RuntimeDefault seccomp",
    each((r) => {
      for (const sts of ofKind(r, "StatefulSet")) {
        const pod = sts.spec.template.spec
        expect(pod.hostNetwork ?? false).toBe(false)
        expect(pod.hostPID ?? false).toBe(false)
        expect(pod.hostIPC ?? false).toBe(false)
        expect(pod.securityContext.runAsNonRoot).toBe(true)
        expect(pod.volumes.every((v: any) => v.hostPath === undefined)).toBe(true)
        for (const c of containersOf(sts)) {
          const where = `${r.name}: ${sts.metadata.name}/${c.name}`
          const sc = { ...pod.securityContext, ...c.securityContext }
          expect(sc.runAsNonRoot, where).toBe(true)
          expect(Number.isInteger(sc.runAsUser) && sc.runAsUser > 0, where).toBe(true)
          expect(c.securityContext.allowPrivilegeEscalation, where).toBe(false)
          expect(c.securityContext.readOnlyRootFilesystem, where).toBe(true)
          expect(c.securityContext.privileged ?? false, where).toBe(false)
          expect(c.securityContext.capabilities.drop, where).toEqual(["ALL"])
          expect(c.securityContext.capabilities.add, where).toBeUndefined()
          expect(sc.seccompProfile?.type, where).toBe("RuntimeDefault")
          // the one writable path: an emptyDir at /tmp
          const tmp = c.volumeMounts.find((m: any) => m.mountPath === "/tmp")
          expect(pod.volumes.find((v: any) => v.name === tmp?.name)?.emptyDir, where).toBeDefined()
        }
      }
    })
  )
})

describe("configuration and secrets", () => {
  const secretName = /(PASSWORD|TOKEN|MASTER_KEY|PRIVATE_KEY|API_KEY|DATABASE_URL|REDIS_URL|CREDENTIALS)/

  it(
    "DATABASE_URL, REDIS_URL and SECRETS_MASTER_KEY only by Secret reference; no literal secret anywhere",
    each((r) => {
      expect(ofKind(r, "Secret"), "Secrets are created beside the manifests, never rendered from them").toEqual([])
      for (const sts of ofKind(r, "StatefulSet")) {
        for (const c of containersOf(sts)) {
          for (const e of c.env ?? []) {
            const where = `${r.name}: ${sts.metadata.name} ${e.name}`
            if (secretName.test(e.name)) expect(e.valueFrom?.secretKeyRef?.key, where).toBe(e.name)
            expect(e.valueFrom?.secretKeyRef === undefined || e.value === undefined, where).toBe(true)
            if (e.value !== undefined) expect(e.value, where).not.toMatch(/:\/\/[^/@\s]*:[^/@\s]*@|-----BEGIN/)
          }
          const names = (c.env ?? []).map((e: any) => e.name)
          expect(names).toEqual(expect.arrayContaining(["DATABASE_URL", "REDIS_URL"]))
          // tenants' secrets are the integrator's alone
          expect(names.includes("SECRETS_MASTER_KEY")).toBe(roleOf(sts) === "integrator")
        }
      }
      for (const cm of ofKind(r, "ConfigMap")) {
        for (const [key, value] of Object.entries<string>(cm.data ?? {})) {
          expect(key, `${r.name}: ConfigMap ${cm.metadata.name}`).not.toMatch(secretName)
          expect(value, `${r.name}: ConfigMap ${cm.metadata.name} ${key}`).not.toMatch(
            /:\/\/[^/@\s]*:[^/@\s]*@|-----BEGIN/
          )
        }
      }
    })
  )

  it(
    "the integrator verifies tokens with a real issuer's key (no development key, no admin token in the log)",
    each((r) => {
      const container = statefulSet(r, "integrator").spec.template.spec.containers[0]
      const config = Object.assign(
        {},
        ...container.envFrom.map((e: any) => named(r, "ConfigMap", e.configMapRef.name).data)
      )
      expect(config.AUTH_JWKS_URL ?? config.AUTH_PUBLIC_KEY).toBeDefined()
      expect(config.AUTH_ISSUER).toBeDefined()
      expect(config.AUTH_AUDIENCE).toBeDefined()
    })
  )
})

describe("service accounts and RBAC", () => {
  it(
    "one ServiceAccount per service, no token unless the pod opts in; the runners can get and list pods, nothing more",
    each((r) => {
      const accounts = roles.map((role) => statefulSet(r, role).spec.template.spec.serviceAccountName)
      expect(new Set(accounts).size).toBe(3)
      for (const role of roles) {
        const pod = statefulSet(r, role).spec.template.spec
        expect(named(r, "ServiceAccount", pod.serviceAccountName).automountServiceAccountToken).toBe(false)
        // RUNNER_HEALTH=k8s lists pods with the token
        expect(pod.automountServiceAccountToken).toBe(true)
      }
      expect(ofKind(r, "ClusterRole")).toEqual([])
      expect(ofKind(r, "ClusterRoleBinding")).toEqual([])
      for (const role of ofKind(r, "Role")) {
        expect(role.rules).toEqual([{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list"] }])
      }
      const bound = ofKind(r, "RoleBinding").flatMap((b) => {
        expect(b.roleRef.kind).toBe("Role")
        named(r, "Role", b.roleRef.name)
        return b.subjects.map((s: any) => {
          expect(s.namespace).toBe(r.namespace)
          return s.name
        })
      })
      expect([...bound].sort()).toEqual([...accounts].sort())
    })
  )
})

// --- network policies, evaluated ---

type Peer =
  | { readonly ip: string }
  | { readonly namespace: string; readonly labels: Record<string, string> }

const ipv4 = (ip: string) => ip.split(".").reduce((n, part) => n * 256 + Number(part), 0)
const inCidr = (ip: string, cidr: string) => {
  const [base, bits] = cidr.split("/")
  if (base!.includes(":") || ip.includes(":")) return base!.includes(":") && ip.includes(":") && Number(bits) === 0
  const size = 2 ** (32 - Number(bits))
  return Math.floor(ipv4(ip) / size) === Math.floor(ipv4(base!) / size)
}

/** Whether `pod` may send to (`Egress`) or receive from (`Ingress`) `peer` on `port`, by the namespace's policies. */
const allowed = (
  r: Rendering,
  direction: "Ingress" | "Egress",
  pod: Record<string, string>,
  peer: Peer,
  port: number,
  protocol = "TCP"
) => {
  const selecting = ofKind(r, "NetworkPolicy").filter((p) =>
    matchesSelector(p.spec.podSelector, pod) &&
    (p.spec.policyTypes ?? ["Ingress", ...(p.spec.egress ? ["Egress"] : [])]).includes(direction)
  )
  if (selecting.length === 0) return true
  return selecting.some((p) =>
    (p.spec[direction === "Ingress" ? "ingress" : "egress"] ?? []).some((rule: any) => {
      const ports: Array<any> = rule.ports ?? []
      const portOk = ports.length === 0 || ports.some((p) => {
        expect(typeof p.port === "number" || p.port === undefined, "numeric ports in policies").toBe(true)
        return (p.protocol ?? "TCP") === protocol &&
          (p.port === undefined || p.port === port || (p.endPort !== undefined && port >= p.port && port <= p.endPort))
      })
      const peers: Array<any> = rule[direction === "Ingress" ? "from" : "to"] ?? []
      const peerOk = peers.length === 0 || peers.some((q) => {
        if ("ip" in peer) {
          return q.ipBlock !== undefined && inCidr(peer.ip, q.ipBlock.cidr) &&
            !(q.ipBlock.except ?? []).some((e: string) => inCidr(peer.ip, e))
        }
        if (q.ipBlock !== undefined) return false
        const namespaceOk = q.namespaceSelector === undefined
          ? peer.namespace === p.metadata.namespace
          : matchesSelector(q.namespaceSelector, { "kubernetes.io/metadata.name": peer.namespace })
        return namespaceOk && (q.podSelector === undefined || matchesSelector(q.podSelector, peer.labels))
      })
      return portOk && peerOk
    })
  )
}

describe("network policies", () => {
  const podOf = (r: Rendering, role: Role) => statefulSet(r, role).spec.template.metadata.labels
  const publicIps = ["142.250.180.14", "52.1.2.3", "2a00:1450:4001::200e"]
  const kubeDns = { namespace: "kube-system", labels: { "k8s-app": "kube-dns" } }

  it(
    "deny by default, ingress and egress",
    each((r) => {
      const deny = ofKind(r, "NetworkPolicy").filter((p) =>
        Object.keys(p.spec.podSelector).length === 0 && p.spec.ingress === undefined && p.spec.egress === undefined
      )
      expect(deny.flatMap((p) => p.spec.policyTypes).sort()).toEqual(["Egress", "Ingress"])
      const stranger = { app: "something-else" }
      expect(allowed(r, "Ingress", stranger, { ip: "203.0.113.9" }, 8080)).toBe(false)
      expect(allowed(r, "Egress", stranger, { ip: publicIps[0]! }, 443)).toBe(false)
    })
  )

  it(
    "runners reach each other on 34431 within the namespace, no other namespace reaches them",
    each((r) => {
      for (const from of roles) {
        for (const to of roles) {
          const peer = { namespace: r.namespace, labels: podOf(r, to) }
          expect(allowed(r, "Egress", podOf(r, from), peer, 34431), `${from} -> ${to}`).toBe(true)
          expect(allowed(r, "Ingress", podOf(r, to), { namespace: r.namespace, labels: podOf(r, from) }, 34431)).toBe(
            true
          )
        }
        const elsewhere = { namespace: "altan-tenant-other", labels: podOf(r, "agent") }
        expect(allowed(r, "Ingress", podOf(r, from), elsewhere, 34431)).toBe(false)
        expect(allowed(r, "Ingress", podOf(r, from), { ip: "10.8.0.7" }, 34431)).toBe(false)
      }
    })
  )

  it(
    "only the integrator accepts traffic on the API port 8080",
    each((r) => {
      for (const role of roles) {
        expect(allowed(r, "Ingress", podOf(r, role), { ip: "35.191.0.1" }, 8080), role).toBe(role === "integrator")
        expect(allowed(r, "Ingress", podOf(r, role), { ip: "35.191.0.1" }, 34431), role).toBe(false)
      }
    })
  )

  it(
    "every runner reaches PostgreSQL, Redis, DNS and the Kubernetes API",
    each((r) => {
      const apiServer = ofKind(r, "NetworkPolicy").find((p) => p.metadata.name === "altan-kube-api-egress")!
      const apiAddress = apiServer.spec.egress[0].to[0].ipBlock.cidr.split("/")[0]
      for (const role of roles) {
        const pod = podOf(r, role)
        expect(allowed(r, "Egress", pod, { ip: "10.20.0.3" }, 5432), role).toBe(true)
        expect(allowed(r, "Egress", pod, { ip: "10.20.0.4" }, 6379), role).toBe(true)
        expect(allowed(r, "Egress", pod, kubeDns, 53, "UDP"), role).toBe(true)
        expect(allowed(r, "Egress", pod, kubeDns, 53, "TCP"), role).toBe(true)
        expect(allowed(r, "Egress", pod, { ip: apiAddress }, 443), role).toBe(true)
      }
    })
  )

  it(
    "only the tool and integrator runners reach the internet, on 443 only; nothing reaches private ranges or metadata",
    each((r) => {
      for (const role of roles) {
        const pod = podOf(r, role)
        for (const ip of publicIps) {
          expect(allowed(r, "Egress", pod, { ip }, 443), `${role} -> ${ip}:443`).toBe(role !== "agent")
          expect(allowed(r, "Egress", pod, { ip }, 80), `${role} -> ${ip}:80`).toBe(false)
        }
        expect(allowed(r, "Egress", pod, { ip: "10.1.2.3" }, 443), role).toBe(false)
        expect(allowed(r, "Egress", pod, { ip: "192.168.1.1" }, 443), role).toBe(false)
        // the metadata server: only the integrator, on GKE, for its Workload Identity
        const metadata = allowed(r, "Egress", pod, { ip: "169.254.169.254" }, 80)
        expect(metadata, role).toBe(role === "integrator" && r.name !== "base")
      }
      // every egress rule that selects the agent names its destinations narrowly (one address) or its ports
      // (DNS, PostgreSQL, Redis)
      for (const policy of ofKind(r, "NetworkPolicy")) {
        if (!matchesSelector(policy.spec.podSelector, podOf(r, "agent"))) continue
        for (const rule of policy.spec.egress ?? []) {
          const ports = (rule.ports ?? []).map((p: any) => p.port)
          const broad = (rule.to ?? []).length === 0 ||
            rule.to.some((q: any) =>
              q.ipBlock !== undefined &&
              Number(q.ipBlock.cidr.split("/")[1]) < (q.ipBlock.cidr.includes(":") ? 120 : 28)
            )
          if (broad) {
            expect(
              ports.every((p: number) => [53, 5432, 6378, 6379].includes(p)) && ports.length > 0,
              policy.metadata.name
            ).toBe(true)
          }
        }
      }
    })
  )
})

describe("GKE", () => {
  const gke = () => renderings.filter((r) => r.name !== "base")

  it("only the integrator's ServiceAccount is a Google service account; it alone uses Secret Manager and Cloud Logging", () => {
    for (const r of gke()) {
      for (const role of roles) {
        const account = named(r, "ServiceAccount", `altan-${role}`)
        const google = account.metadata.annotations?.["iam.gke.io/gcp-service-account"]
        if (role === "integrator") expect(google, r.name).toMatch(/^[a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com$/)
        else expect(google, r.name).toBeUndefined()
        const container = statefulSet(r, role).spec.template.spec.containers[0]
        const config = Object.assign(
          {},
          ...container.envFrom.map((e: any) => named(r, "ConfigMap", e.configMapRef.name).data)
        )
        expect(config.AUDIT_SINK, `${r.name} ${role}`).toBe(role === "integrator" ? "gcp" : "stdout")
        if (role === "integrator") {
          expect(config.SECRETS_BACKEND).toBe("gcp")
          expect(config.GCP_PROJECT).toMatch(/\S/)
        }
      }
    }
  })

  it("the API behind a GCE Ingress with a managed certificate for its hosts; Managed Prometheus scrapes port 9464", () => {
    for (const r of gke()) {
      const ingress = named(r, "Ingress", "altan-api")
      expect(ingress.metadata.annotations!["kubernetes.io/ingress.class"]).toBe("gce")
      expect(ingress.metadata.annotations!["kubernetes.io/ingress.allow-http"]).toBe("false")
      const certificate = named(
        r,
        "ManagedCertificate",
        ingress.metadata.annotations!["networking.gke.io/managed-certificates"]!
      )
      expect(certificate.spec.domains).toEqual(ingress.spec.rules.map((rule: any) => rule.host))
      const monitoring = ofKind(r, "PodMonitoring")
      expect(monitoring).toHaveLength(1)
      for (const role of roles) {
        const pod = statefulSet(r, role).spec.template
        expect(matchesSelector(monitoring[0]!.spec.selector, pod.metadata.labels)).toBe(true)
        const port = pod.spec.containers[0].ports.find((p: any) => p.name === monitoring[0]!.spec.endpoints[0].port)
        expect(port?.containerPort).toBe(9464)
        expect(allowed(r, "Ingress", pod.metadata.labels, { namespace: "gmp-system", labels: {} }, 9464)).toBe(true)
      }
      expect(named(r, "HorizontalPodAutoscaler", "altan-agent").spec.metrics[1].pods.metric.name).toBe(
        "prometheus.googleapis.com|altan_tasks_in_flight|gauge"
      )
    }
  })

  it("alerts: a tenant's calls far above its usual rate, upstream errors, breakers open long, failing tasks, audit sink failures, restarts", () => {
    for (const r of gke()) {
      const rules = ofKind(r, "Rules").flatMap((o) => o.spec.groups.flatMap((g: any) => g.rules))
      const expr = (alert: string) => rules.find((rule: any) => rule.alert === alert)?.expr as string | undefined
      const recorded = (text: string) =>
        text.replace(
          /\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b/g,
          (name) => rules.find((rule: any) => rule.record === name)?.expr ?? name
        )
      expect(recorded(expr("AltanTenantCallsFarAboveUsual")!)).toMatch(/sum by \(tenant\) \(rate\(altan_calls_total\[/)
      expect(expr("AltanTenantCallsFarAboveUsual")).toMatch(/\[1d\]/)
      expect(expr("AltanUpstreamErrorRatioHigh")).toMatch(/altan_calls_total\{outcome="failed"\}/)
      expect(expr("AltanBreakerOpenLong")).toMatch(/altan_breaker_open/)
      expect(expr("AltanTasksFailing")).toMatch(/altan_tasks_finished_total\{status="failed"\}/)
      expect(expr("AltanAuditSinkFailures")).toMatch(/altan_audit_sink_failures_total/)
      expect(expr("AltanRunnerRestarts")).toMatch(/kube_pod_container_status_restarts_total/)
    }
  })
})

describe("tenant namespaces", () => {
  const tenants = () => renderings.filter((r) => r.namespace.startsWith("altan-tenant-"))

  it("a tenant's namespace holds its own runners, policies, quota and limits, and every runner fits the quota at its maximum", () => {
    expect(tenants().map((r) => r.namespace)).toEqual(
      expect.arrayContaining(["altan-tenant-acme", "altan-tenant-globex"])
    )
    const quantity = (q: string | number) => {
      const m = /^(\d+(?:\.\d+)?)(m|Mi|Gi)?$/.exec(String(q))!
      return Number(m[1]) * (m[2] === "m" ? 1e-3 : m[2] === "Mi" ? 2 ** 20 : m[2] === "Gi" ? 2 ** 30 : 1)
    }
    for (const r of tenants()) {
      expect(ofKind(r, "StatefulSet")).toHaveLength(3)
      expect(ofKind(r, "NetworkPolicy").length).toBeGreaterThan(0)
      const quota = ofKind(r, "ResourceQuota")
      expect(quota).toHaveLength(1)
      const hard = quota[0]!.spec.hard
      const limits = ofKind(r, "LimitRange")
      expect(limits).toHaveLength(1)
      const max = limits[0]!.spec.limits.find((l: any) => l.type === "Container").max
      const total: Record<string, number> = {}
      let pods = 0
      for (const sts of ofKind(r, "StatefulSet")) {
        const replicas = named(r, "HorizontalPodAutoscaler", sts.metadata.name).spec.maxReplicas
        pods += replicas
        for (const c of containersOf(sts)) {
          for (const kind of ["requests", "limits"]) {
            for (const resource of ["cpu", "memory"]) {
              total[`${kind}.${resource}`] = (total[`${kind}.${resource}`] ?? 0) +
                replicas * quantity(c.resources[kind][resource])
            }
          }
          for (const resource of ["cpu", "memory"]) {
            expect(quantity(c.resources.limits[resource])).toBeLessThanOrEqual(quantity(max[resource]))
          }
        }
      }
      for (const [key, value] of Object.entries(total)) {
        expect(value, `${r.name} ${key}`).toBeLessThanOrEqual(quantity(hard[key]))
      }
      expect(pods).toBeLessThanOrEqual(Number(hard.pods))
      expect(hard["services.loadbalancers"]).toBe("0")
    }
  })

  it("new-tenant.sh stamps the tenant's name, host and Google service account everywhere, nothing of the example", () => {
    const globex = renderings.find((r) => r.namespace === "altan-tenant-globex")!
    expect(JSON.stringify(globex.objects)).not.toMatch(/acme/)
    expect(named(globex, "Ingress", "altan-api").spec.rules.map((rule: any) => rule.host)).toEqual([
      "api.globex.example"
    ])
    expect(named(globex, "ServiceAccount", "altan-integrator").metadata.annotations!["iam.gke.io/gcp-service-account"])
      .toBe("altan-globex@my-gcp-project.iam.gserviceaccount.com")
    const config = named(
      globex,
      "ConfigMap",
      statefulSet(globex, "integrator").spec.template.spec.containers[0].envFrom[1].configMapRef.name
    )
    expect(config.data.OAUTH_REDIRECT_URL).toBe("https://api.globex.example/v1/oauth/callback")
    for (const o of globex.objects) {
      expect(o.metadata.labels?.["altan.dev/tenant"], `${o.kind} ${o.metadata.name}`).toBe("globex")
    }
  })

  it("new-tenant.sh refuses a name that is not a DNS label and an existing directory", () => {
    const script = path.join(k8s, "overlays/tenant/new-tenant.sh")
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "altan-tenant-"))
    try {
      expect(() => execFileSync(script, ["Bad_Name", "api.example.com", "", path.join(dir, "x")], { stdio: "pipe" }))
        .toThrow()
      expect(() => execFileSync(script, ["ok", "api.example.com", "", dir], { stdio: "pipe" })).toThrow(/exists/)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
