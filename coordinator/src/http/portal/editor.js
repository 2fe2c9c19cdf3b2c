// The editor page: a file explorer and Monaco over the file API. A save
// sends the version it opened (If-Match), so a change made elsewhere (another
// tab, the terminal) is reported instead of overwritten.
"use strict";
const app = document.getElementById("editor-app");
const ws = app.dataset.ws;
const q = app.dataset.ownerQ;
const writer = app.dataset.writer === "true";
const status = (text, conflict) => {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("conflict", !!conflict);
};
const url = (path) => `/v1/workspaces/${ws}/files/${path.split("/").map(encodeURIComponent).join("/")}${q}`;
let editor = null;
// The open file: its path and the version it was read at (null: new).
let current = null;

async function listing(path) {
  const r = await fetch(path ? url(path) : `/v1/workspaces/${ws}/files${q}`);
  if (!r.ok) throw new Error((await r.json()).message);
  return r.json();
}

function entry(path, e) {
  const li = document.createElement("li");
  li.setAttribute("role", "treeitem");
  const b = document.createElement("button");
  b.className = `entry ${e.kind}`;
  b.textContent = e.path;
  b.dataset.path = path;
  if (e.kind === "dir") {
    b.setAttribute("aria-expanded", "false");
    b.addEventListener("click", async () => {
      const open = b.getAttribute("aria-expanded") === "true";
      b.setAttribute("aria-expanded", String(!open));
      const sub = li.querySelector("ul");
      if (open) { if (sub) sub.remove(); return; }
      const ul = document.createElement("ul");
      ul.setAttribute("role", "group");
      li.appendChild(ul);
      await fill(ul, path);
    });
  } else {
    b.addEventListener("click", () => openFile(path));
  }
  li.appendChild(b);
  return li;
}

async function fill(ul, dir) {
  try {
    const l = await listing(dir);
    ul.replaceChildren(...l.entries.map((e) => entry(dir ? `${dir}/${e.path}` : e.path, e)));
  } catch (err) { status(`${dir || "/workspace"}: ${err.message}`, true); }
}

async function openFile(path) {
  const r = await fetch(url(path));
  if (!r.ok) { status(`${path}: ${(await r.json()).message}`, true); return; }
  const text = await r.text();
  current = { path, etag: r.headers.get("etag") };
  show(path, text);
  status("");
}

function show(path, text) {
  const uri = monaco.Uri.file(`/workspace/${path}`);
  const old = editor.getModel();
  let model = monaco.editor.getModel(uri);
  if (model) model.setValue(text);
  else model = monaco.editor.createModel(text, undefined, uri);
  editor.setModel(model);
  if (old && old !== model) old.dispose();
  document.getElementById("current").textContent = path;
  document.querySelectorAll("#files button[aria-selected]").forEach((b) => b.removeAttribute("aria-selected"));
  const b = document.querySelector(`#files button[data-path="${CSS.escape(path)}"]`);
  if (b) b.setAttribute("aria-selected", "true");
  const save = document.getElementById("save");
  if (save) save.disabled = false;
}

async function save() {
  if (!current || !writer) return;
  const headers = current.etag ? { "if-match": current.etag } : { "if-none-match": "*" };
  const r = await fetch(url(current.path), { method: "PUT", headers, body: editor.getValue() });
  if (r.status === 412 || r.status === 409) {
    status("Changed elsewhere since it was opened: not saved. Reopen it to see the other version (copy your text first).", true);
    return false;
  }
  if (!r.ok) { status(`not saved: ${(await r.json()).message}`, true); return false; }
  const created = !current.etag;
  current.etag = r.headers.get("etag");
  status(`Saved ${new Date().toLocaleTimeString()}`);
  if (created) await fill(document.getElementById("files"), "");
  return true;
}

// Uploads files to /workspace, never over one that is there.
async function upload(files) {
  for (const f of files) {
    const r = await fetch(url(f.name), { method: "PUT", headers: { "if-none-match": "*" }, body: f });
    if (!r.ok) { status(`${f.name}: not uploaded: ${(await r.json()).message}`, true); return; }
  }
  status(`Uploaded ${files.length} file(s)`);
  await fill(document.getElementById("files"), "");
}

async function newFile() {
  const path = (prompt("New file (path under /workspace):") || "").replace(/^\/+/, "");
  if (!path) return;
  current = { path, etag: null };
  show(path, "");
  editor.focus();
}

window.MonacoEnvironment = {
  getWorkerUrl: () => `${app.dataset.monaco}/base/worker/workerMain.js`,
};
require.config({ paths: { vs: app.dataset.monaco } });
require(["vs/editor/editor.main"], () => {
  editor = monaco.editor.create(document.getElementById("monaco"), {
    value: "", readOnly: !writer, automaticLayout: true, minimap: { enabled: false },
  });
  editor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS, save);
  const saveButton = document.getElementById("save");
  if (saveButton) saveButton.addEventListener("click", save);
  const nf = document.getElementById("new-file");
  if (nf) nf.addEventListener("click", newFile);
  const up = document.getElementById("upload");
  if (up) up.addEventListener("change", () => upload(up.files));
  fill(document.getElementById("files"), "");
  // For scripted use and tests: the page's own functions.
  window.berth = { editor, openFile, save, newFile: (path) => { current = { path, etag: null }; show(path, ""); } };
  document.body.dataset.ready = "true";
});
