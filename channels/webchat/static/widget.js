/*! Switchboard web chat widget. Apache-2.0. No dependencies.
 *
 * Embed: <script src="https://HUB/webchat/widget.js" data-hub="https://HUB" defer></script>
 * (data-hub defaults to the script's origin; data-title sets the panel title.)
 *
 * Protocol: WebSocket HUB/webchat/ws?visitor=ID&after=SEQ (see channels/webchat/translate.py).
 * The visitor id lives in localStorage. On every (re)connect the hub replays each stored message
 * with seq > after; the widget keeps the highest seq it rendered and ignores repeats. Messages are
 * sent with client-generated event ids and kept until acknowledged, so a resend after a reconnect
 * is deduplicated by the hub: nothing is lost and nothing shows twice.
 */
(function () {
  "use strict";
  if (window.SwitchboardChat) return;

  var script = document.currentScript;
  var hubUrl = (script && script.getAttribute("data-hub")) ||
    (script && script.src ? new URL(script.src, location.href).origin : location.origin);
  var title = (script && script.getAttribute("data-title")) || "Support";
  var STORE_KEY = "switchboard.visitor";

  function randomId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    var a = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function visitorId() {
    var id = null;
    try { id = localStorage.getItem(STORE_KEY); } catch (e) { /* storage blocked */ }
    if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
      id = randomId();
      try { localStorage.setItem(STORE_KEY, id); } catch (e) { /* storage blocked */ }
    }
    return id;
  }

  // --- safe Markdown: the hub renders it (markdown-it-py) and sanitizes it (nh3) ------------
  // Each message frame carries "html", an allow-listed fragment (no script, handler or
  // javascript: URL survives); text the hub did not render is shown as plain text.
  function safeUrl(u) {
    return /^(https?:|mailto:)/i.test(u) ? u : null;
  }
  function fill(node, m) {
    if (typeof m.html === "string") node.innerHTML = m.html;
    else node.textContent = m.text || "";
  }

  // --- DOM ----------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function mount() {
    var sheet = document.createElement("link");
    sheet.rel = "stylesheet";
    sheet.href = hubUrl + "/webchat/widget.css";
    var root = el("div", "sbw-root");
    root.hidden = true; // until the stylesheet applies (no flash of an unstyled panel)
    sheet.onload = sheet.onerror = function () { root.hidden = false; };
    document.head.appendChild(sheet);
    root.setAttribute("data-switchboard", "widget");
    var button = el("button", "sbw-btn", "Chat with us");
    button.type = "button";
    button.setAttribute("aria-label", "Open chat");
    var panel = el("div", "sbw-panel");
    panel.setAttribute("role", "dialog");
    var head = el("div", "sbw-head");
    var name = el("b", null, title);
    var status = el("span", "sbw-status", "connecting…");
    var human = el("button", "sbw-human", "Talk to a person");
    human.type = "button";
    head.appendChild(name); head.appendChild(status); head.appendChild(human);
    var log = el("div", "sbw-log");
    log.setAttribute("aria-live", "polite");
    var typing = el("div", "sbw-typing");
    var form = el("form", "sbw-form");
    var input = el("textarea");
    input.placeholder = "Type your question…";
    input.setAttribute("aria-label", "Message");
    var send = el("button", null, "Send");
    send.type = "submit";
    form.appendChild(input); form.appendChild(send);
    panel.appendChild(head); panel.appendChild(log); panel.appendChild(typing); panel.appendChild(form);
    root.appendChild(panel); root.appendChild(button);
    document.body.appendChild(root);
    return { root: root, button: button, status: status, name: name, human: human, log: log,
             typing: typing, form: form, input: input };
  }

  // --- state and connection -----------------------------------------------------------------
  var ui, ws = null, lastSeq = 0, attempt = 0, reconnectTimer = null, typingTimer = null;
  var pending = {};          // event_id -> frame, until acknowledged
  var optimistic = {};       // event_id -> element shown before the stored copy arrives
  var actionsBar = null;
  var botName = "Assistant";
  var visitor = visitorId();

  function wsUrl() {
    var u = new URL("/webchat/ws", hubUrl);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.searchParams.set("visitor", visitor);
    u.searchParams.set("after", String(lastSeq));
    return u.toString();
  }

  function scroll() { ui.log.scrollTop = ui.log.scrollHeight; }

  function keepActionsLast() { if (actionsBar) ui.log.appendChild(actionsBar); }

  function renderMessage(m) {
    if (m.seq <= lastSeq) return;   // replayed after a reconnect: already shown
    lastSeq = m.seq;
    if (m.role === "customer" && m.event_id && optimistic[m.event_id]) {
      optimistic[m.event_id].classList.remove("sbw-pending");
      optimistic[m.event_id].setAttribute("data-seq", m.seq);
      delete optimistic[m.event_id];
      return;
    }
    var box;
    if (m.role === "system" || m.kind === "handoff" || m.kind === "notice") {
      box = el("div", "sbw-msg sbw-notice");
      fill(box, m);
    } else {
      box = el("div", "sbw-msg" + (m.role === "customer" ? " sbw-customer" : ""));
      if (m.role !== "customer") {
        box.appendChild(el("div", "sbw-who", m.role === "agent" ? (m.author || "Agent") : botName));
      }
      var body = el("div");
      fill(body, m);
      box.appendChild(body);
      if (m.citations && m.citations.length) {
        var cites = el("div", "sbw-cites", "Sources:");
        m.citations.forEach(function (c) {
          var u = c.url && safeUrl(c.url);
          var a = el(u ? "a" : "span", null, c.title || c.doc_id);
          if (u) { a.href = u; a.target = "_blank"; a.rel = "noopener noreferrer"; }
          a.setAttribute("data-doc-id", c.doc_id);
          cites.appendChild(a);
        });
        box.appendChild(cites);
      }
    }
    box.setAttribute("data-seq", m.seq);
    box.setAttribute("data-role", m.role);
    if (m.role !== "customer") hideTyping();
    ui.log.appendChild(box);
    keepActionsLast();
    scroll();
  }

  function renderActions(actions) {
    if (actionsBar) actionsBar.remove();
    actionsBar = el("div", "sbw-actions");
    actions.forEach(function (a) {
      var b = el("button", null, a.label);
      b.type = "button";
      b.addEventListener("click", function () { sendAction(a.id, a.label); });
      actionsBar.appendChild(b);
    });
    ui.log.appendChild(actionsBar);
    scroll();
  }

  function showTyping() {
    ui.typing.textContent = botName + " is typing…";
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, 10000);
  }
  function hideTyping() { ui.typing.textContent = ""; clearTimeout(typingTimer); }

  function setMode(mode, agent) {
    var text = { bot: "online", queued: "waiting for a person…", human: agent ? "with " + agent : "with a person", closed: "closed" }[mode];
    ui.status.textContent = text || "";
    ui.human.style.display = mode === "bot" ? "" : "none";
  }

  function transmit(frame) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(frame));
  }

  function newEventId() { return "w-" + randomId(); }

  function sendText(text) {
    var id = newEventId();
    var frame = { type: "message", text: text, event_id: id };
    pending[id] = frame;
    var box = el("div", "sbw-msg sbw-customer sbw-pending", text);
    optimistic[id] = box;
    if (actionsBar) { actionsBar.remove(); actionsBar = null; }
    ui.log.appendChild(box); scroll();
    transmit(frame);
  }

  function sendAction(action, label) {
    var id = newEventId();
    var frame = { type: "action", action: action, label: label, event_id: id };
    pending[id] = frame;
    if (actionsBar) { actionsBar.remove(); actionsBar = null; }
    transmit(frame);
  }

  function onFrame(f) {
    switch (f.type) {
      case "hello":
        botName = f.bot_name || botName;
        if (title === "Support" && f.company_name) ui.name.textContent = f.company_name + " support";
        setMode(f.mode, f.agent);
        break;
      case "message": renderMessage(f); break;
      case "ack": delete pending[f.event_id]; break;
      case "actions": if (f.actions && f.actions.length) renderActions(f.actions); break;
      case "typing": showTyping(); break;
      case "mode": setMode(f.mode, f.agent); break;
      case "error":
        if (f.event_id && pending[f.event_id] && f.retry_after) {
          var frame = pending[f.event_id];
          setTimeout(function () { transmit(frame); }, f.retry_after * 1000);
        } else if (f.event_id) {
          delete pending[f.event_id];
        }
        if (!f.retry_after) {
          var n = el("div", "sbw-msg sbw-notice", "Could not send: " + f.error);
          ui.log.appendChild(n); scroll();
        }
        break;
    }
  }

  function connect() {
    clearTimeout(reconnectTimer);
    ws = new WebSocket(wsUrl());
    ws.onopen = function () {
      attempt = 0;
      Object.keys(pending).forEach(function (id) { transmit(pending[id]); });
    };
    ws.onmessage = function (ev) {
      var f; try { f = JSON.parse(ev.data); } catch (e) { return; }
      onFrame(f);
    };
    ws.onclose = function () {
      ws = null;
      ui.status.textContent = "reconnecting…";
      // exponential backoff with full jitter: 0.5 s, 1 s, 2 s ... capped at 30 s
      var delay = Math.min(30000, 500 * Math.pow(2, attempt++)) * (0.5 + Math.random() / 2);
      reconnectTimer = setTimeout(connect, delay);
    };
    ws.onerror = function () { /* onclose follows */ };
  }

  function start() {
    ui = mount();
    ui.button.addEventListener("click", function () {
      var open = ui.root.classList.toggle("sbw-open");
      ui.button.textContent = open ? "Close" : "Chat with us";
      if (open) ui.input.focus();
    });
    ui.human.addEventListener("click", function () { sendAction("handoff.request", "Talk to a person"); });
    ui.form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var text = ui.input.value.trim();
      if (!text) return;
      ui.input.value = "";
      sendText(text);
    });
    ui.input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); ui.form.requestSubmit(); }
    });
    window.addEventListener("online", function () { if (!ws) connect(); });
    connect();
  }

  window.SwitchboardChat = {
    open: function () { if (ui && !ui.root.classList.contains("sbw-open")) ui.button.click(); },
    send: function (text) { sendText(String(text)); },
    visitor: function () { return visitor; }
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
