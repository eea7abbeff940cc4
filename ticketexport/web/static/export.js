// Live export status: one EventSource, the page updated in place, one automatic download.
(function () {
  "use strict";
  var root = document.getElementById("export");
  if (!root || !window.EventSource) { return; }
  var ACTIVE = { queued: true, running: true };
  var autoDownload = root.getAttribute("data-auto-download") === "true";
  var started = root.getAttribute("data-elapsed-from");
  var startedAt = started ? Date.parse(started) : null;

  function field(name) { return root.querySelector('[data-field="' + name + '"]'); }
  function setText(name, text) { var el = field(name); if (el) { el.textContent = text; } }
  function fmt(n) { return n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"); }
  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m > 0 ? m + " min " + s + " s" : s + " s";
  }

  function show(state) {
    root.setAttribute("data-status", state.status);
    var badge = field("status");
    if (badge) { badge.textContent = state.status; badge.className = "badge badge-" + state.status; }
    setText("stage", state.stage || "");
    setText("attempt", String(state.attempt));
    var bar = field("bar");
    var progress = root.querySelector('[role="progressbar"]');
    if (state.percent !== null && state.percent !== undefined) {
      if (bar) { bar.style.width = state.percent + "%"; }
      if (progress) { progress.setAttribute("aria-valuenow", String(state.percent)); }
    }
    var text = (state.percent !== null && state.percent !== undefined ? state.percent + "% · " : "") +
      fmt(state.rows) + (state.total !== null && state.total !== undefined ? " of " + fmt(state.total) : "") + " rows";
    setText("announce", text);
    if (state.status === "running" && startedAt === null) { startedAt = Date.now(); }
    if (startedAt !== null && ACTIVE[state.status]) {
      var elapsed = (Date.now() - startedAt) / 1000;
      setText("elapsed", "Elapsed " + duration(elapsed) + ".");
      if (state.percent > 0 && state.percent < 100) {
        setText("eta", "About " + duration(elapsed * (100 - state.percent) / state.percent) + " left.");
      }
    } else if (!ACTIVE[state.status]) {
      setText("eta", "");
    }
    if (state.error) { setText("error", state.error.message); }
    var sections = root.querySelectorAll("[data-when]");
    for (var i = 0; i < sections.length; i++) {
      var when = sections[i].getAttribute("data-when").split(" ");
      sections[i].hidden = when.indexOf(state.status) < 0;
    }
    if (state.status === "completed" && autoDownload && state.download_url) {
      autoDownload = false;
      // The server records the automatic download; a second tab gets 204 and nothing happens.
      window.location.assign(state.download_url + "?auto=1");
    }
  }

  var source = new EventSource(root.getAttribute("data-events-url"));
  source.addEventListener("export", function (event) {
    var state = JSON.parse(event.data);
    show(state);
    if (!ACTIVE[state.status]) { source.close(); }
  });
})();
