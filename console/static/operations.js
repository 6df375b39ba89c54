// slawatch console, incidents and maintenance: response deadlines count down, and the maintenance form says the
// notice verdict as it is filled in. Progressive: without it the pages show the same at load and on preview.
"use strict";
(function () {
  // The same as reporter.maintenance.format_duration: '72h', '3h 15m', '12m 5s', '8d 4h'.
  function span(seconds) {
    let s = Math.round(Math.abs(seconds));
    let days = 0;
    if (s >= 100 * 3600) { days = Math.floor(s / 86400); s %= 86400; }
    const hours = Math.floor(s / 3600); s %= 3600;
    const minutes = Math.floor(s / 60); const secs = s % 60;
    let parts;
    if (days) parts = [days + "d", hours ? hours + "h" : ""];
    else if (hours) parts = [hours + "h", minutes ? minutes + "m" : ""];
    else if (minutes) parts = [minutes + "m", secs ? secs + "s" : ""];
    else parts = [secs + "s"];
    return parts.filter(Boolean).join(" ");
  }

  const countdowns = document.querySelectorAll(".countdown[data-deadline-ms]");
  function tick() {
    const now = Date.now();
    countdowns.forEach(function (el) {
      const left = (Number(el.dataset.deadlineMs) - now) / 1000;
      el.textContent = left >= 0 ? "due in " + span(left) : "overdue by " + span(-left);
      el.classList.toggle("late", left < 0);
      const row = el.closest("tr");
      if (row) row.classList.toggle("late", left < 0);
    });
  }
  if (countdowns.length) setInterval(tick, 1000);

  const form = document.getElementById("mw-form");
  if (!form) return;
  const verdict = document.getElementById("mw-verdict");
  const preview = document.getElementById("mw-preview");
  const save = document.getElementById("mw-save");
  let timer = null;
  let asked = 0;

  async function check() {
    const fields = ["scope", "value", "start", "end", "announced", "reason"];
    const query = new URLSearchParams();
    fields.forEach(function (name) { query.set(name, form.elements[name].value); });
    const mine = ++asked;
    try {
      const res = await fetch("/api/maintenance/notice?" + query.toString(),
                              {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (!res.ok || mine !== asked) return;
      const doc = await res.json();
      preview.classList.toggle("ok", doc.ok === true);
      preview.classList.toggle("late", doc.ok === false);
      if (doc.ok === null) {
        verdict.textContent = "Still to fill in: " + doc.problems.join("; ");
        save.hidden = true;
      } else {
        verdict.textContent = doc.text;
        save.hidden = false;
      }
    } catch (e) { /* the preview button still asks the server */ }
  }

  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 250);
  });
  form.addEventListener("change", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 50);
  });
})();
