// Switchboard console: the customer panel (the CRM record behind the open conversation).
// console.js announces the conversation it shows with a "switchboard:conversation" event on
// document (detail: the conversation, with its session_key) each time it renders it; this
// file fetches /console/api/conversations/{key}/customer
// and fills #customer-panel. Text is only ever set with textContent (never innerHTML).
"use strict";

(() => {
  const API = "/console/api";
  let current = null; // session key the panel is for (answers for older keys are dropped)

  function node(tag, className, text) {
    const n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function row(label, value, testid) {
    if (value === null || value === undefined || value === "") return null;
    const dt = node("dt", null, label);
    const dd = node("dd", null, value);
    dd.dataset.testid = testid;
    return [dt, dd];
  }

  function render(panel, data) {
    const title = node("h2", "cp-title", "Customer");
    const source = node("span", "cp-source", data.crm === "salesforce" ? "Salesforce" : "HubSpot");
    title.append(source);
    const parts = [title];
    if (!data.verified) {
      parts.push(node("p", "cp-note", "Identity not verified by the channel: no CRM record shown."));
    } else if (!data.contact) {
      parts.push(node("p", "cp-note", "No matching record in the CRM."));
    } else {
      const c = data.contact;
      const list = node("dl", "cp-fields");
      for (const pair of [
        row("Name", c.name, "cp-name"),
        row("Company", c.company, "cp-company"),
        row("Plan", c.plan, "cp-plan"),
        row("Owner", c.owner, "cp-owner"),
        row("E-mail", c.email, "cp-email"),
        row("Phone", c.phone, "cp-phone"),
      ]) {
        if (pair) list.append(...pair);
      }
      parts.push(list);
      if (c.url && /^https:\/\//.test(c.url)) {
        const link = node("a", "cp-link", "Open in the CRM");
        link.href = c.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        parts.push(link);
      }
    }
    const tickets = data.open_tickets || [];
    parts.push(node("h3", "cp-sub", `Open tickets (${tickets.length})`));
    const ul = node("ul", "cp-tickets");
    ul.dataset.testid = "cp-tickets";
    for (const t of tickets) {
      ul.append(node("li", null, `${t.id} · ${t.subject} · ${t.status}`));
    }
    parts.push(ul);
    panel.replaceChildren(...parts);
    panel.hidden = false;
  }

  async function load(key) {
    const panel = document.getElementById("customer-panel");
    if (!panel) return;
    current = key;
    panel.hidden = true;
    panel.replaceChildren();
    if (!key) return;
    let response;
    try {
      response = await fetch(`${API}/conversations/${encodeURIComponent(key)}/customer`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch (_) {
      return;
    }
    if (current !== key) return;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 429 || response.status === 503) {
        panel.replaceChildren(node("p", "cp-note", "The CRM is unavailable right now."));
        panel.hidden = false;
      }
      return;
    }
    if (!data || !data.crm) return; // no CRM configured: the panel stays hidden
    render(panel, data);
  }

  document.addEventListener("switchboard:conversation", (event) => {
    const key = event.detail && event.detail.session_key;
    if (key !== current) load(key); // a new conversation, not a re-render of the same one
  });
})();
