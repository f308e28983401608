// Switchboard analytics page: reads /console/api/analytics (the console's session) and draws
// the figures with the vendored Chart.js (static/vendor/chart.umd.js). No CDN, no inline code.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const charts = {};
  const PALETTE = ["#3b5bdb", "#1f8a4c", "#c77700", "#c92a2a", "#7048e8", "#0c8599", "#e64980", "#596275"];
  const REASONS = {
    customer_request: "asked for a person",
    agent_tool: "bot escalated",
    no_answer: "no answer found",
    turn_failed: "bot error",
  };

  function minutes(s) { return s === null || s === undefined ? null : Math.round((s / 60) * 10) / 10; }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return `${Math.round(s)}s`;
    if (s < 5400) return `${Math.round(s / 60)}m`;
    return `${(s / 3600).toFixed(1)}h`;
  }

  function isoDay(d) { return d.toISOString().slice(0, 10); }

  function draw(id, config) {
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
    charts[id] = new window.Chart($(id), config);
  }

  function render(f) {
    const t = f.totals;
    $("kpi-conversations").textContent = String(t.conversations);
    $("kpi-bot-rate").textContent = t.bot_resolution_rate === null ? "–" : `${Math.round(t.bot_resolution_rate * 100)}%`;
    $("kpi-first-response").textContent = `${duration(t.first_response_p50_s)} / ${duration(t.first_response_p90_s)}`;
    $("kpi-resolution").textContent = `${duration(t.resolution_p50_s)} / ${duration(t.resolution_p90_s)}`;
    $("kpi-sla").textContent = String(t.sla_breaches);
    $("kpi-csat").textContent = t.csat_average === null ? "–" : `${t.csat_average.toFixed(1)} (${t.csat_count})`;
    $("kpi-llm").textContent = `${(t.llm_input_tokens + t.llm_output_tokens).toLocaleString()} · $${t.llm_cost_usd.toFixed(4)}`;

    const days = f.days;
    draw("chart-conversations", {
      type: "bar",
      data: {
        labels: days,
        datasets: f.channels.map((ch, i) => ({
          label: ch, backgroundColor: PALETTE[i % PALETTE.length],
          data: f.per_day.map((d) => d.conversations_by_channel[ch] || 0),
        })),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    });
    const reasons = Object.keys(t.escalation_reasons);
    draw("chart-reasons", {
      type: "doughnut",
      data: {
        labels: reasons.map((r) => REASONS[r] || r),
        datasets: [{ data: reasons.map((r) => t.escalation_reasons[r]), backgroundColor: PALETTE }],
      },
    });
    draw("chart-csat", {
      type: "bar",
      data: {
        labels: ["1", "2", "3", "4", "5"],
        datasets: [{ label: "ratings", backgroundColor: "#1f8a4c",
          data: ["1", "2", "3", "4", "5"].map((n) => t.csat_distribution[n]) }],
      },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    const line = (label, key, color) => ({ label, borderColor: color, backgroundColor: color, spanGaps: true,
      data: f.per_day.map((d) => minutes(d[key])) });
    draw("chart-times", {
      type: "line",
      data: {
        labels: days,
        datasets: [line("first response p50", "first_response_p50_s", "#3b5bdb"),
          line("first response p90", "first_response_p90_s", "#91a7ff"),
          line("resolution p50", "resolution_p50_s", "#1f8a4c"),
          line("resolution p90", "resolution_p90_s", "#8ce99a")],
      },
      options: { scales: { y: { beginAtZero: true } } },
    });
    draw("chart-llm", {
      type: "bar",
      data: {
        labels: days,
        datasets: [
          { label: "input tokens", backgroundColor: "#7048e8", stack: "t", data: f.per_day.map((d) => d.llm_input_tokens) },
          { label: "output tokens", backgroundColor: "#b197fc", stack: "t", data: f.per_day.map((d) => d.llm_output_tokens) },
          { label: "cost (USD)", type: "line", borderColor: "#c77700", backgroundColor: "#c77700", yAxisID: "cost",
            data: f.per_day.map((d) => d.llm_cost_usd) },
        ],
      },
      options: { scales: { y: { beginAtZero: true, stacked: true }, cost: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } } } },
    });
  }

  async function load() {
    const params = new URLSearchParams({ from: $("from").value, to: $("to").value });
    $("csv").href = `/console/api/analytics.csv?${params}`;
    $("status").textContent = "loading…";
    const response = await fetch(`/console/api/analytics?${params}`, {
      credentials: "same-origin", headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      $("signed-out").hidden = false;
      $("status").textContent = "";
      return;
    }
    const data = await response.json();
    if (!response.ok) {
      $("status").textContent = data.error || `${response.status}`;
      return;
    }
    render(data);
    $("status").textContent = `${data.from} – ${data.to}`;
    document.body.dataset.loaded = "true";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const today = new Date();
    $("to").value = isoDay(today);
    $("from").value = isoDay(new Date(today.getTime() - 29 * 86400000));
    $("range").addEventListener("submit", (e) => { e.preventDefault(); load(); });
    load();
  });
})();
