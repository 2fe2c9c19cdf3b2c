// The reviews page: submit, and the steps, as API requests from this origin.
"use strict";
const say = (t) => { document.getElementById("message").textContent = t || ""; };
async function post(path, body) {
  const r = await fetch(path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  if (r.ok) { location.reload(); return; }
  let e = {};
  try { e = await r.json(); } catch (_) { /* not JSON */ }
  say(`${e.code || r.status}: ${e.message || ""}`);
}
document.getElementById("submit-review")?.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const [ws, owner] = String(f.get("ws")).split("|");
  const me = document.querySelector("header .user").dataset.user;
  const q = owner && owner !== me ? `?owner=${encodeURIComponent(owner)}` : "";
  post(`/v1/workspaces/${ws}/reviews${q}`, { note: f.get("note"), priority: f.get("priority") });
});
document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-review-act]");
  if (!b) return;
  const tr = b.closest("tr");
  const c = tr.querySelector("input[name=comment]");
  post(`/v1/reviews/${tr.dataset.id}/${b.dataset.reviewAct}`, { comment: c ? c.value : "" });
});
document.body.dataset.ready = "true";
