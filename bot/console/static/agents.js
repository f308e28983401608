// Switchboard console add-on: the Agents panel (admins add agents, change roles, disable
// accounts, reset passwords). Uses only window.SwitchboardConsole (console.js); the server checks
// the "manage" permission on every call. Text is only ever set with textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const C = () => window.SwitchboardConsole;

  async function showAgents() {
    $("placeholder").hidden = true;
    $("conv-view").hidden = true;
    $("agents-view").hidden = false;
    await refreshAgents();
  }

  function hideAgents() {
    $("agents-view").hidden = true;
    if (C().selected()) $("conv-view").hidden = false;
    else $("placeholder").hidden = false;
  }

  async function changeAgent(name, change, done) {
    try {
      await C().api("POST", `/agents/${encodeURIComponent(name)}`, change);
      C().toast(done);
    } catch (err) {
      if (err.status !== 401) C().toast(err.message, "error");
    }
    await refreshAgents();
  }

  function agentRow(a) {
    const role = C().el("select", { "data-testid": "agent-role-select", "aria-label": `role of ${a.name}` });
    for (const r of ["admin", "agent", "viewer"]) {
      role.append(C().el("option", { value: r, selected: r === a.role, text: r }));
    }
    role.addEventListener("change", () => changeAgent(a.name, { role: role.value }, `${a.name} is now ${role.value}.`));
    const active = C().el("input", { type: "checkbox", "data-testid": "agent-active", checked: a.active,
      "aria-label": `${a.name} active` });
    active.addEventListener("change", () => changeAgent(a.name, { active: active.checked },
      active.checked ? `${a.name} enabled.` : `${a.name} disabled.`));
    const reset = C().el("button", { type: "button", class: "ghost", "data-testid": "agent-reset", text: "Reset password" });
    reset.addEventListener("click", () => {
      const password = window.prompt(`New password for ${a.name} (8+ characters)`);
      if (password) changeAgent(a.name, { password }, `Password of ${a.name} reset.`);
    });
    return C().el("tr", { "data-testid": "agent-row", "data-name": a.name },
      C().el("td", { text: a.name }), C().el("td", { text: a.display_name }),
      C().el("td", {}, role), C().el("td", {}, active), C().el("td", {}, reset));
  }

  async function refreshAgents() {
    try {
      const data = await C().api("GET", "/agents");
      $("agents-list").replaceChildren(...data.agents.map(agentRow));
    } catch (err) {
      if (err.status !== 401) C().toast(err.message, "error");
    }
  }

  async function addAgent(event) {
    event.preventDefault();
    const body = {
      name: $("new-agent-name").value.trim(),
      display_name: $("new-agent-display").value.trim() || undefined,
      password: $("new-agent-password").value,
      role: $("new-agent-role").value,
    };
    try {
      await C().api("POST", "/agents", body);
      $("agent-form").reset();
      C().toast(`${body.name} added.`);
    } catch (err) {
      if (err.status !== 401) C().toast(err.message, "error");
    }
    await refreshAgents();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("agents-open").addEventListener("click", showAgents);
    $("agents-close").addEventListener("click", hideAgents);
    $("agent-form").addEventListener("submit", addAgent);
  });
})();
