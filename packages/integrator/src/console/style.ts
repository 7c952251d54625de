/** The console's stylesheet. */
export const css = String.raw`:root {
  --bg: #f6f7f9; --panel: #fff; --line: #dde1e6; --text: #1d2430; --muted: #5f6b7a; --accent: #2f6fde;
  --ok: #1f8a4c; --bad: #c73a3a; --run: #2f6fde; --wait: #b7791f; --idle: #8a94a3;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--text); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 16px; padding: 10px 16px; background: #18202c; color: #fff; flex-wrap: wrap; }
header h1 { font-size: 17px; margin: 0; font-weight: 600; }
header h1 span { font-weight: 400; color: #9fb3d1; }
nav { display: flex; gap: 4px; }
nav button { background: transparent; color: #c9d4e5; border: 1px solid transparent; border-radius: 6px; padding: 5px 10px; cursor: pointer; font: inherit; }
nav button.active { background: #2b3647; color: #fff; border-color: #3b4a61; }
#token-form { margin-left: auto; display: flex; gap: 6px; }
#token-form input { width: 300px; padding: 5px 8px; border-radius: 6px; border: 1px solid #3b4a61; background: #222c3b; color: #fff; font: inherit; }
button { font: inherit; padding: 5px 10px; border-radius: 6px; border: 1px solid var(--line); background: #fff; cursor: pointer; }
#token-form button { background: #2b3647; color: #fff; border-color: #3b4a61; }
#notice { margin: 0; padding: 8px 16px; background: #fdecec; color: #8a1f1f; border-bottom: 1px solid #f3c4c4; }
#notice.info { background: #eaf2fd; color: #1c4587; border-color: #c7dbf8; }
main { padding: 16px; }
h2 { font-size: 15px; margin: 0 0 10px; }
h2 small, .muted { color: var(--muted); font-weight: 400; font-size: 12px; }
h3 { font-size: 13px; margin: 18px 0 8px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
#view-tasks:not([hidden]) { display: grid; grid-template-columns: minmax(280px, 360px) 1fr; gap: 16px; align-items: start; }
#list-pane, #task-pane, #view-tools, #view-connections { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
#task-list { list-style: none; margin: 0; padding: 0; max-height: calc(100vh - 150px); overflow: auto; }
#task-list li { padding: 8px; border-radius: 6px; cursor: pointer; border: 1px solid transparent; display: grid; grid-template-columns: 92px 1fr; gap: 2px 8px; }
#task-list li:hover { background: #f1f4f8; }
#task-list li.selected { background: #eaf2fd; border-color: #c7dbf8; }
#task-list .id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#task-list .badge { justify-self: start; }
#task-list .meta { grid-column: 2; color: var(--muted); font-size: 12px; }
.empty { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; color: #fff; background: var(--idle); white-space: nowrap; }
.s-succeeded { background: var(--ok); } .s-failed, .s-rejected, .s-expired, .s-unknown_outcome { background: var(--bad); }
.s-running { background: var(--run); } .s-queued, .s-pending, .s-skipped, .s-cancelled { background: var(--idle); }
.s-waiting, .s-waiting_approval, .s-waiting_connection, .s-waiting_budget { background: var(--wait); }
.s-connected { background: var(--ok); } .s-needs_reauth, .s-missing_secret { background: var(--bad); }
.task-head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
.task-head code { font-size: 13px; }
.facts { display: flex; gap: 18px; flex-wrap: wrap; color: var(--muted); font-size: 12px; margin-top: 6px; }
.error { background: #fdecec; border: 1px solid #f3c4c4; color: #8a1f1f; border-radius: 6px; padding: 6px 8px; margin: 6px 0; white-space: pre-wrap; word-break: break-word; }
.error b { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.dag { display: flex; gap: 28px; overflow-x: auto; padding: 4px 2px 8px; }
.dag .level { display: flex; flex-direction: column; gap: 10px; min-width: 190px; }
.node { border: 1px solid var(--line); border-left: 4px solid var(--idle); border-radius: 6px; padding: 6px 8px; background: #fff; }
.node.s-succeeded { border-left-color: var(--ok); } .node.s-failed { border-left-color: var(--bad); } .node.s-running { border-left-color: var(--run); }
.node[class*="s-waiting"] { border-left-color: var(--wait); }
.node { background: #fff; }
.node .name { font-weight: 600; }
.node .tool, .node .after { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 11px; color: var(--muted); }
.steps { width: 100%; border-collapse: collapse; }
.steps td, .steps th { text-align: left; padding: 6px; border-top: 1px solid var(--line); vertical-align: top; font-size: 13px; }
.steps td.timing { white-space: nowrap; }
.steps th { color: var(--muted); font-weight: 500; font-size: 12px; }
.bar-track { position: relative; height: 10px; background: #eef1f5; border-radius: 5px; min-width: 160px; }
.bar { position: absolute; top: 0; height: 10px; border-radius: 5px; background: var(--idle); min-width: 3px; }
.bar.s-succeeded { background: var(--ok); } .bar.s-failed { background: var(--bad); } .bar.s-running { background: var(--run); }
details { margin: 2px 0; }
summary { cursor: pointer; color: var(--accent); font-size: 12px; }
pre { margin: 4px 0; padding: 6px 8px; background: #f4f6f9; border: 1px solid var(--line); border-radius: 6px; font-size: 12px; max-height: 260px; overflow: auto; white-space: pre-wrap; word-break: break-word; }
.events { list-style: none; margin: 0; padding: 0; max-height: 320px; overflow: auto; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.events li { padding: 2px 0; border-top: 1px dashed var(--line); }
.events .type { font-weight: 600; }
.conversation { display: flex; flex-direction: column; gap: 8px; }
.msg { max-width: 85%; padding: 8px 10px; border-radius: 8px; white-space: pre-wrap; word-break: break-word; }
.msg.user { align-self: flex-end; background: #eaf2fd; border: 1px solid #c7dbf8; }
.msg.assistant { align-self: flex-start; background: #f4f6f9; border: 1px solid var(--line); }
.msg .who { display: block; font-size: 11px; color: var(--muted); margin-bottom: 2px; }
table.list { width: 100%; border-collapse: collapse; }
table.list th, table.list td { text-align: left; padding: 7px 6px; border-top: 1px solid var(--line); vertical-align: top; }
table.list th { color: var(--muted); font-weight: 500; font-size: 12px; }
table.list code { font-size: 12px; }
.live { color: var(--run); font-size: 12px; }
`
