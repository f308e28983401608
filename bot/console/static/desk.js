// Switchboard console add-ons: copilot, canned replies, conversation search.
// Uses only window.SwitchboardConsole (console.js) and the console's JSON API. Text from
// customers, documents and the model is only ever rendered with textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const C = () => window.SwitchboardConsole;
  const enc = encodeURIComponent;
  let current = null;        // the open conversation record
  let copilotFor = null;     // session key the copilot panel shows
  let menuItems = [];        // canned replies in the "/" menu
  let menuIndex = 0;

  function views(show) {
    for (const id of ["placeholder", "conv-view", "agents-view", "search-view", "canned-view"]) {
      const node = $(id);
      if (node) node.hidden = id !== show;
    }
  }

  // --- copilot ----------------------------------------------------------------------------------

  function citationLinks(cites) {
    const { el } = C();
    const bar = el("span", {});
    for (const c of cites || []) {
      const safe = typeof c.url === "string" && /^https?:\/\//i.test(c.url);
      bar.append(safe
        ? el("a", { href: c.url, target: "_blank", rel: "noopener noreferrer", text: c.title })
        : el("span", { class: "chip", text: c.title }), " ");
    }
    return bar;
  }

  async function loadCopilot(conv) {
    const box = $("copilot");
    const key = conv.session_key;
    if (conv.mode !== "queued" && conv.mode !== "human") {
      box.hidden = true;
      copilotFor = null;
      return;
    }
    if (copilotFor === key) return;
    copilotFor = key;
    let data;
    try {
      data = await C().api("GET", C().convPath(key, "copilot"));
    } catch (err) {
      box.hidden = true;
      return;
    }
    if (C().selected() !== key) return;
    const { el } = C();
    const s = data.summary;
    const dl = el("dl", {},
      el("dt", { text: "Wants" }), el("dd", { "data-testid": "copilot-wants", text: s.wants || "—" }));
    if (s.latest) dl.append(el("dt", { text: "Latest" }), el("dd", { text: s.latest }));
    const tried = el("ul", { "data-testid": "copilot-tried" });
    for (const t of s.tried || []) tried.append(el("li", { text: t }));
    if (!(s.tried || []).length) tried.append(el("li", { text: "The bot did not answer." }));
    dl.append(el("dt", { text: "Bot tried" }), el("dd", {}, tried));
    if ((s.sources || []).length) dl.append(el("dt", { text: "Sources" }), el("dd", {}, citationLinks(s.sources)));
    box.replaceChildren(el("h2", { text: "Copilot summary" }), dl);
    const sug = data.suggestion;
    if (sug && sug.text) {
      const use = el("button", { type: "button", class: "primary", "data-testid": "copilot-use", text: "Use suggestion" });
      use.addEventListener("click", () => {
        const reply = $("reply-text");
        reply.value = sug.text;
        reply.focus();
        C().toast("Suggestion copied into the reply box: edit it before sending.");
      });
      use.disabled = !C().can("act");
      const label = sug.source === "llm" ? "Suggested answer (AI draft)" : "Suggested answer (best knowledge passage)";
      box.append(el("h2", { text: label }),
        el("div", { class: "suggestion", "data-testid": "copilot-suggestion", text: sug.text }),
        el("div", { class: "copilot-bar" }, use, citationLinks(sug.citations)));
    }
    box.hidden = false;
  }

  // --- canned replies in the reply box ("/shortcut") --------------------------------------------

  function closeMenu() {
    $("canned-menu").hidden = true;
    menuItems = [];
  }

  function insertCanned(item) {
    const reply = $("reply-text");
    reply.value = reply.value.replace(/(^|\s)\/[\w-]*$/, "$1") + item.text;
    closeMenu();
    reply.focus();
  }

  function renderMenu() {
    const { el } = C();
    const menu = $("canned-menu");
    menu.replaceChildren(...menuItems.map((item, i) => {
      const b = el("button", { type: "button", role: "option", "data-testid": "canned-item",
        "data-shortcut": item.shortcut, "aria-selected": i === menuIndex ? "true" : "false" },
        el("span", { class: "canned-short", text: `/${item.shortcut} · ${item.title}` }),
        el("span", { class: "canned-text", text: item.text }));
      b.addEventListener("mousedown", (e) => { e.preventDefault(); insertCanned(item); });
      return el("li", {}, b);
    }));
    menu.hidden = menuItems.length === 0;
  }

  let menuTimer = null;
  function onReplyInput() {
    const match = /(^|\s)\/([\w-]*)$/.exec($("reply-text").value);
    if (!match || !C().selected()) { closeMenu(); return; }
    clearTimeout(menuTimer);
    menuTimer = setTimeout(async () => {
      try {
        const data = await C().api("GET", `/canned?q=${enc(match[2])}&session_key=${enc(C().selected())}`);
        menuItems = data.canned;
        menuIndex = 0;
        renderMenu();
      } catch (err) { closeMenu(); }
    }, 120);
  }

  function onReplyKey(e) {
    if ($("canned-menu").hidden) return;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      menuIndex = (menuIndex + (e.key === "ArrowDown" ? 1 : menuItems.length - 1)) % menuItems.length;
      renderMenu();
    } else if (e.key === "Enter" || e.key === "Tab") {
      e.preventDefault();
      e.stopImmediatePropagation();   // not "send"
      insertCanned(menuItems[menuIndex]);
    } else if (e.key === "Escape") {
      closeMenu();
    }
  }

  // --- canned replies management (admins) ---------------------------------------------------

  async function showCanned() {
    views("canned-view");
    const { el, api, toast } = C();
    const view = $("canned-view");
    const field = (name, label, attrs) => el("label", {}, label, el(name === "body" ? "textarea" : "input",
      { name, "data-testid": `canned-${name}`, required: true, ...attrs }));
    const form = el("form", { class: "desk-form", "data-testid": "canned-form" },
      field("shortcut", "Shortcut", { placeholder: "refund" }),
      field("title", "Title", { placeholder: "Refund policy" }),
      field("body", "Text (placeholders: {customer.name} {ticket.id} {agent.name} {customer.email} {channel})",
        { rows: 3 }),
      el("button", { type: "submit", class: "primary", "data-testid": "canned-save", text: "Add" }));
    const table = el("table", { class: "canned-table" },
      el("thead", {}, el("tr", {}, el("th", { text: "Shortcut" }), el("th", { text: "Title" }),
        el("th", { text: "Text" }), el("th", {}))));
    const body = el("tbody", { "data-testid": "canned-list" });
    table.append(body);
    view.replaceChildren(el("div", { class: "conv-header" }, el("h1", { text: "Canned replies" })), form, table);
    async function refresh() {
      const data = await api("GET", "/canned");
      body.replaceChildren(...data.canned.map((c) => {
        const del = el("button", { type: "button", class: "ghost", text: "Delete" });
        del.addEventListener("click", async () => {
          try { await api("DELETE", `/canned/${c.id}`); } catch (err) { toast(err.message, "error"); }
          refresh();
        });
        return el("tr", { "data-testid": "canned-row" }, el("td", { text: `/${c.shortcut}` }),
          el("td", { text: c.title }), el("td", { class: "body", text: c.body }), el("td", {}, del));
      }));
    }
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(form).entries());
      try {
        await api("POST", "/canned", data);
        form.reset();
        toast(`/${data.shortcut} saved.`);
      } catch (err) { toast(err.message, "error"); }
      refresh();
    });
    await refresh();
  }

  // --- conversation search ---------------------------------------------------------------------

  function showSearch() {
    views("search-view");
    const { el, api, toast } = C();
    const view = $("search-view");
    if (view.dataset.built) { view.querySelector("input").focus(); return; }
    view.dataset.built = "1";
    const select = (name, label, options) => el("label", {}, label,
      el("select", { name, "data-testid": `search-${name}` },
        ...options.map(([v, t]) => el("option", { value: v, text: t }))));
    const form = el("form", { class: "desk-form", "data-testid": "search-form" },
      el("label", {}, "Text", el("input", { name: "text", "data-testid": "search-text", placeholder: "words in any message" })),
      el("label", {}, "Customer", el("input", { name: "customer", "data-testid": "search-customer", placeholder: "name or e-mail" })),
      select("channel", "Channel", [["", "any"], ["webchat", "Web chat"], ["email", "E-mail"], ["slack", "Slack"],
        ["teams", "Teams"], ["telegram", "Telegram"], ["discord", "Discord"], ["rest", "API"]]),
      select("status", "Status", [["", "any"], ["bot", "bot"], ["queued", "waiting"], ["human", "with an agent"], ["closed", "closed"]]),
      el("label", {}, "From", el("input", { name: "from", type: "date", "data-testid": "search-from" })),
      el("label", {}, "To", el("input", { name: "to", type: "date", "data-testid": "search-to" })),
      el("button", { type: "submit", class: "primary", "data-testid": "search-submit", text: "Search" }));
    const results = el("ul", { class: "results", "data-testid": "search-results" });
    const count = el("p", { class: "muted", "data-testid": "search-count" });
    view.replaceChildren(el("div", { class: "conv-header" }, el("h1", { text: "Search conversations" })), form, count, results);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const params = new URLSearchParams();
      for (const [k, v] of new FormData(form).entries()) if (v) params.set(k, v);
      try {
        const data = await api("GET", `/search?${params}`);
        count.textContent = `${data.results.length} conversation${data.results.length === 1 ? "" : "s"}`;
        results.replaceChildren(...data.results.map((r) => {
          const c = r.conversation;
          const b = el("button", { type: "button", class: "queue-item", "data-testid": "search-result",
            "data-session-key": c.session_key },
            el("span", { class: "qi-top" }, el("span", { class: "qi-name", text: c.customer.display_name }),
              el("span", { class: "chip", text: `${c.channel_label} · ${c.mode}` })),
            el("span", { class: "snippet", text: r.snippet || `last activity ${new Date(c.updated_at).toLocaleString()}` }));
          b.addEventListener("click", () => C().select(c.session_key));
          return el("li", {}, b);
        }));
      } catch (err) { toast(err.message, "error"); }
    });
    form.querySelector("input").focus();
  }

  // --- wiring -----------------------------------------------------------------------------------

  document.addEventListener("switchboard:login", () => {
    $("canned-open").hidden = !C().can("manage");
  });
  document.addEventListener("switchboard:conversation", (e) => {
    const conv = e.detail;
    if (!current || current.session_key !== conv.session_key || current.mode !== conv.mode) copilotFor = null;
    current = conv;
    $("search-view").hidden = true;
    $("canned-view").hidden = true;
    loadCopilot(conv);
  });
  document.addEventListener("DOMContentLoaded", () => {
    $("search-open").addEventListener("click", showSearch);
    $("agents-open").addEventListener("click", () => {   // console.js shows the Agents view
      $("search-view").hidden = true;
      $("canned-view").hidden = true;
    });
    $("canned-open").addEventListener("click", () => showCanned().catch((err) => C().toast(err.message, "error")));
    const reply = $("reply-text");
    reply.addEventListener("input", onReplyInput);
    reply.addEventListener("keydown", onReplyKey, true);
    reply.addEventListener("blur", () => setTimeout(closeMenu, 150));
  });
})();
