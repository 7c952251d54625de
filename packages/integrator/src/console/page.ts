/** The console's page: a shell the script fills; nothing inline (the CSP allows only same-origin scripts and styles). */
export const html = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Altan console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/console.css">
<script type="module" src="/console/console.js"></script>
</head>
<body>
<header>
  <h1>Altan <span>console</span></h1>
  <nav id="tabs">
    <button type="button" data-view="tasks" class="active">Tasks</button>
    <button type="button" data-view="tools">Tools</button>
    <button type="button" data-view="connections">Connections</button>
  </nav>
  <form id="token-form" autocomplete="off">
    <input id="token" type="password" placeholder="Paste a bearer token (JWT)" spellcheck="false" aria-label="Bearer token">
    <button type="submit">Use token</button>
    <button type="button" id="forget">Forget</button>
  </form>
</header>
<p id="notice" hidden></p>
<main>
  <section id="view-tasks" class="view">
    <div id="list-pane">
      <h2>Tasks <small id="list-status"></small></h2>
      <ul id="task-list"></ul>
    </div>
    <div id="task-pane"><p class="empty">Select a task to see its steps, events and session.</p></div>
  </section>
  <section id="view-tools" class="view" hidden>
    <h2>Tools <small id="tools-status"></small></h2>
    <div id="tools"></div>
  </section>
  <section id="view-connections" class="view" hidden>
    <h2>Connections <small id="connections-status"></small></h2>
    <div id="connections"></div>
  </section>
</main>
</body>
</html>
`
