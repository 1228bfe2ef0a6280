// Sovra's pages: sign-in, Ask, Documents, Audit. Plain JavaScript, no
// dependencies, no inline script (the Content Security Policy forbids it).
// The token lives in this tab's sessionStorage and is sent as a Bearer
// header; the server enforces every permission, the pages only hide what a
// role cannot use.
"use strict";

const TOKEN_KEY = "sovra.token";
const PERMS = {
  read: ["reader"],
  browse: ["reader", "ingester"],
  ingest: ["ingester"],
  audit: ["auditor", "admin"],
};
const PAGES = { ask: "read", documents: "browse", audit: "audit" };
const PAGE_NAMES = { ask: "Ask", documents: "Documents", audit: "Audit" };

let principal = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function can(perm) {
  return !!principal && PERMS[perm].some((r) => principal.roles.includes(r));
}

function notice(text, kind) {
  const n = $("notice");
  n.textContent = text || "";
  n.className = "notice" + (kind === "error" ? " error" : "");
  n.hidden = !text;
}

class Unauthenticated extends Error {}

/** fetch with the token; a 401 ends the session and returns to sign-in. */
async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = new Headers(options.headers || {});
  if (token) headers.set("Authorization", "Bearer " + token);
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) {
    signOut("Your session has expired or your token is no longer valid. Please sign in again.");
    throw new Unauthenticated();
  }
  return resp;
}

async function problemText(resp) {
  try {
    const p = await resp.json();
    return (p.detail || p.title || "Request failed") + (p.field ? " (" + p.field + ")" : "");
  } catch {
    return "Request failed with status " + resp.status;
  }
}

// ---- sign-in ------------------------------------------------------------

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
  const resp = await fetch("/v1/whoami", { headers: { Authorization: "Bearer " + token.trim() } });
  if (!resp.ok) {
    sessionStorage.removeItem(TOKEN_KEY);
    notice("The token was not accepted: " + (await problemText(resp)), "error");
    return;
  }
  principal = await resp.json();
  notice("");
  const first = Object.keys(PAGES).find((p) => can(PAGES[p]));
  location.hash = first ? "#/" + first : "#/none";
  render();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  principal = null;
  // replaceState: no hashchange event, which would clear the message.
  history.replaceState(null, "", "#/signin");
  render();
  if (message) notice(message, "error");
}

async function devToken(ev) {
  ev.preventDefault();
  const roles = [...document.querySelectorAll('input[name="dev-role"]:checked')].map((i) => i.value);
  const body = {
    sub: $("dev-sub").value.trim(),
    tenant: $("dev-tenant").value.trim(),
    roles,
    groups: $("dev-groups").value.split(",").map((g) => g.trim()).filter(Boolean),
  };
  const resp = await fetch("/v1/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (resp.status === 404) {
    notice("Development sign-in is switched off on this server; paste a token from your identity provider.", "error");
    return;
  }
  if (!resp.ok) {
    notice("No development token: " + (await problemText(resp)), "error");
    return;
  }
  await signIn((await resp.json()).token);
}

// ---- routing ------------------------------------------------------------

function currentPage() {
  const name = location.hash.replace(/^#\/?/, "") || "signin";
  return name;
}

function show(id) {
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== id;
}

function render() {
  const page = currentPage();
  const signedIn = !!principal;
  $("signout").hidden = !signedIn;
  $("who").textContent = signedIn
    ? principal.subject + " · " + principal.tenant + " · " + principal.roles.join(", ")
    : "";
  for (const li of document.querySelectorAll("#nav li")) {
    li.hidden = !can(li.dataset.perm);
    const a = li.querySelector("a");
    if (a.getAttribute("href") === "#/" + page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const e of document.querySelectorAll("form[data-perm]")) e.hidden = !can(e.dataset.perm);
  if (!signedIn) {
    show("page-signin");
    return;
  }
  if (page === "signin") {
    show("page-signin");
    return;
  }
  const perm = PAGES[page];
  if (!perm || !can(perm)) {
    $("denied-text").textContent = perm
      ? "Your roles (" + (principal.roles.join(", ") || "none") + ") do not allow the " + PAGE_NAMES[page] + " page."
      : "There is no page here for your roles.";
    show("page-denied");
    return;
  }
  show("page-" + page);
  if (page === "documents") loadDocuments(true);
  if (page === "audit") {
    loadVerify();
    loadEvents(null);
  }
}

// ---- Ask ------------------------------------------------------------------

let sources = [];

function openPassage(n) {
  const s = sources.find((x) => x.number === n);
  if (!s) return;
  openDialog("[" + n + "] " + s.title, [
    el("dl", { class: "kv" },
      el("dt", { text: "Document" }), el("dd", { text: s.document_id }),
      el("dt", { text: "Chunk" }), el("dd", { text: s.chunk_id })),
    el("div", { class: "passage", text: s.passage || "" }),
  ]);
}

/** The answer text with each [n] that names a source turned into a button. */
function renderAnswer(text) {
  const box = $("answer");
  box.replaceChildren();
  const re = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  let last = 0;
  for (let m; (m = re.exec(text)); ) {
    box.append(text.slice(last, m.index));
    const nums = m[1].split(",").map((x) => parseInt(x.trim(), 10));
    box.append("[");
    nums.forEach((n, i) => {
      if (i) box.append(", ");
      if (sources.some((s) => s.number === n)) {
        box.append(el("button", { type: "button", class: "link cite", text: String(n), "aria-label": "Open source " + n, onclick: () => openPassage(n) }));
      } else box.append(String(n));
    });
    box.append("]");
    last = m.index + m[0].length;
  }
  box.append(text.slice(last));
}

function snippetNodes(html) {
  // The server escapes text and marks matches with <mark>; keep only those.
  const doc = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html");
  const out = [];
  for (const n of doc.body.firstChild.childNodes) {
    if (n.nodeType === Node.TEXT_NODE) out.push(document.createTextNode(n.textContent));
    else if (n.nodeName === "MARK") out.push(el("mark", { text: n.textContent }));
    else out.push(document.createTextNode(n.textContent || ""));
  }
  return out;
}

function renderRetrieval(retrieval, used) {
  const body = $("retrieved").querySelector("tbody");
  body.replaceChildren();
  for (const r of retrieval.results || []) {
    const src = used.find((s) => s.chunk_id === r.chunk_id);
    const snippet = el("td", { class: "snippet" });
    snippet.append(...snippetNodes(r.snippet || ""));
    body.append(el("tr", {},
      el("td", { text: src ? "[" + src.number + "]" : "not used" }),
      el("td", { text: r.title + " (" + r.document_id + ")" }),
      el("td", { text: r.score.toFixed(4) }),
      el("td", { text: r.lexical_rank ?? "–" }),
      el("td", { text: r.dense_rank ?? "–" }),
      snippet));
  }
}

function renderCitations(citations) {
  const list = $("citations");
  list.replaceChildren();
  for (const c of citations) {
    const s = sources.find((x) => x.number === c.number);
    if (s) s.passage = c.passage;
    list.append(el("li", { value: String(c.number) },
      el("button", { type: "button", class: "link", text: c.title, onclick: () => openPassage(c.number) }),
      " (" + c.document_id + ")"));
  }
  if (!citations.length) list.append(el("li", { class: "hint", text: "No sources cited." }));
}

async function ask(ev) {
  ev.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  const button = $("ask-submit");
  button.disabled = true;
  sources = [];
  $("answer").replaceChildren();
  $("citations").replaceChildren();
  $("usage").textContent = "";
  $("answer-status").textContent = "Searching your documents…";
  let text = "";
  try {
    const resp = await api("/v1/query", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ question, mode: $("mode").value, stream: true }),
    });
    if (!resp.ok) {
      $("answer-status").textContent = resp.status === 429
        ? "The model is busy; try again in " + (resp.headers.get("Retry-After") || "a few") + " seconds."
        : await problemText(resp);
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        const d = data ? JSON.parse(data) : {};
        if (name === "sources") {
          sources = d.sources.map((s) => ({ ...s }));
          renderRetrieval(d.retrieval, sources);
          $("answer-status").textContent = sources.length ? "Answering from " + sources.length + " source(s)…" : "";
        } else if (name === "token") {
          text += d.text;
          $("answer").textContent = text;
        } else if (name === "citations") {
          renderCitations(d.citations);
        } else if (name === "done") {
          renderAnswer(text);
          const u = d.usage;
          $("usage").textContent = d.model + " · " + u.prompt_tokens + " prompt + " + u.completion_tokens + " completion tokens · " + d.finish_reason;
          $("answer-status").textContent = "";
        } else if (name === "error") {
          $("answer-status").textContent = "The model failed: " + d.detail;
        }
      }
    }
  } catch (e) {
    if (!(e instanceof Unauthenticated)) $("answer-status").textContent = "The answer was interrupted: " + e.message;
  } finally {
    button.disabled = false;
  }
}

// ---- Documents --------------------------------------------------------------

let docCursor = null;
let docs = [];

function docQuery() {
  const p = new URLSearchParams({ limit: "100" });
  const meta = $("doc-meta").value.trim();
  if (meta.includes("=")) {
    const [k, ...v] = meta.split("=");
    p.set("metadata." + k.trim(), v.join("=").trim());
  }
  return p;
}

async function loadDocuments(reset) {
  if (reset) {
    docCursor = null;
    docs = [];
  }
  const p = docQuery();
  if (docCursor) p.set("cursor", docCursor);
  const resp = await api("/v1/documents?" + p);
  if (!resp.ok) {
    notice(await problemText(resp), "error");
    return;
  }
  const page = await resp.json();
  docs = docs.concat(page.documents);
  docCursor = page.next_cursor;
  $("doc-more").hidden = !docCursor;
  renderDocuments();
}

function renderDocuments() {
  const filter = $("doc-filter").value.trim().toLowerCase();
  const body = $("documents").querySelector("tbody");
  body.replaceChildren();
  for (const d of docs) {
    if (filter && !d.title.toLowerCase().includes(filter) && !d.id.toLowerCase().includes(filter)) continue;
    const readers = [...(d.acl.groups || []).map((g) => "group " + g), ...(d.acl.users || []).map((u) => "user " + u)].join(", ");
    const actions = el("td");
    if (can("ingest")) {
      actions.append(el("button", { type: "button", class: "danger", text: "Delete", "aria-label": "Delete " + d.title, onclick: () => confirmDelete(d) }));
    }
    body.append(el("tr", {},
      el("td", { text: d.title }), el("td", { text: d.id }), el("td", { text: String(d.version) }),
      el("td", { text: String(d.chunk_count) }), el("td", { text: readers }),
      el("td", { text: new Date(d.updated_us / 1000).toISOString().replace("T", " ").slice(0, 19) }),
      actions));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "hint", text: "No documents." })));
}

function confirmDelete(d) {
  openDialog("Delete “" + d.title + "”?", [
    el("p", { text: "The document (" + d.id + ") and all of its chunks are removed from the catalog and both indexes. This cannot be undone." }),
  ], {
    label: "Delete",
    action: async () => {
      const resp = await api("/v1/documents/" + encodeURIComponent(d.id), { method: "DELETE" });
      if (resp.ok || resp.status === 204) notice("Deleted " + d.title + ".");
      else notice(await problemText(resp), "error");
      loadDocuments(true);
    },
  });
}

function upload(ev) {
  ev.preventDefault();
  const file = $("up-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  const title = $("up-title").value.trim();
  if (title) form.append("title", title);
  const id = $("up-id").value.trim();
  if (id) form.append("id", id);
  const groups = $("up-groups").value.trim();
  if (groups) form.append("acl_groups", groups);
  const users = $("up-users").value.trim();
  if (users) form.append("acl_users", users);
  const xhr = new XMLHttpRequest();
  const progress = $("up-progress");
  const status = $("up-status");
  progress.value = 0;
  status.textContent = "Uploading " + file.name + "…";
  $("up-submit").disabled = true;
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
  });
  xhr.addEventListener("load", () => {
    $("up-submit").disabled = false;
    if (xhr.status === 401) {
      signOut("Your session has expired or your token is no longer valid. Please sign in again.");
      return;
    }
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status >= 200 && xhr.status < 300) {
      progress.value = 100;
      status.textContent = "Stored “" + body.title + "” (" + body.id + "), version " + body.version + ", " + body.chunks + " chunks" + (body.unchanged ? " (unchanged)" : "") + ".";
      $("upload-form").reset();
      progress.value = 100;
      loadDocuments(true);
    } else {
      status.textContent = "Not stored: " + (body.detail || "status " + xhr.status) + (body.field ? " (" + body.field + ")" : "");
    }
  });
  xhr.addEventListener("error", () => {
    $("up-submit").disabled = false;
    status.textContent = "The upload failed (network error).";
  });
  xhr.open("POST", "/v1/documents");
  xhr.setRequestHeader("Authorization", "Bearer " + sessionStorage.getItem(TOKEN_KEY));
  xhr.send(form);
}

// ---- Audit ----------------------------------------------------------------

let cursors = [];

function auditFilter() {
  const p = new URLSearchParams();
  const time = (v) => (v ? new Date(v).toISOString() : "");
  const pairs = [
    ["since", time($("f-since").value)], ["until", time($("f-until").value)],
    ["subject", $("f-subject").value.trim()], ["action", $("f-action").value.trim()],
    ["status", $("f-status").value.trim()], ["document_id", $("f-document").value.trim()],
  ];
  for (const [k, v] of pairs) if (v) p.set(k, v);
  return p;
}

async function loadVerify() {
  const v = $("verify");
  v.className = "verify";
  v.textContent = "Verifying the chain…";
  const resp = await api("/v1/audit/verify");
  if (!resp.ok) {
    v.textContent = "The chain could not be verified: " + (await problemText(resp));
    v.className = "verify broken";
    return;
  }
  const r = await resp.json();
  if (r.ok) {
    v.className = "verify ok";
    v.textContent = "Chain verified: " + r.checked + " records, every link intact (head #" + r.head_seq + ", " + r.head_hash.slice(0, 16) + "…)" +
      (r.anchored_at_checkpoint != null ? "; anchored at signed checkpoint #" + r.anchored_at_checkpoint : "") + ".";
  } else {
    v.className = "verify broken";
    const b = r.first_broken || {};
    v.textContent = "Chain BROKEN at record #" + b.seq + ": " + (b.reason || "hash mismatch") + ". Records after it cannot be trusted.";
  }
}

async function loadEvents(cursor) {
  const p = auditFilter();
  p.set("limit", "25");
  if (cursor) p.set("cursor", cursor);
  const resp = await api("/v1/audit/events?" + p);
  if (!resp.ok) {
    notice(await problemText(resp), "error");
    return;
  }
  const page = await resp.json();
  const body = $("events").querySelector("tbody");
  body.replaceChildren();
  for (const e of page.events) {
    body.append(el("tr", {},
      el("td", { text: e.ts.replace("T", " ").slice(0, 19) }),
      el("td", { text: e.subject || "(unauthenticated)" }),
      el("td", { text: e.action }),
      el("td", { text: String(e.status) }),
      el("td", { text: e.reason || "" }),
      el("td", { text: (e.document_ids || []).join(", ") }),
      el("td", {}, el("button", { type: "button", class: "secondary", text: "Details", "aria-label": "Details of " + e.action + " at " + e.ts, onclick: () => openEvent(e.id) }))));
  }
  if (!page.events.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "hint", text: "No events match." })));
  $("audit-next").hidden = !page.next_cursor;
  $("audit-next").dataset.cursor = page.next_cursor || "";
}

async function openEvent(id) {
  const resp = await api("/v1/audit/events/" + encodeURIComponent(id));
  if (!resp.ok) {
    notice(await problemText(resp), "error");
    return;
  }
  const e = await resp.json();
  const d = e.details || {};
  // A streamed answer's outcome (completion tokens, finish, citations) is a
  // second record with the same request id, written when the stream ended.
  let outcome = null;
  if (!e.action.endsWith(".completed") && d.model) {
    const r = await api("/v1/audit/events?request_id=" + encodeURIComponent(e.request_id) + "&limit=10");
    if (r.ok) outcome = (await r.json()).events.find((x) => x.action.endsWith(".completed")) || null;
  }
  const od = outcome ? outcome.details || {} : d;
  const list = (v) => (Array.isArray(v) && v.length ? v.join(", ") : "–");
  const rows = [
    ["Time", e.ts], ["Who", (e.subject || "(unauthenticated)") + " · tenant " + (e.tenant || "–") + " · roles " + list(e.roles)],
    ["What", e.method + " " + e.route + " → " + e.status + " (" + e.action + ")"], ["Reason", e.reason || "–"],
    ["Client", e.client_addr || "–"], ["Request id", e.request_id], ["Trace id", e.trace_id],
    ["Documents", list(e.document_ids)],
    ["Question", d.question ? (d.question.text ?? "sha256 " + d.question.sha256) : "–"],
    ["Model", d.model || "–"],
    ["Tokens", d.prompt_tokens != null || od.prompt_tokens != null
      ? (d.prompt_tokens ?? od.prompt_tokens) + " prompt, " + (od.completion_tokens ?? "–") + " completion" : "–"],
    ["Finish", od.finish_reason || d.finish_reason || "–"],
    ["Chunks retrieved", list(d.retrieved_chunk_ids)], ["Chunks used", list(d.source_chunk_ids)], ["Chunks cited", list(od.cited_chunk_ids)],
    ["Record", "#" + e.seq + " · hash " + e.hash + " · previous " + e.prev_hash],
  ];
  if (outcome) rows.push(["Outcome record", "#" + outcome.seq + " (" + outcome.action + ", " + outcome.ts + (outcome.reason ? ", " + outcome.reason : "") + ")"]);
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
  openDialog("Audit event " + e.action, [dl, el("h3", { text: "All details" }), el("pre", { class: "json", text: JSON.stringify(d, null, 2) })]);
}

async function exportAudit(format) {
  const p = auditFilter();
  p.set("format", format);
  const resp = await api("/v1/audit/export?" + p);
  if (!resp.ok) {
    notice(await problemText(resp), "error");
    return;
  }
  const blob = await resp.blob();
  const a = el("a", { href: URL.createObjectURL(blob), download: "sovra-audit." + format });
  document.body.append(a);
  a.click();
  a.remove();
  notice("Exported " + format.toUpperCase() + " (" + blob.size + " bytes).");
}

// ---- dialog -----------------------------------------------------------------

let dialogAction = null;

function openDialog(title, body, confirm) {
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...body);
  const ok = $("dialog-confirm");
  ok.hidden = !confirm;
  ok.textContent = confirm ? confirm.label : "Confirm";
  dialogAction = confirm ? confirm.action : null;
  $("dialog").showModal();
  (confirm ? $("dialog-cancel") : $("dialog-cancel")).focus();
}

// ---- start ------------------------------------------------------------------

async function start() {
  $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
  $("dev-form").addEventListener("submit", devToken);
  $("signout").addEventListener("click", () => signOut(""));
  $("ask-form").addEventListener("submit", ask);
  $("upload-form").addEventListener("submit", upload);
  $("doc-filter").addEventListener("input", renderDocuments);
  $("doc-refresh").addEventListener("click", () => loadDocuments(true));
  $("doc-more").addEventListener("click", () => loadDocuments(false));
  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); cursors = []; loadEvents(null); });
  $("audit-first").addEventListener("click", () => { cursors = []; loadEvents(null); });
  $("audit-next").addEventListener("click", () => { const c = $("audit-next").dataset.cursor; cursors.push(c); loadEvents(c); });
  $("audit-csv").addEventListener("click", () => exportAudit("csv"));
  $("audit-jsonl").addEventListener("click", () => exportAudit("jsonl"));
  $("dialog-cancel").addEventListener("click", () => $("dialog").close());
  $("dialog-confirm").addEventListener("click", async () => {
    $("dialog").close();
    if (dialogAction) await dialogAction();
  });
  window.addEventListener("hashchange", () => { notice(""); render(); });

  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    try {
      const resp = await api("/v1/whoami");
      if (resp.ok) principal = await resp.json();
    } catch { /* api() already returned to sign-in */ }
  }
  render();
  document.body.dataset.ready = "true";
}

start();
