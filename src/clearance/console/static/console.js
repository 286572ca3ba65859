// The console's live parts, written for it (no library): countdowns, the builder's previews,
// the campaign page's approval progress, and the CEL check as you type. Text only (textContent):
// nothing a server or a user wrote is ever parsed as HTML here.
"use strict";

(function () {
  const csrf = document.body.dataset.csrf || "";

  function post(url, data) {
    return fetch(url, {
      method: "POST",
      body: data,
      headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      credentials: "same-origin",
    }).then((r) => {
      if (r.status === 413) return { too_large: true, error: "the file is too large: nothing is saved" };
      return r.json();
    });
  }

  function debounce(fn, ms) {
    let t = null;
    return function () {
      clearTimeout(t);
      t = setTimeout(fn, ms);
    };
  }

  function span(seconds) {
    const s = Math.abs(Math.round(seconds));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + r + "s";
    return r + "s";
  }

  // countdowns to ClearanceRequiredBy (server clock offset corrected on the campaign page)
  let offset = 0;
  function tick() {
    document.querySelectorAll(".countdown[data-deadline]").forEach((el) => {
      const left = (Number(el.dataset.deadline) - (Date.now() + offset)) / 1000;
      el.textContent = left > 0 ? "in " + span(left) : "passed";
      el.classList.toggle("soon", left > 0 && left < 300);
    });
  }
  setInterval(tick, 1000);
  tick();

  // the Campaign Builder
  const builder = document.getElementById("builder");
  if (builder) {
    const out = document.getElementById("crb-preview");
    const preview = debounce(() => {
      const data = new FormData();
      ["execute_at", "clearance_lead", "other_channel"].forEach((n) => {
        const el = builder.elements.namedItem(n);
        if (el) data.append(n, el.value);
      });
      builder.querySelectorAll("input[name=channel]:checked").forEach((el) => data.append("channel", el.value));
      post("/console/campaigns/deadline", data).then((r) => {
        if (r.error) {
          out.textContent = r.error;
          out.className = "field-error";
        } else {
          out.textContent = r.clearance_required_by + " " + r.zone +
            (r.past ? " (already past: the campaign would be refused)" : " (in " + span(r.seconds_from_now) + ")");
          out.className = r.past ? "field-error" : "";
        }
      }).catch(() => { out.textContent = "could not compute"; });
    }, 250);
    builder.addEventListener("input", (e) => { if (e.target.name !== "target_file") preview(); });
    builder.addEventListener("change", (e) => { if (e.target.name !== "target_file") preview(); });
    preview();
    const file = document.getElementById("target_file");
    const box = document.getElementById("target-preview");
    file.addEventListener("change", () => {
      box.textContent = "checking…";
      if (!file.files.length) { box.textContent = ""; return; }
      const data = new FormData();
      data.append("target_file", file.files[0]);
      post("/console/campaigns/preview", data).then((r) => {
        box.textContent = "";
        if (r.too_large || typeof r.rows !== "number") {
          const p = document.createElement("p");
          p.id = "target-summary";
          p.className = "field-error";
          p.textContent = r.error || r.message || "could not check the file";
          box.appendChild(p);
          return;
        }
        const p = document.createElement("p");
        p.id = "target-summary";
        p.textContent = (r.kind ? r.kind + ": " : "") + r.rows + " rows" +
          (r.error_count ? ", " + r.error_count + " invalid (nothing is saved until they are fixed)" : ", all valid");
        box.appendChild(p);
        const ul = document.createElement("ul");
        ul.className = "errors";
        (r.errors || []).forEach((e) => { const li = document.createElement("li"); li.textContent = e; ul.appendChild(li); });
        box.appendChild(ul);
      }).catch(() => { box.textContent = "could not check the file"; });
    });
  }

  // the campaign page: live counts, progress and projection
  const live = document.getElementById("live");
  if (live) {
    const id = live.dataset.campaign;
    const moving = ["scheduled", "awaiting_clearance", "cleared", "executing"];
    const set = (elId, text) => { const el = document.getElementById(elId); if (el) el.textContent = text; };
    const words = {
      at_risk: (p) => "At risk: at the rate so far the listener reviews " + p.projected_reviewed + " of " + p.target + " by ClearanceRequiredBy.",
      on_track: () => "On track: at the rate so far the listener finishes before ClearanceRequiredBy.",
      done: () => "Every customer reviewed.",
      waiting: () => "Waiting for the listener's first answers.",
      frozen: () => "Approvals frozen.",
    };
    function poll() {
      fetch("/console/campaigns/" + id + "/live", { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then((r) => r.json())
        .then((s) => {
          offset = s.now_ms - Date.now();
          ["target", "approved", "sent", "excluded", "undelivered"].forEach((k) => set("count-" + k, String(s.counts[k])));
          const bar = document.getElementById("approval-progress");
          if (bar) { bar.max = Math.max(1, s.counts.target); bar.value = s.counts.approved; }
          set("approval-text", s.counts.approved + " of " + s.counts.target + " approved" +
            (s.reviewed != null ? ", " + s.reviewed + " reviewed" : ""));
          const pr = document.getElementById("projection");
          if (pr && s.projection) { pr.textContent = words[s.projection.status](s.projection); pr.className = "projection " + s.projection.status; }
          if (s.state !== live.dataset.state) { window.location.reload(); return; }
          if (moving.includes(s.state)) setTimeout(poll, 1000);
        })
        .catch(() => setTimeout(poll, 3000));
    }
    if (moving.includes(live.dataset.state)) setTimeout(poll, 1000);
  }

  // triggered campaigns: the condition compiled as you type
  const condition = document.getElementById("condition");
  if (condition) {
    const shown = document.getElementById("error-condition");
    condition.addEventListener("input", debounce(() => {
      const data = new FormData();
      data.append("condition", condition.value);
      post("/console/triggered/check", data).then((r) => {
        shown.textContent = r.ok ? "" : r.error;
        condition.setAttribute("aria-invalid", r.ok ? "false" : "true");
      });
    }, 250));
  }
})();
