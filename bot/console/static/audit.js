// Switchboard console add-on: the audit log and customer data requests (admins only).
// Reads /console/api/audit, downloads /console/api/audit.jsonl, and posts export/erase requests
// to /console/api/customers/{export,erase}. Uses only window.SwitchboardConsole (console.js);
// the server checks the "manage" permission on every call. Text is only set with textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const C = () => window.SwitchboardConsole;

  function entryRow(e) {
    const el = C().el;
    const detail = e.erased ? "(erased)" : JSON.stringify(e.detail);
    return el("tr", { "data-testid": "audit-row", "data-action": e.action },
      el("td", { text: e.seq === null ? "" : String(e.seq) }),
      el("td", { text: new Date(e.at).toLocaleString() }),
      el("td", { text: e.actor }),
      el("td", { text: e.action }),
      el("td", { text: e.session_key || "" }),
      el("td", { text: detail }));
  }

  async function refresh() {
    try {
      const data = await C().api("GET", "/audit?limit=100");
      $("audit-list").replaceChildren(...data.entries.map(entryRow));
    } catch (err) {
      if (err.status !== 401) C().toast(err.message, "error");
    }
  }

  async function show() {
    for (const id of ["placeholder", "conv-view", "agents-view"]) $(id).hidden = true;
    $("audit-view").hidden = false;
    await refresh();
  }

  function hide() {
    $("audit-view").hidden = true;
    if (C().selected()) $("conv-view").hidden = false;
    else $("placeholder").hidden = false;
  }

  function download(name, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const a = C().el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  async function exportSubject(event) {
    event.preventDefault();
    const id = $("subject-id").value.trim();
    try {
      const doc = await C().api("POST", "/customers/export", { id });
      download("customer.json", JSON.stringify(doc, null, 2));
      C().toast("Export downloaded (it holds personal data: keep it safe).");
    } catch (err) {
      if (err.status !== 401) C().toast(err.message, "error");
    }
    await refresh();
  }

  async function eraseSubject() {
    const id = $("subject-id").value.trim();
    if (!id) return;
    if (!window.confirm(`Erase everything stored about ${id}? This cannot be undone.`)) return;
    try {
      const report = await C().api("POST", "/customers/erase", { id, confirm: true });
      C().toast(`Erased: ${report.sessions} conversation(s); request ${report.request_id}.`);
      await C().refreshQueue();  // their conversations leave the queue list now
    } catch (err) {
      if (err.status !== 401) C().toast(err.message, "error");
    }
    await refresh();
  }

  document.addEventListener("switchboard:app", (event) => {
    const manage = (event.detail.permissions || []).includes("manage");
    $("audit-open").hidden = !manage;
  });
  document.addEventListener("switchboard:select", () => { $("audit-view").hidden = true; });
  document.addEventListener("DOMContentLoaded", () => {
    $("audit-open").addEventListener("click", show);
    $("audit-close").addEventListener("click", hide);
    $("agents-open").addEventListener("click", () => { $("audit-view").hidden = true; });
    $("subject-form").addEventListener("submit", exportSubject);
    $("subject-erase").addEventListener("click", eraseSubject);
  });
})();
