// Switchboard console add-on: presence, teams and capacity (admins), SLA clocks and breaches.
// Talks to console.js only through DOM events ("switchboard:app", "switchboard:queue",
// "switchboard:conversation", "switchboard:sla", "switchboard:presence", "switchboard:select",
// "switchboard:logout").
// Text from the server is only ever rendered with textContent (never innerHTML).
"use strict";

(() => {
  const API = "/console/api";
  const CSRF_HEADER = "X-Switchboard-CSRF";
  const $ = (id) => document.getElementById(id);
  const state = { agent: null, permissions: [], csrf: null, routing: {}, sla: {}, timer: null,
                  fetching: null, again: false };
  const can = (p) => state.permissions.includes(p);

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      if (state.csrf) headers[CSRF_HEADER] = state.csrf;
    }
    const response = await fetch(API + path, {
      method, headers, credentials: "same-origin",
      body: method === "GET" ? undefined : JSON.stringify(body || {}),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error((data && data.error) || `${response.status}`);
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function notify(message, kind) {
    const box = $("sla-alerts");
    // The same message shown again (one change seen twice) renews the alert, never a second one.
    let item = [...box.children].find((node) => node.textContent === message);
    if (item) clearTimeout(Number(item.dataset.timer));
    else {
      item = el("p", { class: `alert ${kind || ""}`, "data-testid": "assign-alert", text: message });
      box.append(item);
    }
    box.hidden = false;
    const shown = item;
    shown.dataset.timer = String(setTimeout(() => { shown.remove(); box.hidden = !box.children.length; }, 8000));
  }

  function formatLeft(seconds) {
    const late = seconds < 0;
    let s = Math.abs(Math.floor(seconds));
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const text = h ? `${h}h ${String(m).padStart(2, "0")}m` : m ? `${m}m ${String(s).padStart(2, "0")}s` : `${s}s`;
    return late ? `${text} late` : `${text} left`;
  }

  // --- the top bar: my presence ---------------------------------------------------------------

  function buildTopbar() {
    if ($("presence-select")) return;
    const select = el("select", { id: "presence-select", class: "presence-select", "data-testid": "presence-select",
                                  title: "Your availability for new conversations" });
    for (const p of ["online", "away", "offline"]) select.append(el("option", { value: p, text: p }));
    select.addEventListener("change", async () => {
      try {
        await api("POST", "/presence", { presence: select.value });
        select.dataset.presence = select.value;
      } catch (err) {
        notify(`Presence not changed: ${err.message}`, "error");
      }
    });
    const teams = el("button", { id: "teams-open", class: "ghost", "data-testid": "teams-open", text: "Teams & SLAs" });
    teams.addEventListener("click", showTeams);
    const right = document.querySelector(".topbar-right");
    right.insertBefore(select, $("agent-name"));
    right.insertBefore(teams, $("agents-open"));
    const alerts = el("div", { id: "sla-alerts", class: "sla-alerts", role: "alert", "data-testid": "sla-alerts" });
    alerts.hidden = true;
    $("app-view").insertBefore(alerts, document.querySelector(".layout"));
    $("agents-open").addEventListener("click", hideTeams);
  }

  async function refreshPresence() {
    const data = await api("GET", "/presence");
    const me = data.agents.find((a) => a.name === state.agent.name);
    const select = $("presence-select");
    select.value = me ? me.presence : "offline";
    select.dataset.presence = select.value;
    return data;
  }

  // --- queue annotations: team, priority, SLA clock -------------------------------------------

  function fetchRouting() {
    if (state.fetching) { state.again = true; return state.fetching; }
    state.fetching = (async () => {
      try {
        do {
          state.again = false;
          const data = await api("GET", "/routing");
          state.routing = data.routing;
          state.sla = data.sla;
        } while (state.again);
        decorate();
      } catch (err) {
        console.warn("routing refresh failed", err);
      } finally {
        state.fetching = null;
      }
    })();
    return state.fetching;
  }

  function decorate() {
    for (const item of document.querySelectorAll(".queue-item[data-session-key]")) {
      const key = item.dataset.sessionKey;
      item.querySelector(".qi-assign")?.remove();
      const box = el("span", { class: "qi-sub qi-assign" });
      const routing = state.routing[key];
      if (routing && routing.team) box.append(el("span", { class: "chip team", "data-testid": "queue-team", text: routing.team }));
      if (routing && routing.priority !== "normal") {
        box.append(el("span", { class: `chip priority-${routing.priority}`, "data-testid": "queue-priority", text: routing.priority }));
      }
      const timer = state.sla[key];
      if (timer && timer.running) {
        const answered = timer.first_response_left_s === null;
        const due = answered ? timer.resolution_due : timer.first_response_due;
        box.append(el("span", { class: "chip sla-left", "data-testid": "sla-left", "data-due": due,
                                title: answered ? "until resolution is due" : "until a first reply is due" }));
        const kinds = Object.keys(timer.breaches);
        if (kinds.length) {
          box.append(el("span", { class: "chip sla-breach", "data-testid": "sla-breach",
                                  text: `SLA breached: ${kinds.map((k) => k.replace("_", " ")).join(", ")}` }));
        }
      }
      if (box.children.length) item.append(box);
    }
    // Waiting conversations: highest priority first (the server's order, longest wait first,
    // is kept among equals), as auto-assignment hands them out.
    const rank = { low: 0, normal: 1, high: 2, urgent: 3 };
    const list = $("queue-waiting");
    const items = [...list.children];
    const priorityOf = (li) => {
      const key = li.querySelector(".queue-item")?.dataset.sessionKey;
      return rank[(state.routing[key] || {}).priority || "normal"];
    };
    const sorted = items.map((li, i) => [li, i]).sort((a, b) => priorityOf(b[0]) - priorityOf(a[0]) || a[1] - b[1]);
    if (sorted.some(([li], i) => li !== items[i])) list.replaceChildren(...sorted.map(([li]) => li));
    tick();
  }

  function tick() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-due]")) {
      const left = (Date.parse(node.dataset.due) - now) / 1000;
      node.textContent = formatLeft(left);
      node.classList.toggle("late", left < 0);
      node.classList.toggle("soon", left >= 0 && left < 300);
    }
  }

  // --- teams, capacity and SLA policies (admins edit, everyone reads) -------------------------

  function buildTeamsView() {
    if ($("teams-view")) return;
    const done = el("button", { class: "ghost", "data-testid": "teams-close", text: "Done" });
    done.addEventListener("click", hideTeams);
    const view = el("section", { id: "teams-view", class: "agents-view teams-view", "data-testid": "teams-view" },
      el("div", { class: "conv-header" }, el("h1", { text: "Teams & SLAs" }), done),
      el("h2", { text: "Agents" }),
      el("table", { class: "agents-table" },
        el("thead", {}, el("tr", {}, ...["Agent", "Presence", "Open", "Capacity", "Teams"].map((t) => el("th", { text: t })))),
        el("tbody", { id: "presence-list", "data-testid": "presence-list" })),
      el("h2", { text: "Teams" }),
      el("table", { class: "agents-table" },
        el("thead", {}, el("tr", {}, ...["Team", "Channels", "Topics", "Members", ""].map((t) => el("th", { text: t })))),
        el("tbody", { id: "teams-list", "data-testid": "teams-list" })),
      teamForm(),
      el("h2", { text: "SLA policies" }),
      el("table", { class: "agents-table" },
        el("thead", {}, el("tr", {}, ...["Policy", "Team", "Priority", "First reply", "Resolution", "Business hours", "On breach", ""].map((t) => el("th", { text: t })))),
        el("tbody", { id: "sla-list", "data-testid": "sla-list" })),
      policyForm());
    view.hidden = true;
    document.querySelector("main.main").append(view);
  }

  const csv = (value) => value.split(",").map((v) => v.trim()).filter(Boolean);

  function teamForm() {
    const form = el("form", { id: "team-form", class: "agent-form manage-only", "data-testid": "team-form" },
      el("h2", { text: "Add a team" }),
      el("input", { id: "team-name", "data-testid": "team-name", placeholder: "name (billing)", required: true, autocomplete: "off" }),
      el("input", { id: "team-channels", "data-testid": "team-channels", placeholder: "channels (email, slack)", autocomplete: "off" }),
      el("input", { id: "team-topics", "data-testid": "team-topics", placeholder: "topics (refund)", autocomplete: "off" }),
      el("input", { id: "team-members", "data-testid": "team-members", placeholder: "members (alice, bob)", autocomplete: "off" }),
      el("button", { type: "submit", class: "primary", "data-testid": "team-submit", text: "Add" }));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("POST", "/teams", { name: $("team-name").value.trim(), channels: csv($("team-channels").value),
                                      topics: csv($("team-topics").value), members: csv($("team-members").value) });
        form.reset();
        await refreshTeams();
      } catch (err) {
        notify(`Team not added: ${err.message}`, "error");
      }
    });
    return form;
  }

  function policyForm() {
    const priorities = ["", "low", "normal", "high", "urgent"];
    const select = (id, label) => {
      const s = el("select", { id, "data-testid": id });
      for (const p of priorities) s.append(el("option", { value: p, text: p || label }));
      return s;
    };
    const form = el("form", { id: "sla-form", class: "agent-form manage-only", "data-testid": "sla-form" },
      el("h2", { text: "Add an SLA policy" }),
      el("input", { id: "sla-name", "data-testid": "sla-name", placeholder: "name", required: true, autocomplete: "off" }),
      el("input", { id: "sla-team", "data-testid": "sla-team", placeholder: "team (any)", autocomplete: "off" }),
      select("sla-priority", "any priority"),
      el("input", { id: "sla-first", "data-testid": "sla-first", type: "number", min: "1", placeholder: "first reply (s)", required: true }),
      el("input", { id: "sla-resolution", "data-testid": "sla-resolution", type: "number", min: "1", placeholder: "resolution (s)", required: true }),
      select("sla-escalate", "keep priority"),
      el("input", { id: "sla-hours", "data-testid": "sla-hours", autocomplete: "off", size: "34",
                    placeholder: "business hours: mon-fri 09:00-17:00 (empty: 24/7)" }),
      el("input", { id: "sla-tz", "data-testid": "sla-tz", autocomplete: "off", placeholder: "time zone",
                    value: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" }),
      el("button", { type: "submit", class: "primary", "data-testid": "sla-submit", text: "Save" }));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const hours = parseHours($("sla-hours").value);
        await api("POST", "/sla/policies", {
          name: $("sla-name").value.trim(), team: $("sla-team").value.trim() || null,
          priority: $("sla-priority").value || null, escalate_to: $("sla-escalate").value || null,
          first_response_s: Number($("sla-first").value), resolution_s: Number($("sla-resolution").value),
          business_hours: hours ? { timezone: $("sla-tz").value.trim() || "UTC", hours } : null,
        });
        const zone = $("sla-tz").value;
        form.reset();
        $("sla-tz").value = zone;
        await refreshTeams();
      } catch (err) {
        notify(`Policy not saved: ${err.message}`, "error");
      }
    });
    return form;
  }

  const WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

  // "mon-fri 09:00-17:00; sat 10:00-14:00" -> {mon: "09:00-17:00", ..., sat: "10:00-14:00"}
  // (bot.business_hours's JSON form; the server checks the ranges). Empty: null (24/7).
  function parseHours(text) {
    if (!text.trim()) return null;
    const hours = {};
    for (const group of text.split(";").map((g) => g.trim()).filter(Boolean)) {
      const [days, ...ranges] = group.split(/\s+/);
      if (!ranges.length) throw new Error(`"${group}": days, then hours such as 09:00-17:00`);
      for (const part of days.toLowerCase().split(",")) {
        const [from, to] = part.split("-");
        const a = WEEK.indexOf(from), b = to === undefined ? a : WEEK.indexOf(to);
        if (a < 0 || b < 0 || b < a) throw new Error(`"${part}": days are mon..sun, e.g. mon-fri`);
        for (let d = a; d <= b; d++) hours[WEEK[d]] = ranges.join("");
      }
    }
    return hours;
  }

  function describeHours(bh) {
    if (!bh) return "24/7";
    const days = WEEK.filter((d) => bh.hours[d]).map((d) => `${d} ${bh.hours[d]}`);
    return `${days.join(", ")} (${bh.timezone})`;
  }

  function removeButton(label, path) {
    const button = el("button", { class: "ghost", "data-testid": "remove", text: "Remove", title: label });
    button.addEventListener("click", async () => {
      try {
        await api("DELETE", path);
        await refreshTeams();
      } catch (err) {
        notify(err.message, "error");
      }
    });
    return button;
  }

  async function refreshTeams() {
    const [presence, teams, policies] = await Promise.all([
      api("GET", "/presence"), api("GET", "/teams"), api("GET", "/sla/policies")]);
    const manage = can("manage");
    $("presence-list").replaceChildren(...presence.agents.map((a) => {
      const capacity = el("input", { type: "number", min: "0", max: "100", value: a.capacity, class: "capacity",
                                     "data-testid": "agent-capacity", disabled: !manage });
      let saved = Number(a.capacity);
      capacity.addEventListener("change", async () => {
        const wanted = Number(capacity.value);
        if (wanted === saved) return;  // a second change event for the same edit
        try {
          saved = wanted;
          await api("POST", `/presence/${encodeURIComponent(a.name)}`, { capacity: wanted });
          notify(`${a.name} takes ${wanted} conversations at once.`);
        } catch (err) {
          saved = Number(a.capacity);
          notify(err.message, "error");
        }
      });
      return el("tr", { "data-testid": "presence-row", "data-name": a.name },
        el("td", { text: a.display_name }), el("td", {}, el("span", { class: `presence-dot ${a.presence}`, text: a.presence })),
        el("td", { text: String(a.load) }), el("td", {}, capacity), el("td", { text: a.teams.join(", ") }));
    }));
    $("teams-list").replaceChildren(...teams.teams.map((t) => el("tr", { "data-testid": "team-row", "data-name": t.name },
      el("td", { text: t.display_name }), el("td", { text: t.channels.join(", ") }), el("td", { text: t.topics.join(", ") }),
      el("td", { text: t.members.join(", ") }),
      el("td", {}, manage ? removeButton(`Remove ${t.name}`, `/teams/${encodeURIComponent(t.name)}`) : null))));
    $("sla-list").replaceChildren(...policies.policies.map((p) => el("tr", { "data-testid": "sla-row", "data-name": p.name },
      el("td", { text: p.name }), el("td", { text: p.team || "any" }), el("td", { text: p.priority || "any" }),
      el("td", { text: `${p.first_response_s}s` }), el("td", { text: `${p.resolution_s}s` }),
      el("td", { "data-testid": "sla-hours-cell", text: describeHours(p.business_hours) }),
      el("td", { text: p.escalate_to ? `raise to ${p.escalate_to}` : "notify" }),
      el("td", {}, manage ? removeButton(`Remove ${p.name}`, `/sla/policies/${encodeURIComponent(p.name)}`) : null))));
    for (const form of document.querySelectorAll("#teams-view .manage-only")) form.hidden = !manage;
  }

  async function showTeams() {
    for (const id of ["placeholder", "conv-view", "agents-view"]) $(id).hidden = true;
    $("teams-view").hidden = false;
    await refreshTeams();
  }

  function hideTeams() {
    const view = $("teams-view");
    if (!view || view.hidden) return;
    view.hidden = true;
    if ($("conv-view").hidden && $("agents-view").hidden) $("placeholder").hidden = false;
  }

  // --- transfer (the owner, or an admin) ------------------------------------------------------

  async function showTransfer(conv) {
    let select = $("transfer-select");
    if (!select) {
      select = el("select", { id: "transfer-select", class: "transfer-select", "data-testid": "transfer-select",
                              title: "Give this conversation to another agent or queue" });
      select.addEventListener("change", async () => {
        const [kind, name] = select.value.split(":", 2);
        if (!kind) return;
        select.disabled = true;
        try {
          await api("POST", `/conversations/${encodeURIComponent(select.dataset.key)}/transfer`,
                    kind === "agent" ? { agent: name } : { team: name });
          notify(kind === "agent" ? `Transferred to ${name}.` : `Back in the ${name || "general"} queue.`);
        } catch (err) {
          notify(`Not transferred: ${err.message}`, "error");
        } finally {
          select.disabled = false;
          select.value = "";
        }
      });
      document.querySelector(".conv-actions").insertBefore(select, $("resolve"));
    }
    const mine = conv.mode === "human" && conv.assigned_agent === state.agent.name;
    select.hidden = !can("act") || conv.mode !== "human" || !(mine || can("manage"));
    if (select.hidden) return;
    select.dataset.key = conv.session_key;
    const [presence, teams] = await Promise.all([api("GET", "/presence"), api("GET", "/teams")]);
    const options = [el("option", { value: "", text: "Transfer…" })];
    for (const a of presence.agents) {
      if (a.name === conv.assigned_agent || a.role === "viewer" || a.presence === "offline") continue;
      options.push(el("option", { value: `agent:${a.name}`,
                                  text: `${a.display_name} (${a.presence}, ${a.load}/${a.capacity})` }));
    }
    for (const t of teams.teams) options.push(el("option", { value: `team:${t.name}`, text: `${t.display_name} queue` }));
    options.push(el("option", { value: "team:", text: "General queue" }));
    select.replaceChildren(...options);
  }

  // --- wiring ---------------------------------------------------------------------------------

  document.addEventListener("switchboard:app", async (event) => {
    Object.assign(state, event.detail);
    buildTopbar();
    buildTeamsView();
    $("presence-select").hidden = !can("act");
    if (!state.timer) state.timer = setInterval(tick, 1000);
    try {
      await refreshPresence();
    } catch (err) {
      console.warn("presence failed", err);
    }
  });
  document.addEventListener("switchboard:logout", () => {
    state.agent = null;
    state.csrf = null;
    hideTeams();
  });
  document.addEventListener("switchboard:select", hideTeams);
  document.addEventListener("switchboard:conversation", (event) => {
    if (state.agent) showTransfer(event.detail).catch((err) => console.warn("transfer list failed", err));
  });
  document.addEventListener("switchboard:queue", () => { if (state.agent) fetchRouting(); });
  document.addEventListener("switchboard:sla", (event) => {
    const what = event.detail.kind === "first_response" ? "first reply" : "resolution";
    notify(`SLA breached (${what}, policy ${event.detail.policy})`, "error");
    fetchRouting();
  });
  document.addEventListener("switchboard:presence", (event) => {
    if (state.agent && event.detail.agent === state.agent.name) refreshPresence().catch(() => {});
    if ($("teams-view") && !$("teams-view").hidden) refreshTeams().catch(() => {});
  });
})();
