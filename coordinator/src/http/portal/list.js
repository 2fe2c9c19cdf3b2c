// The workspaces page: live rows from the event stream, and the actions.
// Every change is an API request with the portal's cookie from this origin.
"use strict";
const tbody = () => document.getElementById("rows");
const message = (text) => { document.getElementById("message").textContent = text || ""; };

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (!r.ok) {
    let e = {};
    try { e = await r.json(); } catch (_) { /* not JSON */ }
    throw new Error(`${e.code || r.status}: ${e.message || r.statusText}`);
  }
  return r;
}

// Re-renders the rows (the server renders them), at most every 250 ms.
let pending = null;
function refresh() {
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    const r = await fetch("/w/?rows=true");
    if (!r.ok) return;
    const tpl = document.createElement("template");
    tpl.innerHTML = "<table>" + (await r.text()) + "</table>";
    const fresh = tpl.content.querySelector("tbody");
    if (fresh) tbody().replaceWith(fresh);
  }, 250);
}

// The event stream (Server-Sent Events over fetch, so no reconnect storm).
async function follow() {
  for (;;) {
    try {
      const r = await fetch("/v1/events");
      const reader = r.body.getReader();
      for (;;) {
        const { done } = await reader.read();
        if (done) break;
        refresh();
      }
    } catch (_) { /* reconnect below */ }
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

document.addEventListener("click", async (ev) => {
  const u = ev.target.closest("button[data-unshare]");
  if (u) {
    const tr = u.closest("tr");
    const q = tr.dataset.q;
    try {
      await api("DELETE", `/v1/workspaces/${tr.dataset.ws}/shares/${encodeURIComponent(u.dataset.unshare)}${q}`);
      refresh();
    } catch (e) { message(`unshare: ${e.message}`); }
    return;
  }
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  const tr = b.closest("tr");
  const ws = tr.dataset.ws;
  const q = tr.dataset.q;
  const act = b.dataset.act;
  try {
    if (act === "share") {
      const user = tr.querySelector("input[name=share]").value.trim();
      if (!user) return;
      await api("PUT", `/v1/workspaces/${ws}/shares/${encodeURIComponent(user)}${q}`);
    } else if (act === "delete") {
      if (!confirm(`Delete workspace ${ws} and its files?`)) return;
      await api("DELETE", `/v1/workspaces/${ws}${q}`);
    } else {
      await api("POST", `/v1/workspaces/${ws}/${act}${q}`, {});
    }
    message("");
    refresh();
  } catch (e) { message(`${act} ${ws}: ${e.message}`); }
});

document.getElementById("create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = { name: f.get("name") };
  if (f.get("repo")) body.repo = { url: f.get("repo"), branch: f.get("branch") || undefined };
  if (f.get("image")) body.image = f.get("image");
  if (f.get("tier")) body.tier = f.get("tier");
  try {
    await api("POST", "/v1/workspaces", body);
    message("");
    ev.target.reset();
    refresh();
  } catch (e) { message(`create: ${e.message}`); }
});

follow();
document.body.dataset.ready = "true";
