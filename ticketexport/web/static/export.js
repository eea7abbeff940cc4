// Live export status: one EventSource, the page updated in place, one automatic download.
(function () {
  "use strict";
  var root = document.getElementById("export");
  if (!root || !window.EventSource) { return; }
  var ACTIVE = { queued: true, running: true };
  var autoDownload = root.getAttribute("data-auto-download") === "true";
  var started = root.getAttribute("data-elapsed-from");
  var startedAt = started ? Date.parse(started) : null;
  var zone = root.getAttribute("data-timezone") || "UTC";
  // Counted in the navigation while queued or running, if it is the user's own.
  var counted = root.getAttribute("data-own") === "true" && !!ACTIVE[root.getAttribute("data-status")];
  var last = null;

  function field(name) { return root.querySelector('[data-field="' + name + '"]'); }
  function setText(name, text) { var el = field(name); if (el && el.textContent !== text) { el.textContent = text; } }
  function fmt(n) { return n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"); }
  function known(n) { return n !== null && n !== undefined; }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  var zoneNames = {};
  try { zoneNames = JSON.parse(root.getAttribute("data-zone-names") || "{}"); } catch (e) { zoneNames = {}; }
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  // A moment in the organisation's time zone, to the second, with its offset in minutes.
  function local(date) {
    var parts = {};
    try {
      new Intl.DateTimeFormat("en-US", {
        timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      }).formatToParts(date).forEach(function (p) { parts[p.type] = p.value; });
    } catch (e) {
      var iso = date.toISOString();
      parts = { year: iso.slice(0, 4), month: iso.slice(5, 7), day: iso.slice(8, 10),
        hour: iso.slice(11, 13), minute: iso.slice(14, 16), second: iso.slice(17, 19) };
    }
    var seconds = Math.floor(date.getTime() / 1000) * 1000;
    var wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    parts.offset = Math.round((wall - seconds) / 60000);
    return parts;
  }
  // ISO 8601 with the offset, as the server writes a datetime attribute (2026-06-01T14:03:09+02:00).
  function iso(parts) {
    var offset = Math.abs(parts.offset);
    return parts.year + "-" + parts.month + "-" + parts.day + "T" + parts.hour + ":" + parts.minute +
      ":" + parts.second + (parts.offset < 0 ? "-" : "+") + pad(Math.floor(offset / 60)) + ":" + pad(offset % 60);
  }
  // As people read it, the way the server writes it (6 Dec 2026, 13:06 UTC): the zone's
  // abbreviation comes from the server, which knows names the browser may not.
  function readable(parts) {
    var name = zoneNames[String(parts.offset)];
    if (!name) {
      var offset = Math.abs(parts.offset);
      name = "UTC" + (parts.offset < 0 ? "-" : "+") + pad(Math.floor(offset / 60)) + ":" + pad(offset % 60);
    }
    return (+parts.day) + " " + MONTHS[+parts.month - 1] + " " + parts.year + ", " +
      parts.hour + ":" + parts.minute + " " + name;
  }
  function ago(date) {
    var minutes = Math.floor((Date.now() - date.getTime()) / 60000);
    if (minutes < 1) { return "just now"; }
    return minutes < 60 ? minutes + " min ago" : Math.floor(minutes / 60) + " h ago";
  }
  // Fill a time the first paint did not have, at the moment the page learns of it.
  function fillTime(name, date) {
    var el = field(name);
    if (el && !el.textContent.trim()) {
      var parts = local(date);
      var time = document.createElement("time");
      time.setAttribute("datetime", iso(parts));
      time.textContent = readable(parts);
      var age = document.createElement("span");
      age.className = "ago";
      age.textContent = "(" + ago(date) + ")";
      el.replaceChildren(time, document.createTextNode(" "), age);
    }
  }

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
    // A completed export ran, even if its running state was never seen here.
    if (state.status === "running" || state.status === "completed") {
      fillTime("started", new Date(startedAt || Date.now()));
    }
    if (ACTIVE[state.status]) {
      timing();
    } else {
      setText("eta", "");
      fillTime("finished", new Date());
      setText("finished-label", state.status === "completed" || state.status === "expired" ? "Completed at" : "Finished");
      if (startedAt !== null) {
        setText("elapsed", "Took " + duration((Date.now() - startedAt) / 1000) + ".");
      }
      if (counted && window.ticketexportNav) {
        counted = false;
        window.ticketexportNav.exportFinished();
      }
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

  var ticker = window.setInterval(timing, 1000);
  var source = new EventSource(root.getAttribute("data-events-url"));
  source.addEventListener("export", function (event) {
    var state = JSON.parse(event.data);
    show(state);
    if (!ACTIVE[state.status]) { source.close(); window.clearInterval(ticker); }
  });
})();
