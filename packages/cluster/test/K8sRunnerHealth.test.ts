import * as K8sHttpClient from "@effect/cluster/K8sHttpClient"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Undici from "@effect/platform-node/Undici"
import * as FileSystem from "@effect/platform/FileSystem"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { createServer, type Server } from "node:https"
import * as os from "node:os"
import * as path from "node:path"

/**
 * RUNNER_HEALTH=k8s (`NodeClusterSocket.layer({ runnerHealth: "k8s" })`) is @effect/cluster's `RunnerHealth.layerK8s`
 * over `K8sHttpClient.layer`: it lists the Running pods through `https://kubernetes.default.svc/api` with the pod's
 * service account token, trusting the cluster CA, and a runner is alive while the pod with its address (HOST is
 * the pod IP) is listed and ready. Here the library's layers run against a fake API server on loopback that
 * implements the pods list (field and label selectors, namespaces) with TLS from a CA made for the test: the token
 * file is served from a temp file through the FileSystem service, and the dispatcher trusts the CA file as
 * `NodeClusterSocket.layerDispatcherK8s` does, connecting to loopback (the library reads both files from the
 * fixed in-cluster paths and dials kubernetes.default.svc:443).
 */
const tokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"
const apiHost = "kubernetes.default.svc"

interface FakePod {
  readonly name: string
  readonly namespace: string
  readonly ip: string
  readonly labels: Record<string, string>
  readonly phase: "Running" | "Pending" | "Succeeded" | "Failed"
  /** Ready condition; `booting` = Ready false with the same transition time as Initialized (still starting). */
  readonly ready: "true" | "false" | "booting"
}

const runnerLabels = (component: string) => ({
  "app.kubernetes.io/name": "altan",
  "app.kubernetes.io/component": component,
  "app.kubernetes.io/part-of": "altan"
})

const asApiObject = (pod: FakePod) => {
  const started = "2026-01-01T10:00:00Z"
  const readyAt = pod.ready === "booting" ? started : "2026-01-01T10:00:07Z"
  return {
    metadata: { name: pod.name, namespace: pod.namespace, labels: pod.labels, uid: `uid-${pod.name}` },
    spec: { containers: [{ name: "altan", image: "ghcr.io/altan/altan:0.1.0" }], serviceAccountName: "altan" },
    status: {
      phase: pod.phase,
      podIP: pod.ip,
      podIPs: [{ ip: pod.ip }],
      hostIP: "192.0.2.200",
      conditions: [
        { type: "PodReadyToStartContainers", status: "True", lastProbeTime: null, lastTransitionTime: started },
        { type: "Initialized", status: "True", lastProbeTime: null, lastTransitionTime: started },
        {
          type: "Ready",
          status: pod.ready === "true" ? "True" : "False",
          lastProbeTime: null,
          lastTransitionTime: readyAt
        },
        { type: "PodScheduled", status: "True", lastProbeTime: null, lastTransitionTime: started }
      ]
    }
  }
}

/** The pods list of the Kubernetes API: `GET /api/v1/pods` and `/api/v1/namespaces/{ns}/pods`. */
class FakeKubeApi {
  pods: Array<FakePod> = []
  /** When set, every request gets this status (e.g. 403, as RBAC answers outside the Role). */
  refuse: number | undefined
  readonly requests: Array<{ method: string; url: URL; authorization: string | undefined; host: string | undefined }> =
    []
  server: Server | undefined

  listen(key: string, cert: string) {
    this.server = createServer({ key, cert }, (req, res) => {
      const url = new URL(req.url!, `https://${req.headers.host}`)
      this.requests.push({ method: req.method!, url, authorization: req.headers.authorization, host: req.headers.host })
      const route = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?pods$/.exec(url.pathname)
      const status = this.refuse ?? (req.method !== "GET" || !route ? 404 : 200)
      if (status !== 200) {
        res.writeHead(status, { "content-type": "application/json" })
        return res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", code: status }))
      }
      const namespace = route![1]
      const field = url.searchParams.get("fieldSelector")
      const labels = url.searchParams.get("labelSelector")
      const items = this.pods.filter((pod) =>
        (namespace === undefined || pod.namespace === namespace) &&
        (field === null || field.split(",").every((term) => term === `status.phase=${pod.phase}`)) &&
        (labels === null || labels.split(",").every((term) => {
          const [key, value] = term.split("=")
          return pod.labels[key!] === value
        }))
      )
      res.writeHead(200, { "content-type": "application/json" })
      res.end(
        JSON.stringify({
          kind: "PodList",
          apiVersion: "v1",
          metadata: { resourceVersion: "1" },
          items: items.map(asApiObject)
        })
      )
    })
    return new Promise<number>((resolve) =>
      this.server!.listen(0, "127.0.0.1", () => resolve((this.server!.address() as { port: number }).port))
    )
  }
}

let dir = ""
let caFile = ""
let otherCaFile = ""
let tokenFile = ""
let port = 0
const api = new FakeKubeApi()

/** A CA, and a server certificate it signs for kubernetes.default.svc (as a cluster's API server has). */
const makeCertificates = () => {
  const openssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
  for (const ca of ["ca", "other-ca"]) {
    openssl("req", "-x509", ...newKey, "-keyout", `${ca}.key`, "-out", `${ca}.crt`, "-days", "1", "-subj", `/CN=${ca}`)
  }
  openssl("req", ...newKey, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver")
  fs.writeFileSync(path.join(dir, "server.ext"), `subjectAltName=DNS:${apiHost}\n`)
  openssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    "server.ext",
    "-out",
    "server.crt"
  )
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "altan-k8s-api-"))
  makeCertificates()
  caFile = path.join(dir, "ca.crt")
  otherCaFile = path.join(dir, "other-ca.crt")
  tokenFile = path.join(dir, "token")
  // as the kubelet writes it: a JWT and a trailing newline
  fs.writeFileSync(tokenFile, "eyJhbGciOiJSUzI1NiJ9.service-account.signature\n")
  port = await api.listen(
    fs.readFileSync(path.join(dir, "server.key"), "utf8"),
    fs.readFileSync(path.join(dir, "server.crt"), "utf8")
  )
})

afterAll(async () => {
  await new Promise((resolve) => api.server?.close(resolve))
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

/** The pod's file system, with the service account token at its in-cluster path. */
const podFileSystem = Layer.effect(
  FileSystem.FileSystem,
  Effect.map(FileSystem.FileSystem, (fs) => ({
    ...fs,
    readFileString: (file: string, encoding?: string) =>
      fs.readFileString(file === tokenPath ? tokenFile : file, encoding)
  }))
).pipe(Layer.provide(NodeFileSystem.layer))

/** An undici dispatcher trusting `ca` (layerDispatcherK8s's), dialling the fake API whatever the URL's port. */
const dispatcher = (ca: string) =>
  Layer.scoped(
    NodeHttpClient.Dispatcher,
    Effect.acquireRelease(
      Effect.sync(() => {
        const connect = Undici.buildConnector({ ca: fs.readFileSync(ca, "utf8") })
        return new Undici.Agent({
          connect: (options, callback) =>
            connect({ ...options, hostname: "127.0.0.1", port: String(port), servername: apiHost }, callback)
        })
      }),
      (agent) => Effect.promise(() => agent.destroy())
    )
  )

/** RUNNER_HEALTH=k8s as NodeClusterSocket builds it, with these `runnerHealthK8s` options. */
const k8sHealth = (options?: Parameters<typeof RunnerHealth.layerK8s>[0], ca = caFile) =>
  RunnerHealth.layerK8s(options).pipe(
    Layer.provide(K8sHttpClient.layer),
    Layer.provide(NodeHttpClient.layerUndiciWithoutDispatcher),
    Layer.provide(dispatcher(ca)),
    Layer.provide(podFileSystem)
  )

const isAlive = (ip: string) =>
  Effect.flatMap(RunnerHealth.RunnerHealth, (health) => health.isAlive(RunnerAddress.make(ip, 34431)))

/** The runner addresses are pod IPs from a documentation range: nothing is ever sent to them. */
const agent0: FakePod = {
  name: "altan-agent-0",
  namespace: "altan",
  ip: "192.0.2.10",
  labels: runnerLabels("agent"),
  phase: "Running",
  ready: "true"
}
const tool0: FakePod = { ...agent0, name: "altan-tool-0", ip: "192.0.2.11", labels: runnerLabels("tool") }
const integrator0: FakePod = {
  ...agent0,
  name: "altan-integrator-0",
  ip: "192.0.2.12",
  labels: runnerLabels("integrator")
}
const scoped = { namespace: "altan", labelSelector: "app.kubernetes.io/part-of=altan" }

describe("RUNNER_HEALTH=k8s", () => {
  it.effect("lists the namespace's running runner pods with the service account token, over TLS trusting the CA", () =>
    Effect.gen(function*() {
      api.refuse = undefined
      api.pods = [agent0]
      api.requests.length = 0
      expect(yield* isAlive(agent0.ip)).toBe(true)

      expect(api.requests).toHaveLength(1)
      const [request] = api.requests
      expect(request!.method).toBe("GET")
      expect(request!.host).toBe(apiHost)
      expect(request!.url.pathname).toBe("/api/v1/namespaces/altan/pods")
      expect(Object.fromEntries(request!.url.searchParams)).toEqual({
        fieldSelector: "status.phase=Running",
        labelSelector: "app.kubernetes.io/part-of=altan"
      })
      // the token file's content, trimmed
      expect(request!.authorization).toBe("Bearer eyJhbGciOiJSUzI1NiJ9.service-account.signature")
    }).pipe(Effect.provide(k8sHealth(scoped))))

  it.effect("a running, ready pod is alive; a pod not listed, not ready or not running is dead", () =>
    Effect.gen(function*() {
      api.refuse = undefined
      api.requests.length = 0
      api.pods = [
        agent0,
        { ...tool0, ready: "false" },
        { ...integrator0, phase: "Pending" },
        // another namespace's runner (e.g. a tenant's) is not this cluster's
        { ...agent0, name: "altan-agent-0", namespace: "altan-tenant-acme", ip: "192.0.2.20" },
        // not a runner
        { ...agent0, name: "redis-0", ip: "192.0.2.21", labels: { app: "redis" } }
      ]
      expect(yield* isAlive(agent0.ip)).toBe(true)
      expect(yield* isAlive(tool0.ip)).toBe(false)
      expect(yield* isAlive(integrator0.ip)).toBe(false)
      expect(yield* isAlive("192.0.2.20")).toBe(false)
      expect(yield* isAlive("192.0.2.21")).toBe(false)
      expect(yield* isAlive("192.0.2.99")).toBe(false)
      // one list answers every runner for 10 seconds
      expect(api.requests).toHaveLength(1)
    }).pipe(Effect.provide(k8sHealth(scoped))))

  it.effect("a pod that is still starting (not ready since it was initialized) counts as alive", () =>
    Effect.gen(function*() {
      api.refuse = undefined
      api.pods = [{ ...agent0, ready: "booting" }]
      expect(yield* isAlive(agent0.ip)).toBe(true)
    }).pipe(Effect.provide(k8sHealth(scoped))))

  it.effect("a runner whose pod is deleted is dead at the next list (after the 10 s cache)", () =>
    Effect.gen(function*() {
      api.refuse = undefined
      api.requests.length = 0
      api.pods = [agent0, tool0]
      expect(yield* isAlive(tool0.ip)).toBe(true)
      api.pods = [agent0]
      // still cached
      expect(yield* isAlive(tool0.ip)).toBe(true)
      yield* TestClock.adjust("11 seconds")
      expect(yield* isAlive(tool0.ip)).toBe(false)
      expect(yield* isAlive(agent0.ip)).toBe(true)
      expect(api.requests).toHaveLength(2)
    }).pipe(Effect.provide(k8sHealth(scoped))))

  it.effect("without options it lists the pods of every namespace; refused (403), it takes every runner as alive", () =>
    Effect.gen(function*() {
      // what NodeClusterSocket.layer({ runnerHealth: "k8s" }) asks when given no runnerHealthK8s options
      api.requests.length = 0
      api.pods = [agent0]
      api.refuse = 403
      expect(yield* isAlive(agent0.ip)).toBe(true)
      expect(yield* isAlive("192.0.2.99")).toBe(true)
      expect(api.requests.map((r) => r.url.pathname)).toEqual(["/api/v1/pods"])
      expect(api.requests[0]!.url.searchParams.get("labelSelector")).toBeNull()
    }).pipe(Effect.provide(k8sHealth(undefined))))

  it.live("an API it cannot reach (here: a certificate the CA did not sign) gives no answer: it retries every 5 s", () =>
    Effect.gen(function*() {
      api.refuse = undefined
      api.pods = [agent0]
      api.requests.length = 0
      const answer = yield* isAlive(agent0.ip).pipe(Effect.timeoutOption("1 second"))
      expect(answer).toEqual(Option.none())
      expect(api.requests).toHaveLength(0)
    }).pipe(Effect.provide(k8sHealth(scoped, otherCaFile))))
})
