/**
 * The console's script, plain browser JavaScript (no framework, no build step). Everything shown that comes from the
 * API (task inputs and outputs are user and model data) goes in as text nodes, never as markup. The token lives in
 * sessionStorage and is sent only as the `Authorization` header to this origin. Written without template literals: the
 * module is a template literal itself.
 */
export const js = String.raw`"use strict"

const TOKEN_KEY = "altan.console.token"
const TERMINAL = ["succeeded", "failed", "cancelled"]
const state = { token: null, view: "tasks", selected: null, follow: null, tasks: [], listTimer: null }

// ---- DOM helpers: text only ----

function h(tag, props, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === "class") el.className = v
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn)
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv
    else el.setAttribute(k, String(v))
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}
const $ = (id) => document.getElementById(id)
const badge = (status) => h("span", { class: "badge s-" + String(status).replace(/[^a-z_]/g, "") }, status)
const json = (v) => h("pre", {}, typeof v === "string" ? v : JSON.stringify(v, null, 2))
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "")
const ms = (n) => (n === undefined || n === null ? "" : n < 1000 ? Math.round(n) + " ms" : (n / 1000).toFixed(2) + " s")
const errorBox = (e) => h("div", { class: "error" }, h("b", {}, e.code || "error"), ": ", e.message || "")

function notice(text, kind) {
  const el = $("notice")
  el.textContent = text || ""
  el.className = kind || ""
  el.hidden = !text
}

// ---- the API, same origin, bearer token ----

class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error ? body.error : { code: "http_" + status, message: "HTTP " + status }
    super(e.code + ": " + e.message)
    this.status = status
    this.code = e.code
  }
}

async function api(method, path, body) {
  // a token forgotten meanwhile: nothing is sent
  if (!state.token) throw new ApiError(401, { error: { code: "invalid_token", message: "no token" } })
  const headers = { authorization: "Bearer " + state.token }
  if (body !== undefined) headers["content-type"] = "application/json"
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  const data = text && (res.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : undefined
  if (!res.ok) {
    if (res.status === 401) notice("The token was refused (" + (data && data.error ? data.error.message : 401) + "). Paste another.")
    throw new ApiError(res.status, data)
  }
  return data
}

/** Error frames and statuses after which another connection cannot help. */
const FINAL_CODES = ["not_found", "invalid_token", "unauthorized", "forbidden"]

/**
 * Server-sent events over fetch (EventSource cannot send the Authorization header); resumes with Last-Event-ID. A
 * connection that brought no event, an error frame or 45 s of silence (the server sends a comment every 15 s) counts
 * as a failure: retried with backoff, 8 in a row at most. Error frames are not events of the task.
 */
async function followEvents(taskId, signal, onEvent) {
  let lastId = null
  let failures = 0
  while (!signal.aborted && failures < 8) {
    const headers = { authorization: "Bearer " + state.token, accept: "text/event-stream" }
    if (lastId) headers["last-event-id"] = lastId
    const connection = new AbortController()
    const stop = () => connection.abort()
    signal.addEventListener("abort", stop)
    let idle = setTimeout(stop, 45000)
    let got = 0
    let ended = false
    let final = false
    try {
      const res = await fetch("/v1/tasks/" + encodeURIComponent(taskId) + "/events", { headers, signal: connection.signal })
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => undefined))
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ""
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        clearTimeout(idle)
        idle = setTimeout(stop, 45000)
        // a CR ending one chunk may be followed by the LF starting the next: normalised once both are in
        buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n")
        let cut
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          const event = { id: null, type: "message", data: null }
          for (const line of block.split("\n")) {
            if (line === "" || line.startsWith(":")) continue
            const colon = line.indexOf(":")
            const field = colon < 0 ? line : line.slice(0, colon)
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "")
            if (field === "id") event.id = val
            else if (field === "event") event.type = val
            else if (field === "data") event.data = event.data === null ? val : event.data + "\n" + val
          }
          if (event.id) lastId = event.id
          if (event.data === null) continue
          let data
          try { data = JSON.parse(event.data) } catch { data = { type: event.type, raw: event.data } }
          if (event.type === "error") {
            const code = data && data.error ? data.error.code : undefined
            if (FINAL_CODES.includes(code)) final = true
            continue
          }
          got++
          onEvent(data)
          if (/^task\.(succeeded|failed|cancelled)$/.test(data.type || event.type)) ended = true
        }
        if (ended || final) break
      }
    } catch (e) {
      if (signal.aborted) return
      if (e instanceof ApiError && e.status < 500 && e.status !== 429) return
    } finally {
      clearTimeout(idle)
      signal.removeEventListener("abort", stop)
      connection.abort()
    }
    // the stream ends after the terminal event; otherwise it broke off: reconnect where it left off
    if (ended || final || signal.aborted) return
    failures = got > 0 ? 0 : failures + 1
    await new Promise((r) => setTimeout(r, Math.min(15000, 500 * 2 ** failures)))
  }
}

// ---- tasks: the live list ----

/** The list, read again 2 s after each answer (never two reads at once); stopped when the token is refused. */
async function refreshList() {
  const token = state.token
  if (!token) return
  let again = true
  try {
    if (!document.hidden) {
      const page = await api("GET", "/v1/tasks?limit=50")
      if (state.token !== token) return
      state.tasks = page.tasks
      renderList()
      $("list-status").textContent = "live, " + new Date().toLocaleTimeString()
    }
  } catch (e) {
    if (state.token !== token) return
    $("list-status").textContent = e.message
    if (e instanceof ApiError && e.status === 401) again = false
  }
  if (again && state.token === token) state.listTimer = setTimeout(refreshList, 2000)
}

function renderList() {
  const items = state.tasks.map((t) =>
    h("li", {
      class: t.task_id === state.selected ? "selected" : "",
      data: { taskId: t.task_id, status: t.status },
      on: { click: () => openTask(t.task_id) }
    },
      badge(t.status),
      h("span", { class: "id", title: t.task_id }, t.task_id),
      h("span", { class: "meta" }, t.kind + " \u00b7 " + t.step_count + " step" + (t.step_count === 1 ? "" : "s") + " \u00b7 " + time(t.created_at) +
        (t.error ? " \u00b7 " + t.error.code : ""))
    )
  )
  if (items.length === 0) items.push(h("li", { class: "empty" }, "No tasks yet. Submit one with POST /v1/tasks."))
  $("task-list").replaceChildren(...items)
}

// ---- one task: steps as a DAG and a timeline, events, the session's conversation ----

/** The steps a step waits for: its depends_on and the steps its $refs name. */
function dependencies(task) {
  const deps = {}
  const plan = task.input && typeof task.input === "object" ? task.input.steps || [] : []
  const refs = (v, out) => {
    if (Array.isArray(v)) v.forEach((x) => refs(x, out))
    else if (v && typeof v === "object") {
      if (typeof v.$ref === "string") out.add(v.$ref.split(".")[0])
      else Object.values(v).forEach((x) => refs(x, out))
    }
    return out
  }
  for (const s of plan) deps[s.id] = [...new Set([...(s.depends_on || []), ...refs(s.input, new Set())])]
  return deps
}

function levels(task, deps) {
  const level = {}
  const depth = (id, seen) => {
    if (level[id] !== undefined) return level[id]
    if (seen.has(id)) return 0
    seen.add(id)
    const d = (deps[id] || []).filter((x) => task.steps.some((s) => s.id === x))
    level[id] = d.length ? Math.max(...d.map((x) => depth(x, seen))) + 1 : 0
    return level[id]
  }
  const hasPlan = Object.keys(deps).length > 0
  // a natural-language task's calls run one turn after another: a timeline, one column per call
  task.steps.forEach((s, i) => { level[s.id] = hasPlan ? depth(s.id, new Set()) : i })
  return level
}

function renderTask(task, events, conversation) {
  const deps = dependencies(task)
  const level = levels(task, deps)
  const columns = []
  for (const s of task.steps) (columns[level[s.id]] = columns[level[s.id]] || []).push(s)
  const t0 = Math.min(...task.steps.map((s) => (s.started_at ? Date.parse(s.started_at) : Infinity)), Date.parse(task.created_at))
  const tEnd = Math.max(...task.steps.map((s) => Date.parse(s.finished_at || s.started_at || task.updated_at)), Date.parse(task.updated_at), t0 + 1)
  const live = !TERMINAL.includes(task.status)
  return h("div", { id: "task", data: { taskId: task.task_id, status: task.status } },
    h("div", { class: "task-head" },
      badge(task.status), h("code", {}, task.task_id),
      live ? h("span", { class: "live" }, "\u25cf live") : null),
    h("div", { class: "facts" },
      h("span", {}, "session ", h("code", {}, task.session_id)),
      h("span", {}, "created " + time(task.created_at)),
      h("span", {}, "updated " + time(task.updated_at)),
      h("span", {}, "tool calls " + task.usage.tool_calls + ", LLM calls " + task.usage.llm_calls),
      task.user_id ? h("span", {}, "by " + task.user_id) : null),
    task.error ? errorBox(task.error) : null,
    task.output !== undefined ? h("details", { data: { key: "output" } }, h("summary", {}, "output"), json(task.output)) : null,
    h("h3", {}, "Steps"),
    task.steps.length === 0 ? h("p", { class: "empty" }, "No steps yet.") :
      h("div", { class: "dag" }, columns.filter(Boolean).map((col) =>
        h("div", { class: "level" }, col.map((s) =>
          h("div", { class: "node s-" + s.status, data: { stepId: s.id, status: s.status } },
            h("div", {}, h("span", { class: "name" }, s.id), " ", badge(s.status)),
            h("div", { class: "tool" }, s.tool),
            (deps[s.id] || []).length ? h("div", { class: "after" }, "after " + deps[s.id].join(", ")) : null,
            s.error ? h("div", { class: "error step-error" }, h("b", {}, s.error.code), ": ", s.error.message) : null
          )))
      )),
    task.steps.length === 0 ? null : h("table", { class: "steps" },
      h("tr", {}, ["step", "status", "attempts", "timing", "", "input / output"].map((c) => h("th", {}, c))),
      task.steps.map((s) => {
        const start = s.started_at ? Date.parse(s.started_at) : null
        const end = s.finished_at ? Date.parse(s.finished_at) : start !== null && live ? Date.now() : start
        const bar = h("div", { class: "bar s-" + s.status })
        if (start !== null) {
          bar.style.left = (100 * (start - t0) / (tEnd - t0)) + "%"
          bar.style.width = (100 * Math.max(end - start, 0) / (tEnd - t0)) + "%"
        }
        return h("tr", { data: { stepId: s.id } },
          h("td", {}, h("b", {}, s.id), h("div", { class: "muted" }, s.tool)),
          h("td", {}, badge(s.status), s.cached ? h("div", { class: "muted" }, "cached") : null),
          h("td", {}, String(s.attempts), s.last_error ? h("div", { class: "muted" }, s.last_error) : null),
          h("td", { class: "muted timing" }, time(s.started_at), s.finished_at ? " \u2192 " + time(s.finished_at) : "", h("br"), ms(s.duration_ms)),
          h("td", {}, h("div", { class: "bar-track" }, bar)),
          h("td", {},
            s.error ? errorBox(s.error) : null,
            s.input !== undefined ? h("details", { data: { key: s.id + ".input" } }, h("summary", {}, "input"), json(s.input)) : null,
            s.output !== undefined ? h("details", { data: { key: s.id + ".output" } }, h("summary", {}, "output"), json(s.output)) : null)
        )
      })),
    h("h3", {}, "Events"),
    h("ul", { class: "events" }, events.length === 0 ? h("li", { class: "empty" }, "waiting for events\u2026") :
      events.map((e) => h("li", {}, time(e.at), " ", h("span", { class: "type" }, e.type || "event"), e.step_id ? " " + e.step_id : ""))),
    h("h3", {}, "Session conversation"),
    conversation
  )
}

async function renderConversation(task, box) {
  try {
    const session = await api("GET", "/v1/sessions/" + encodeURIComponent(task.session_id))
    const ids = session.task_ids.slice(-20)
    const tasks = await Promise.all(ids.map((id) => (id === task.task_id ? task : api("GET", "/v1/tasks/" + encodeURIComponent(id)).catch(() => null))))
    const messages = []
    for (const t of tasks.filter(Boolean)) {
      const asked = typeof t.input === "string" ? t.input : "plan: " + t.input.steps.map((s) => s.id + " (" + s.tool + ")").join(", ")
      messages.push(h("div", { class: "msg user" }, h("span", { class: "who" }, "task " + t.task_id + " \u00b7 " + time(t.created_at)), asked))
      const answer = t.error ? t.error.code + ": " + t.error.message : t.output === undefined ? t.status + "\u2026" : typeof t.output === "string" ? t.output : JSON.stringify(t.output, null, 2)
      messages.push(h("div", { class: "msg assistant" }, h("span", { class: "who" }, t.status), answer))
    }
    box.replaceChildren(h("p", { class: "muted" }, session.message_count + " messages in the session's context"), ...messages)
  } catch (e) {
    box.replaceChildren(h("p", { class: "empty" }, e.message))
  }
}

async function openTask(taskId) {
  if (state.follow) state.follow.abort()
  const follow = new AbortController()
  state.follow = follow
  state.selected = taskId
  renderList()
  const events = []
  let task
  let pending = null
  // kept across live updates, read again when the task's status changes
  const conversation = h("div", { class: "conversation", id: "conversation" }, h("p", { class: "empty" }, "loading\u2026"))
  let conversationOf = null
  const show = () => {
    if (follow.signal.aborted || !task) return
    // what the user opened stays open across live updates
    const open = new Set([...document.querySelectorAll("#task details[open]")].map((d) => d.dataset.key))
    const view = renderTask(task, events, conversation)
    for (const d of view.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true
    $("task-pane").replaceChildren(view)
    if (conversationOf !== task.status) {
      conversationOf = task.status
      renderConversation(task, conversation)
    }
  }
  const reload = () => {
    // events come in bursts: one read of the task for each burst
    if (pending) return
    pending = setTimeout(async () => {
      pending = null
      if (follow.signal.aborted) return
      try {
        task = await api("GET", "/v1/tasks/" + encodeURIComponent(taskId))
        show()
      } catch (e) {
        if (!follow.signal.aborted) notice(e.message)
      }
    }, 150)
  }
  try {
    task = await api("GET", "/v1/tasks/" + encodeURIComponent(taskId))
  } catch (e) {
    if (!follow.signal.aborted) $("task-pane").replaceChildren(h("p", { class: "empty" }, e.message))
    return
  }
  if (follow.signal.aborted) return
  show()
  followEvents(taskId, follow.signal, (event) => {
    events.push(event)
    // the last 500 are shown
    if (events.length > 500) events.splice(0, events.length - 500)
    reload()
  }).then(() => {
    if (!follow.signal.aborted) reload()
  })
}

// ---- tools and connections ----

async function showTools() {
  try {
    const tools = await api("GET", "/v1/tools")
    $("tools-status").textContent = tools.length + " tools"
    $("tools").replaceChildren(h("table", { class: "list" },
      h("tr", {}, ["tool", "provider", "flags", "description and schemas"].map((c) => h("th", {}, c))),
      tools.map((t) => h("tr", { data: { toolId: t.tool_id } },
        h("td", {}, h("code", {}, t.tool_id), h("div", { class: "muted" }, t.name)),
        h("td", {}, t.provider),
        h("td", { class: "muted" }, [t.builtin ? "built-in" : "custom", t.side_effect ? "side effect" : null, t.requires_approval ? "approval" : null, t.needs_connection ? "connection" : null].filter(Boolean).join(", ")),
        h("td", {}, t.description,
          h("details", {}, h("summary", {}, "input schema"), json(t.input_schema)),
          t.output_schema ? h("details", {}, h("summary", {}, "output schema"), json(t.output_schema)) : null)
      ))))
  } catch (e) {
    $("tools-status").textContent = e.message
  }
}

async function connect(provider) {
  try {
    const { authorize_url } = await api("POST", "/v1/connections/" + encodeURIComponent(provider) + "/authorize")
    const url = new URL(authorize_url)
    if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error("not an http(s) URL: " + authorize_url)
    window.open(url.href, "_blank", "noopener,noreferrer")
    notice("Opened the " + provider + " consent page; refresh this tab once it is done.", "info")
  } catch (e) {
    notice(e.message)
  }
}

async function showConnections() {
  try {
    const list = await api("GET", "/v1/connections")
    $("connections-status").textContent = list.length + " connections"
    $("connections").replaceChildren(list.length === 0 ? h("p", { class: "empty" }, "No connections. Configure one with PUT /v1/connections/{provider}.") :
      h("table", { class: "list" },
        h("tr", {}, ["provider", "type", "status", "scopes", "expires", ""].map((c) => h("th", {}, c))),
        list.map((c) => h("tr", { data: { provider: c.provider } },
          h("td", {}, h("code", {}, c.provider)),
          h("td", {}, c.type),
          h("td", {}, badge(c.status)),
          h("td", { class: "muted" }, c.scopes.join(" ")),
          h("td", { class: "muted" }, c.expires_at || ""),
          h("td", {}, c.type === "oauth2" ? h("button", { type: "button", on: { click: () => connect(c.provider) } }, c.status === "connected" ? "Reconnect" : "Connect") : null)
        ))))
  } catch (e) {
    $("connections-status").textContent = e.message
  }
}

// ---- shell ----

function show(view) {
  state.view = view
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view)
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view
  if (!state.token) return
  if (view === "tools") showTools()
  if (view === "connections") showConnections()
}

function useToken(token) {
  state.token = token || null
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token)
  else sessionStorage.removeItem(TOKEN_KEY)
  $("token").value = ""
  $("token").placeholder = state.token ? "token set (paste another to switch)" : "Paste a bearer token (JWT)"
  clearTimeout(state.listTimer)
  // nothing of the previous token's tenant stays on screen or keeps coming in
  if (state.follow) state.follow.abort()
  state.follow = null
  state.selected = null
  state.tasks = []
  renderList()
  $("task-pane").replaceChildren()
  $("tools").replaceChildren()
  $("connections").replaceChildren()
  if (!state.token) {
    notice("Paste a token: the one npm start prints, or any token of your tenant.", "info")
    return
  }
  notice("")
  refreshList()
  show(state.view)
}

function start() {
  // a development convenience: /console#token=... (a fragment never reaches a server); dropped from the address
  const fragment = new URLSearchParams(location.hash.slice(1))
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"))
    history.replaceState(null, "", location.pathname)
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault()
    const value = $("token").value.trim().replace(/^Bearer\s+/i, "")
    if (value) useToken(value)
  })
  $("forget").addEventListener("click", () => useToken(null))
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view))
  useToken(sessionStorage.getItem(TOKEN_KEY))
}

start()
`
