// Switchboard console add-on: the Knowledge page (admins) and "Save as answer" in conversations.
// Upload files or name sitemaps and pages to ingest, follow the job (polled), see the index's
// counts; list, add and delete curated answers; save a conversation's reply as a curated answer.
// Talks to /console/api/knowledge/... (knowledge.console); the server checks the "manage"
// permission on every call. Uses only window.SwitchboardConsole and the switchboard:* events.
// Documents' and answers' text is only ever set with textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const C = () => window.SwitchboardConsole;
  const KB = "/knowledge";
  const VIEWS = ["placeholder", "conv-view", "agents-view", "audit-view", "search-view", "canned-view", "teams-view"];
  const OPENERS = ["agents-open", "audit-open", "search-open", "canned-open", "teams-open"];
  const ACCEPT = ".md,.markdown,.html,.htm,.txt,.text,.pdf,.docx,.jsonl";
  const state = { manage: false, csrf: null, polling: null };

  const httpUrl = (u) => typeof u === "string" && /^https?:\/\//i.test(u);
  const count = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;
  const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);
  const fail = (err) => { if (err.status !== 401) C().toast(err.message, "error"); };

  // --- the page -------------------------------------------------------------------------------

  function build() {
    if ($("knowledge-view")) return;
    const { el } = C();
    const open = el("button", { id: "knowledge-open", class: "ghost", "data-testid": "knowledge-open", text: "Knowledge" });
    open.hidden = true;
    open.addEventListener("click", () => show().catch(fail));
    document.querySelector(".topbar-right").insertBefore(open, $("agents-open"));
    for (const id of OPENERS) { const b = $(id); if (b) b.addEventListener("click", hide); }

    const done = el("button", { class: "ghost", "data-testid": "knowledge-close", text: "Done" });
    done.addEventListener("click", () => { hide(); restore(); });
    const files = el("input", { id: "knowledge-files", type: "file", multiple: true, accept: ACCEPT,
      "data-testid": "knowledge-files", required: true });
    const upload = el("form", { id: "knowledge-upload", class: "agent-form", "data-testid": "knowledge-upload" },
      el("h2", { text: "Upload files" }),
      el("p", { class: "muted", text: "Markdown, HTML, text, PDF, DOCX or JSONL; 64 MiB per upload. A file's name is its document id: upload it again to update it." }),
      files, el("button", { type: "submit", class: "primary", "data-testid": "knowledge-upload-submit", text: "Upload" }));
    upload.addEventListener("submit", (e) => { e.preventDefault(); uploadFiles(files).catch(fail); });
    const crawl = el("form", { id: "knowledge-crawl", class: "agent-form", "data-testid": "knowledge-crawl" },
      el("h2", { text: "Read a website" }),
      el("textarea", { id: "knowledge-sitemaps", rows: 2, "data-testid": "knowledge-sitemaps",
        placeholder: "sitemap URLs, one per line (https://help.example.com/sitemap.xml)" }),
      el("textarea", { id: "knowledge-urls", rows: 2, "data-testid": "knowledge-urls",
        placeholder: "single page URLs, one per line" }),
      el("button", { type: "submit", class: "primary", "data-testid": "knowledge-crawl-submit", text: "Crawl" }));
    crawl.addEventListener("submit", (e) => { e.preventDefault(); crawlSites().catch(fail); });
    const add = el("button", { type: "button", class: "primary", "data-testid": "answer-new", text: "New answer" });
    add.addEventListener("click", () => openAnswerForm({}));

    const view = el("section", { id: "knowledge-view", class: "agents-view knowledge-view", "data-testid": "knowledge-view" },
      el("div", { class: "conv-header" }, el("h1", { text: "Knowledge" }),
        el("span", { id: "knowledge-stats", class: "muted", "data-testid": "knowledge-stats" }), done),
      el("div", { class: "knowledge-sources" }, upload, crawl),
      el("section", { id: "knowledge-job", class: "knowledge-job", "data-testid": "knowledge-job", "aria-live": "polite" }),
      el("div", { class: "knowledge-answers-head" }, el("h2", { text: "Curated answers" }), add),
      el("p", { class: "muted", text: "A customer question that means the same as one of an answer's phrasings gets that answer and its sources, before any search or language model." }),
      el("ul", { id: "answers-list", class: "answers-list", "data-testid": "answers-list" }));
    view.hidden = true;
    document.querySelector("main.main").append(view);
    document.body.append(answerDialog());
  }

  async function show() {
    for (const id of VIEWS) { const node = $(id); if (node) node.hidden = true; }
    $("knowledge-view").hidden = false;
    await Promise.all([refreshStats(), refreshAnswers()]);
  }

  function hide() {
    const view = $("knowledge-view");
    if (view) view.hidden = true;
  }

  function restore() {
    if (C().selected()) $("conv-view").hidden = false;
    else $("placeholder").hidden = false;
  }

  async function refreshStats() {
    const box = $("knowledge-stats");
    try {
      const s = await C().api("GET", `${KB}/stats`);
      box.textContent = [count(s.documents, "document"), count(s.chunks, "chunk"), count(s.answers, "curated answer"),
        s.writable ? "" : "read-only in this process"].filter(Boolean).join(" · ");
      box.dataset.documents = String(s.documents);
    } catch (err) {
      box.textContent = err.message;
    }
  }

  // --- ingest and its job ---------------------------------------------------------------------

  // multipart: the console's api() sends JSON only; same headers otherwise.
  async function postForm(path, form) {
    const response = await fetch(`/console/api${path}`, {
      method: "POST", credentials: "same-origin", body: form,
      headers: { Accept: "application/json", "X-Switchboard-CSRF": state.csrf || "" },
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const err = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      err.status = response.status;
      throw err;
    }
    return data;
  }

  async function uploadFiles(input) {
    if (!input.files.length) return;
    const form = new FormData();
    for (const file of input.files) form.append("file", file, file.name);
    const data = await postForm(`${KB}/ingest`, form);
    input.value = "";
    follow(data.job);
  }

  async function crawlSites() {
    const sitemaps = lines($("knowledge-sitemaps").value);
    const urls = lines($("knowledge-urls").value);
    if (!sitemaps.length && !urls.length) { C().toast("Name a sitemap or a page.", "error"); return; }
    const data = await C().api("POST", `${KB}/ingest`, { sitemaps, urls });
    $("knowledge-crawl").reset();
    follow(data.job);
  }

  function follow(job) {
    clearTimeout(state.polling);
    renderJob(job);
    if (job.state !== "running") { refreshStats(); return; }
    state.polling = setTimeout(async () => {
      try {
        const data = await C().api("GET", `${KB}/ingest/${encodeURIComponent(job.id)}`);
        follow(data.job);
      } catch (err) { fail(err); }
    }, 400);
  }

  const REPORT = [["documents_added", "added"], ["documents_updated", "updated"], ["documents_unchanged", "unchanged"],
    ["documents_removed", "removed"], ["documents_empty", "empty"], ["chunks_written", "chunks written"], ["seconds", "seconds"]];

  function renderJob(job) {
    const { el } = C();
    const box = $("knowledge-job");
    box.dataset.state = job.state;
    const label = { running: job.phase === "fetching" ? "Fetching pages" : "Embedding", done: "Done", failed: "Failed" }[job.state];
    const bar = el("progress", { max: String(Math.max(job.total, 1)), value: String(job.done), "data-testid": "job-progress" });
    if (job.state === "running" && !job.total) bar.removeAttribute("value");   // indeterminate
    const parts = [el("div", { class: "job-head" },
      el("strong", { "data-testid": "job-state", text: label }),
      el("span", { class: "muted", "data-testid": "job-count", text: job.total ? `${job.done} / ${job.total}` : "" }),
      el("span", { class: "muted job-current", text: job.state === "running" ? job.current : "" })), bar];
    if (job.report) {
      const report = el("dl", { class: "job-report", "data-testid": "job-report" });
      for (const [key, name] of REPORT) report.append(el("dt", { text: name }), el("dd", { "data-key": key, text: String(job.report[key]) }));
      parts.push(report);
    }
    if (job.error) parts.push(el("p", { class: "error", "data-testid": "job-error", text: job.error }));
    if (job.failed_pages.length) {
      const list = el("ul", { class: "job-failed", "data-testid": "job-failed" });
      for (const p of job.failed_pages) list.append(el("li", {}, el("span", { text: p.url }), el("span", { class: "muted", text: ` (${p.reason})` })));
      parts.push(el("p", { text: `${job.failed_pages.length} page(s) skipped:` }), list);
    }
    box.replaceChildren(...parts);
  }

  // --- curated answers ------------------------------------------------------------------------

  function sourceLinks(sources) {
    const { el } = C();
    const bar = el("span", { class: "answer-sources" });
    for (const s of sources) {
      bar.append(httpUrl(s.url)
        ? el("a", { href: s.url, target: "_blank", rel: "noopener noreferrer", text: s.title })
        : el("span", { class: "chip", text: s.title }));
    }
    return bar;
  }

  // The answer as the customer reads it: the server's sanitized rendering of its Markdown
  // (allow-listed tags, http(s)/mailto links), as console.js shows the bot's messages.
  function answerBody(a) {
    const { el } = C();
    const body = el("div", { class: "answer-text markdown", "data-testid": "answer-text" });
    if (typeof a.html === "string") body.innerHTML = a.html;
    else body.textContent = a.answer;
    return body;
  }

  function answerItem(a) {
    const { el } = C();
    const del = el("button", { type: "button", class: "ghost", "data-testid": "answer-delete", text: "Delete" });
    del.addEventListener("click", async () => {
      if (!window.confirm("Delete this curated answer?")) return;
      try {
        await C().api("DELETE", `${KB}/answers/${encodeURIComponent(a.id)}`);
        C().toast("Curated answer deleted.");
      } catch (err) { fail(err); }
      await Promise.all([refreshAnswers(), refreshStats()]);
    });
    const questions = el("ul", { class: "answer-questions" }, ...a.questions.map((q) => el("li", { text: q })));
    const by = [a.author, a.created_at && new Date(a.created_at).toLocaleString()].filter(Boolean).join(" · ");
    return el("li", { class: "answer", "data-testid": "answer-row", "data-id": a.id },
      questions, answerBody(a),
      el("div", { class: "answer-bar" }, sourceLinks(a.sources), el("span", { class: "muted", text: by }), del));
  }

  async function refreshAnswers() {
    try {
      const data = await C().api("GET", `${KB}/answers`);
      const items = data.answers.slice().reverse().map(answerItem);
      $("answers-list").replaceChildren(...(items.length ? items
        : [C().el("li", { class: "empty", text: "No curated answers yet." })]));
    } catch (err) { fail(err); }
  }

  function answerDialog() {
    const { el } = C();
    const field = (label, tag, attrs) => el("label", {}, label, el(tag, attrs));
    const cancel = el("button", { type: "button", class: "ghost", "data-testid": "answer-cancel", text: "Cancel" });
    const form = el("form", { id: "answer-form", class: "answer-form", method: "dialog", "data-testid": "answer-form" },
      el("h2", { text: "Curated answer" }),
      el("p", { id: "answer-origin", class: "muted", "data-testid": "answer-origin" }),
      field("Questions it answers (one phrasing per line)", "textarea",
        { id: "answer-questions", name: "questions", rows: 3, required: true, "data-testid": "answer-questions" }),
      field("Answer (Markdown, sent as it is)", "textarea",
        { id: "answer-text", name: "answer", rows: 6, required: true, "data-testid": "answer-answer" }),
      field("Sources (one per line: document id | title | URL)", "textarea",
        { id: "answer-sources", name: "sources", rows: 2, "data-testid": "answer-sources" }),
      el("div", { class: "answer-bar" }, cancel,
        el("button", { type: "submit", class: "primary", "data-testid": "answer-save", text: "Save answer" })));
    form.addEventListener("submit", (e) => { e.preventDefault(); saveAnswer(form).catch(fail); });
    const dialog = el("dialog", { id: "answer-dialog", class: "answer-dialog", "data-testid": "answer-dialog" }, form);
    cancel.addEventListener("click", () => dialog.close());
    return dialog;
  }

  const sourceLine = (s) => [s.doc_id, s.title !== s.doc_id ? s.title : "", s.url || ""].join(" | ").replace(/( \| )+$/, "");

  function parseSources(text) {
    return lines(text).map((line) => {
      const [doc_id, title, url] = line.split("|").map((p) => p.trim());
      return { doc_id, title: title || doc_id, url: url || undefined };
    });
  }

  // prefill: {questions: [..], answer, sources: [{doc_id, title, url}], conversation}
  function openAnswerForm(prefill) {
    const form = $("answer-form");
    form.reset();
    form.dataset.conversation = prefill.conversation || "";
    $("answer-questions").value = (prefill.questions || []).join("\n");
    $("answer-text").value = prefill.answer || "";
    $("answer-sources").value = (prefill.sources || []).map(sourceLine).join("\n");
    $("answer-origin").textContent = prefill.conversation ? "From the conversation: edit the question and the answer into their general form before saving." : "";
    $("answer-dialog").showModal();
    $("answer-questions").focus();
  }

  async function saveAnswer(form) {
    const body = {
      questions: lines($("answer-questions").value),
      answer: $("answer-text").value.trim(),
      sources: parseSources($("answer-sources").value),
    };
    if (form.dataset.conversation) body.conversation = form.dataset.conversation;
    await C().api("POST", `${KB}/answers`, body);
    $("answer-dialog").close();
    C().toast("Curated answer saved: customers asking this get it from now on.");
    if (!$("knowledge-view").hidden) await Promise.all([refreshAnswers(), refreshStats()]);
  }

  // --- "Save as answer" in a conversation -----------------------------------------------------

  const isReply = (m) => (m.role === "bot" || m.role === "agent") && !m.internal && m.kind !== "note";

  // The reply with seq `seq` (the last reply when null) and the customer's last message before it.
  async function fromConversation(key, seq) {
    const data = await C().api("GET", `${C().convPath(key, "messages")}?after=0&limit=500`);
    const replies = data.messages.filter(isReply);
    const reply = seq === null ? replies[replies.length - 1] : replies.find((m) => m.seq === seq);
    if (!reply) { C().toast("There is no bot or agent reply to save yet.", "error"); return; }
    const asked = data.messages.filter((m) => m.role === "customer" && m.seq < reply.seq).pop();
    openAnswerForm({
      questions: asked ? [asked.text.trim()] : [],
      answer: reply.text,
      sources: (reply.citations || []).map(({ doc_id, title, url }) => ({ doc_id, title, url })),
      conversation: key,
    });
  }

  function saveButton(seq, attrs) {
    const button = C().el("button", { type: "button", title: "Save this reply as a curated answer", ...attrs });
    button.addEventListener("click", () => {
      const key = C().selected();
      if (key) fromConversation(key, seq).catch(fail);
    });
    return button;
  }

  // Each reply in the transcript (console.js renders it) gets its own small button.
  function decorate(item) {
    if (!state.manage || item.dataset.role === undefined || item.querySelector(".msg-save")) return;
    if (!isReply({ role: item.dataset.role, kind: item.dataset.kind, internal: item.dataset.internal === "true" })) return;
    item.querySelector(".msg-head").append(saveButton(Number(item.dataset.seq),
      { class: "ghost msg-save", "data-testid": "msg-save-answer", text: "Save as answer" }));
  }

  function watchTranscript() {
    const list = $("transcript");
    new MutationObserver((records) => {
      for (const r of records) for (const node of r.addedNodes) if (node.nodeType === 1) decorate(node);
    }).observe(list, { childList: true });
  }

  function conversationButton() {
    let button = $("save-answer");
    if (!button) {
      button = saveButton(null, { id: "save-answer", class: "ghost", "data-testid": "save-answer", text: "Save as answer" });
      document.querySelector(".conv-actions").insertBefore(button, $("conv-mode").nextSibling);
    }
    return button;
  }

  // --- wiring ---------------------------------------------------------------------------------

  document.addEventListener("switchboard:app", (event) => {
    build();
    // Managers only, and only when the knowledge package's console extension is loaded.
    state.manage = (event.detail.permissions || []).includes("manage")
      && (event.detail.extensions || []).includes("knowledge");
    state.csrf = event.detail.csrf;
    $("knowledge-open").hidden = !state.manage;
    conversationButton().hidden = !state.manage;
    for (const item of document.querySelectorAll("#transcript > .msg")) decorate(item);
  });
  document.addEventListener("switchboard:logout", () => {
    state.manage = false;
    state.csrf = null;
    clearTimeout(state.polling);
    hide();
  });
  document.addEventListener("switchboard:select", hide);
  document.addEventListener("switchboard:conversation", () => {
    conversationButton().hidden = !state.manage;
  });
  document.addEventListener("DOMContentLoaded", watchTranscript);
})();
