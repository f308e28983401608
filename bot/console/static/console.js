// Switchboard agent console. Vanilla JS, no build step.
// Customers' text is only ever rendered with textContent; the bot's and agents' messages use the
// "html" the server rendered from Markdown and sanitized (bot.desk.markdown), never raw text.
"use strict";

(() => {
  const API = "/console/api";
  const CSRF_HEADER = "X-Switchboard-CSRF";
  const $ = (id) => document.getElementById(id);

  const state = {
    agent: null,          // {name, display_name, role, active}
    permissions: [],      // "read", "act", "manage" (the server checks them too)
    csrf: null,
    conversations: [],    // queue as last fetched
    selected: null,       // session key of the open conversation
    conv: null,           // its conversation record
    lastSeq: 0,           // highest seq rendered in the transcript
    loading: null,        // in-flight messages fetch (a Promise)
    reloadAgain: false,   // another fetch was asked for while one ran
    source: null,         // EventSource
    queueTimer: null,
  };

  // --- HTTP -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      if (state.csrf) headers[CSRF_HEADER] = state.csrf;
    }
    const response = await fetch(API + path, {
      method,
      headers,
      credentials: "same-origin",
      body: method === "GET" ? undefined : JSON.stringify(body || {}),
    });
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = (data && data.error) || `${response.status} ${response.statusText}`;
      if (response.status === 401 && path !== "/login" && path !== "/me") showLogin("Your session ended; sign in again.");
      throw new ApiError(response.status, message);
    }
    return data;
  }

  const convPath = (key, action) => `/conversations/${encodeURIComponent(key)}/${action}`;

  // --- small UI helpers -----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  let toastTimer = null;
  function toast(message, kind) {
    const box = $("toast");
    box.textContent = message;
    box.dataset.kind = kind || "info";
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  function formatWait(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
    const h = Math.floor(m / 60);
    return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  }

  function formatTime(iso) {
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  const REASONS = {
    customer_request: "asked for a person",
    agent_tool: "bot escalated",
    no_answer: "no answer found",
    turn_failed: "bot error",
  };
  const reasonLabel = (r) => REASONS[r] || (r ? r.replace(/_/g, " ") : "");
  // The server picks a readable label (never a platform id); e-mail is given only when verified.
  const customerName = (c) => c.customer.display_name || c.customer.name || "Customer";
  const can = (permission) => state.permissions.includes(permission);
  // Hooks for add-on scripts (assignment.js): DOM events "switchboard:<name>".
  const emit = (name, detail) => document.dispatchEvent(new CustomEvent(`switchboard:${name}`, { detail }));

  // --- views ----------------------------------------------------------------------------------

  function showLogin(message) {
    closeEvents();
    emit("logout");
    state.agent = null;
    state.csrf = null;
    $("app-view").hidden = true;
    $("login-view").hidden = false;
    $("login-error").textContent = message || "";
    $("login-password").value = "";
    $("login-name").focus();
  }

  async function showApp(me) {
    state.agent = me.agent;
    state.permissions = me.permissions || [];
    state.csrf = me.csrf;
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    document.dispatchEvent(new CustomEvent("switchboard:login", { detail: me }));
    $("agent-name").textContent = me.agent.display_name;
    $("agent-role").textContent = me.agent.role;
    $("agents-open").hidden = !can("manage");
    emit("app", {
      agent: me.agent, permissions: state.permissions, csrf: state.csrf,
      extensions: me.extensions || [],
    });
    openEvents();
    await refreshQueue();
    const fromHash = decodeURIComponent(location.hash.replace(/^#\/c\//, ""));
    if (location.hash.startsWith("#/c/") && fromHash) await select(fromHash);
  }

  // --- queue ----------------------------------------------------------------------------------

  async function refreshQueue() {
    const data = await api("GET", "/queue");
    state.conversations = data.conversations;
    renderQueue();
  }

  function scheduleQueueRefresh() {
    if (state.queueTimer) return;
    state.queueTimer = setTimeout(() => {
      state.queueTimer = null;
      refreshQueue().catch((err) => console.warn("queue refresh failed", err));
    }, 150);
  }

  function queueItem(c) {
    const mine = c.assigned_agent === state.agent.name;
    const wait = c.mode === "queued" && c.queued_at
      ? el("span", { class: "qi-wait", "data-since": c.queued_at, "data-testid": "queue-wait" })
      : null;
    const sub = el("span", { class: "qi-sub" },
      el("span", { class: "chip", "data-testid": "queue-channel", text: c.channel_label || c.channel }));
    if (c.mode === "queued" && c.escalation_reason) {
      sub.append(el("span", { class: "chip reason", text: reasonLabel(c.escalation_reason) }));
    }
    if (c.mode === "human") {
      sub.append(el("span", {
        class: mine ? "chip mine" : "chip owner",
        "data-testid": "queue-owner",
        text: mine ? "you" : c.assigned_agent,
      }));
    }
    if (c.ticket_id) sub.append(el("span", { class: "chip", text: c.ticket_id }));
    const button = el(
      "button",
      {
        type: "button",
        class: "queue-item",
        "data-testid": "queue-item",
        "data-session-key": c.session_key,
        "data-mode": c.mode,
        "aria-current": c.session_key === state.selected ? "true" : "false",
      },
      el("span", { class: "qi-top" }, el("span", { class: "qi-name", text: customerName(c) }), wait),
      sub,
    );
    button.addEventListener("click", () => select(c.session_key));
    return el("li", {}, button);
  }

  function renderQueue() {
    const waiting = state.conversations.filter((c) => c.mode === "queued");
    const active = state.conversations.filter((c) => c.mode === "human");
    $("queue-waiting").replaceChildren(...waiting.map(queueItem));
    $("queue-active").replaceChildren(...active.map(queueItem));
    $("count-queued").textContent = String(waiting.length);
    $("count-human").textContent = String(active.length);
    $("waiting-empty").hidden = waiting.length > 0;
    $("active-empty").hidden = active.length > 0;
    document.title = waiting.length ? `(${waiting.length}) Switchboard console` : "Switchboard console";
    tick();
    emit("queue");
  }

  function tick() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-since]")) {
      const seconds = (now - Date.parse(node.dataset.since)) / 1000;
      node.textContent = formatWait(seconds);
      node.classList.toggle("long", seconds > 300);
    }
  }

  // --- one conversation -----------------------------------------------------------------------

  async function select(key) {
    if (state.selected !== key) {
      state.selected = key;
      state.lastSeq = 0;
      state.conv = null;
      $("transcript").replaceChildren();
      $("reply-text").value = "";
      history.replaceState(null, "", `#/c/${encodeURIComponent(key)}`);
    }
    $("placeholder").hidden = true;
    $("agents-view").hidden = true;
    emit("select");
    $("conv-view").hidden = false;
    for (const item of document.querySelectorAll(".queue-item")) {
      item.setAttribute("aria-current", item.dataset.sessionKey === key ? "true" : "false");
    }
    await loadMessages();
    $("reply-text").focus();
  }

  // Fetches run one at a time; a request made meanwhile runs once after the current one.
  function loadMessages() {
    if (state.loading) {
      state.reloadAgain = true;
      return state.loading;
    }
    state.loading = (async () => {
      try {
        do {
          state.reloadAgain = false;
          await fetchNewMessages();
        } while (state.reloadAgain);
      } finally {
        state.loading = null;
      }
    })();
    return state.loading;
  }

  async function fetchNewMessages() {
    const key = state.selected;
    if (!key) return;
    let data;
    try {
      data = await api("GET", `${convPath(key, "messages")}?after=${state.lastSeq}`);
    } catch (err) {
      if (err.status === 404) toast("That conversation no longer exists.", "error");
      else if (err.status !== 401) toast(`Could not load messages: ${err.message}`, "error");
      return;
    }
    if (key !== state.selected) return;
    state.conv = data.conversation;
    const list = $("transcript");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    for (const m of data.messages) {
      if (m.seq <= state.lastSeq) continue;
      list.append(renderMessage(m));
      state.lastSeq = m.seq;
    }
    if (nearBottom || data.messages.length) list.scrollTop = list.scrollHeight;
    renderHeader();
  }

  function authorOf(m) {
    if (m.kind === "note") return `Internal note · ${m.author || "agent"}`;
    if (m.role === "customer") return state.conv ? customerName(state.conv) : "Customer";
    if (m.role === "bot") return "Bot";
    if (m.role === "agent") return m.author || "Agent";
    return "System";
  }

  function renderMessage(m) {
    const item = el("li", {
      class: "msg",
      "data-testid": "msg",
      "data-role": m.role,
      "data-kind": m.kind,
      "data-seq": m.seq,
      "data-internal": m.internal ? "true" : "false",
    });
    item.append(el("div", { class: "msg-head" },
      el("span", { class: "msg-author", text: authorOf(m) }),
      el("time", { datetime: m.created_at, text: formatTime(m.created_at) })));
    const body = el("div", { class: "msg-body", "data-testid": "msg-text" });
    if (typeof m.html === "string" && m.role !== "customer") {
      body.classList.add("md");
      body.innerHTML = m.html; // sanitized by the server: allow-listed tags, http(s)/mailto links
    } else {
      body.textContent = m.text;
    }
    item.append(body);
    if (m.citations && m.citations.length) {
      const cites = el("div", { class: "msg-cites" });
      for (const c of m.citations) {
        const safe = typeof c.url === "string" && /^https?:\/\//i.test(c.url);
        cites.append(safe
          ? el("a", { href: c.url, target: "_blank", rel: "noopener noreferrer", text: c.title })
          : el("span", { text: c.title }));
      }
      item.append(cites);
    }
    return item;
  }

  function renderHeader() {
    const c = state.conv;
    if (!c) return;
    $("conv-customer").textContent = customerName(c);
    const email = c.customer.email && c.customer.email !== customerName(c) ? c.customer.email : null;
    const meta = [c.channel_label || c.channel, email && `${email} (verified)`,
      c.ticket_id && `ticket ${c.ticket_id}`,
      c.mode === "queued" && c.escalation_reason && reasonLabel(c.escalation_reason)];
    $("conv-meta").textContent = meta.filter(Boolean).join(" · ");
    const badge = $("conv-mode");
    badge.dataset.mode = c.mode;
    const mine = c.mode === "human" && c.assigned_agent === state.agent.name;
    badge.textContent = c.mode === "human" ? (mine ? "with you" : `with ${c.assigned_agent}`) : c.mode;

    const claim = $("claim");
    claim.hidden = mine || c.mode === "closed" || !can("act");
    claim.disabled = c.mode === "human";
    claim.textContent = c.mode === "bot" ? "Take over" : "Claim";
    const resolve = $("resolve");
    resolve.hidden = !can("act") || !(c.mode === "queued" || mine);
    $("close-conv").hidden = resolve.hidden;
    updateComposer();
    // The add-ons (assignment.js, desk.js, customer_panel.js) read the conversation shown.
    emit("conversation", c);
  }

  function updateComposer() {
    const c = state.conv;
    const note = $("note-toggle").checked;
    const mine = c && c.mode === "human" && c.assigned_agent === state.agent.name;
    $("composer").classList.toggle("note-mode", note);
    $("send").textContent = note ? "Add note" : "Send";
    $("reply-text").placeholder = note
      ? "Internal note: only agents see this…"
      : "Reply to the customer…";
    const canSend = can("act") && (note || mine);
    $("send").disabled = !canSend;
    $("reply-text").disabled = !canSend;
    $("note-toggle").disabled = !can("act");
    let hint = "";
    if (!can("act")) hint = "Your role is read-only (viewer).";
    else if (note) hint = "Notes are never shown to the customer.";
    else if (!c) hint = "";
    else if (c.mode === "human" && !mine) hint = `${c.assigned_agent} owns this conversation.`;
    else if (!mine) hint = "Claim the conversation to reply.";
    else hint = "Enter to send, Shift+Enter for a new line.";
    $("composer-hint").textContent = hint;
  }

  // --- actions --------------------------------------------------------------------------------

  async function act(button, work) {
    button.disabled = true;
    try {
      await work();
    } catch (err) {
      if (err.status !== 401) toast(err.message, "error");
    } finally {
      button.disabled = false;
      await loadMessages();
      scheduleQueueRefresh();
    }
  }

  function claimSelected() {
    const key = state.selected;
    return act($("claim"), async () => {
      await api("POST", convPath(key, "claim"), {});
    });
  }

  function resolveSelected() {
    const key = state.selected;
    return act($("resolve"), async () => {
      await api("POST", convPath(key, "resolve"), {});
      toast("Handed back to the bot.");
    });
  }

  function closeSelected() {
    const key = state.selected;
    if (!window.confirm("Close this conversation? The customer is thanked and it ends.")) return;
    return act($("close-conv"), async () => {
      await api("POST", convPath(key, "resolve"), { close: true });
      toast("Conversation closed.");
    });
  }

  async function send(event) {
    event.preventDefault();
    const box = $("reply-text");
    const text = box.value.trim();
    if (!text || !state.selected) return;
    const action = $("note-toggle").checked ? "note" : "reply";
    const key = state.selected;
    await act($("send"), async () => {
      await api("POST", convPath(key, action), { text });
      box.value = "";
    });
    updateComposer();
    box.focus();
  }

  // --- live updates (Server-Sent Events) ------------------------------------------------------

  function setLive(stateName, label) {
    const node = $("live-status");
    node.dataset.state = stateName;
    node.textContent = label;
  }

  // Redis reachability: {redis: "up" | "down" | null, since: ISO 8601 | null}.
  function setBackend(data) {
    const down = data && data.redis === "down";
    const banner = $("outage");
    banner.hidden = !down;
    banner.dataset.state = down ? "down" : "up";
    const since = down && data.since ? new Date(data.since) : null;
    $("outage-since").textContent =
      since && !isNaN(since) ? ` since ${since.toLocaleTimeString()}` : "";
  }

  function openEvents() {
    closeEvents();
    const source = new EventSource(`${API}/events`);
    state.source = source;
    source.addEventListener("ready", (e) => {
      setLive("live", "live");
      setBackend(JSON.parse(e.data));
      // Catch up on anything missed while disconnected.
      scheduleQueueRefresh();
      if (state.selected) loadMessages();
    });
    source.addEventListener("message", (e) => {
      const data = JSON.parse(e.data);
      if (data.session_key === state.selected) loadMessages();
      scheduleQueueRefresh();
    });
    source.addEventListener("mode", (e) => {
      const data = JSON.parse(e.data);
      if (data.session_key === state.selected) loadMessages();
      scheduleQueueRefresh();
    });
    source.addEventListener("backend", (e) => {
      const data = JSON.parse(e.data);
      setBackend(data);
      if (data.redis === "up") {
        // Events of the outage may be lost: catch up.
        scheduleQueueRefresh();
        if (state.selected) loadMessages();
      }
    });
    for (const type of ["sla", "presence"]) {
      source.addEventListener(type, (e) => { emit(type, JSON.parse(e.data)); scheduleQueueRefresh(); });
    }
    source.addEventListener("lagged", () => {
      scheduleQueueRefresh();
      if (state.selected) loadMessages();
    });
    source.onerror = () => {
      setLive("offline", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (e.g. the session ended): check, then retry.
        setTimeout(() => {
          api("GET", "/me").then(() => { if (state.agent) openEvents(); }).catch(() => {});
        }, 2000);
      }
    };
  }

  function closeEvents() {
    if (state.source) state.source.close();
    state.source = null;
  }

  // --- wiring ---------------------------------------------------------------------------------

  async function login(event) {
    event.preventDefault();
    const submit = $("login-submit");
    submit.disabled = true;
    $("login-error").textContent = "";
    try {
      const me = await api("POST", "/login", {
        name: $("login-name").value.trim(),
        password: $("login-password").value,
      });
      $("login-password").value = "";
      await showApp(me);
    } catch (err) {
      $("login-error").textContent = err.status === 401 ? "Wrong name or password." : err.message;
    } finally {
      submit.disabled = false;
    }
  }

  async function logout() {
    try {
      await api("POST", "/logout", {});
    } finally {
      state.selected = null;
      $("conv-view").hidden = true;
      $("placeholder").hidden = false;
      history.replaceState(null, "", location.pathname);
      showLogin("");
    }
  }

  function init() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("claim").addEventListener("click", claimSelected);
    $("resolve").addEventListener("click", resolveSelected);
    $("close-conv").addEventListener("click", closeSelected);
    $("composer").addEventListener("submit", send);
    $("note-toggle").addEventListener("change", updateComposer);
    $("reply-text").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    setInterval(tick, 1000);
    api("GET", "/me").then(showApp).catch(() => showLogin(""));
  }

  // What the add-ons (agents.js, desk.js, ...) use; they never reach into the console's internals.
  window.SwitchboardConsole = {
    api,
    convPath,
    el,
    toast,
    can: (permission) => can(permission),
    agent: () => state.agent,
    selected: () => state.selected,
    select: (key) => select(key),
    refreshQueue: () => refreshQueue(),
  };
  document.addEventListener("DOMContentLoaded", init);
})();
