// Live export status: one EventSource, the page updated in place, one automatic download.
(function () {
  "use strict";
  var root = document.getElementById("export");
  if (!root || !window.EventSource) { return; }
  var ACTIVE = { queued: true, running: true };
  var autoDownload = root.getAttribute("data-auto-download") === "true";
  var started = root.getAttribute("data-elapsed-from");
  var startedAt = started ? Date.parse(started) : null;
  var last = null;

  function field(name) { return root.querySelector('[data-field="' + name + '"]'); }
  function setText(name, text) { var el = field(name); if (el && el.textContent !== text) { el.textContent = text; } }
  function fmt(n) { return n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"); }
  function known(n) { return n !== null && n !== undefined; }
  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m > 0 ? m + " min " + s + " s" : s + " s";
  }

  function timing() {
    if (!last || !ACTIVE[last.status] || startedAt === null) { return; }
    var elapsed = (Date.now() - startedAt) / 1000;
    setText("elapsed", "Elapsed " + duration(elapsed) + ".");
    if (last.status === "running" && last.percent > 0 && last.percent < 100) {
      setText("eta", "About " + duration(elapsed * (100 - last.percent) / last.percent) + " left.");
    } else {
      setText("eta", "");
    }
  }

  function show(state) {
    last = state;
    root.setAttribute("data-status", state.status);
    var badge = field("status");
    if (badge) { badge.textContent = state.status; badge.className = "badge badge-" + state.status; }
    setText("stage", state.stage || "");
    setText("attempt", String(state.attempt));
    var bar = field("bar");
    if (bar) {
      if (known(state.percent)) { bar.value = state.percent; bar.textContent = state.percent + "%"; }
      else { bar.removeAttribute("value"); }
    }
    setText("announce", (known(state.percent) ? state.percent + "% · " : "") +
      fmt(state.rows) + (known(state.total) ? " of " + fmt(state.total) : "") + " rows");
    if (state.status === "running" && startedAt === null) { startedAt = Date.now(); }
    if (ACTIVE[state.status]) { timing(); } else { setText("eta", ""); }
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

  var ticker = window.setInterval(timing, 1000);
  var source = new EventSource(root.getAttribute("data-events-url"));
  source.addEventListener("export", function (event) {
    var state = JSON.parse(event.data);
    show(state);
    if (!ACTIVE[state.status]) { source.close(); window.clearInterval(ticker); }
  });
})();
