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
        t.setAttribute("datetime", String(c.since_ms));
        t.textContent = c.since;
        since.appendChild(t);
      }
      tr.querySelector(".reason").textContent = c.reason;
      setTimeout(function () { tr.classList.remove("flash"); }, 3000);
    });
    counts.dataset.seq = String(doc.seq);
    applyFilter();
  }

  if (counts) {
    const period = Math.max(1, Number(document.body.dataset.refreshS) || 5) * 1000;
    async function poll() {
      try {
        const res = await fetch("/api/overview?since=" + encodeURIComponent(counts.dataset.seq || "-1"),
                                {credentials: "same-origin", headers: {"Accept": "application/json"}});
        if (res.status === 401) { window.location.reload(); return; }
        if (res.ok) update(await res.json());
      } catch (e) { /* the next poll tries again */ }
      setTimeout(poll, period);
    }
    setTimeout(poll, period);
  }
})();
