// slawatch console: filter the overview as you type, and keep it up to date without a reload.
// Progressive: every page works without it (the filter form submits, the page shows the states at load).
"use strict";
(function () {
  const counts = document.getElementById("counts");
  const search = document.querySelector(".filter input[type=search]");
  const stateSelect = document.querySelector(".filter select[name=state]");
  const shown = document.getElementById("shown");
  const rows = () => document.querySelectorAll("table.components tbody tr");

  function applyFilter() {
    if (!search) return;
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const state = stateSelect ? stateSelect.value : "";
    let n = 0;
    rows().forEach(function (tr) {
      const text = tr.dataset.text || "";
      const ok = (!state || tr.dataset.state === state) && words.every(function (w) { return text.includes(w); });
      tr.hidden = !ok;
      if (ok) n += 1;
    });
    document.querySelectorAll("section.customer").forEach(function (sec) {
      sec.hidden = !sec.querySelector("tbody tr:not([hidden])");
    });
    if (shown) shown.textContent = String(n);
  }

  if (search) {
    search.addEventListener("input", applyFilter);
    if (stateSelect) stateSelect.addEventListener("change", applyFilter);
  }

  function byName(name) {
    for (const tr of rows()) if (tr.dataset.name === name) return tr;
    return null;
  }

  function update(doc) {
    Object.entries(doc.counts || {}).forEach(function ([state, n]) {
      const el = counts.querySelector('[data-count="' + state + '"]');
      if (el) el.textContent = String(n);
    });
    const inc = doc.incidents || {};
    const a = counts.querySelector('[data-count="incidents"]');
    if (a && inc.active !== undefined) a.textContent = String(inc.active);
    const near = counts.querySelector('[data-count="near"]');
    if (near && inc.near_deadline !== undefined) near.textContent = String(inc.near_deadline);
    (doc.changed || []).forEach(function (c) {
      const tr = byName(c.name);
      if (!tr) return;
      tr.className = "st-" + c.state + " flash";
      tr.dataset.state = c.state;
      tr.querySelector(".state .badge").textContent = c.state.toUpperCase();
      const since = tr.querySelector(".since");
      since.textContent = "";
      if (c.since) {
        const t = document.createElement("time");
        t.setAttribute("datetime", c.since_iso);
        t.textContent = c.since;
        since.appendChild(t);
      }
      tr.querySelector(".reason").textContent = c.reason;
      setTimeout(function () { tr.classList.remove("flash"); }, 3000);
    });
    if (doc.figures) {
      rows().forEach(function (tr) {
        const f = doc.figures[tr.dataset.name];
        if (f) updateFigures(tr, f);
      });
      counts.dataset.figures = String(doc.figures_ms);
    }
    counts.dataset.seq = String(doc.seq);
    const asof = document.getElementById("read-at");
    if (asof && doc.read_ms) asof.textContent = utc(doc.read_ms);
    applyFilter();
  }

  const SVG = "http://www.w3.org/2000/svg";

  function utc(ms) {  // as the server writes instants: 2026-05-01 12:00:00 UTC
    return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function updateFigures(tr, f) {
    const mtd = tr.querySelector(".mtd");
    mtd.querySelector(".pct").textContent = f.pct;
    mtd.querySelector(".target").textContent = f.target;
    mtd.classList.toggle("missed", f.missed);
    const budget = tr.querySelector(".budget");
    budget.textContent = f.budget;
    budget.classList.toggle("missed", f.over);
    const cell = tr.querySelector("td.spark");
    cell.textContent = "";
    if (!f.spark) return;
    // Built element by element from numbers: nothing from the answer is parsed as markup.
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", String(f.spark.width));
    svg.setAttribute("height", String(f.spark.height));
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "latency up to " + f.spark.top + " ms");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", f.spark.points);
    svg.appendChild(line);
    cell.appendChild(svg);
  }

  if (counts) {
    const period = Math.max(1, Number(document.body.dataset.refreshS) || 5) * 1000;
    async function poll() {
      try {
        const res = await fetch("/api/overview?since=" + encodeURIComponent(counts.dataset.seq || "-1") +
                                "&figures=" + encodeURIComponent(counts.dataset.figures || "0"),
                                {credentials: "same-origin", headers: {"Accept": "application/json"}});
        if (res.status === 401) { window.location.reload(); return; }
        if (res.ok) update(await res.json());
      } catch (e) { /* the next poll tries again */ }
      setTimeout(poll, period);
    }
    setTimeout(poll, period);
  }
})();
