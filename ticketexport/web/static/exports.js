// My exports: rows still moving update live. A browser allows only six connections per
// host over HTTP/1.1, so at most MAX_STREAMS event streams are open at once (the rest
// wait their turn) and links on the page keep working.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var MAX_STREAMS = 3;
  var waiting = Array.prototype.slice.call(document.querySelectorAll("tr[data-events-url]"));
  var open = 0;

  function fmt(n) { return Number(n).toLocaleString("en-US"); }

  function watch(row) {
    open += 1;
    var source = new EventSource(row.getAttribute("data-events-url"));
    source.addEventListener("export", function (event) {
      var state = JSON.parse(event.data);
      var badge = row.querySelector('[data-field="status"]');
      if (badge) { badge.textContent = state.status; badge.className = "badge badge-" + state.status; }
      var cell = row.querySelector('[data-field="rows"]');
      if (cell) { cell.textContent = fmt(state.rows) + (state.total !== null ? " / " + fmt(state.total) : ""); }
      var link = row.querySelector('[data-field="download"]');
      if (link && state.download_url) {
        var a = document.createElement("a");
        a.href = state.download_url;
        a.textContent = "Download";
        link.replaceChildren(a);
      }
      if (state.status !== "queued" && state.status !== "running") {
        if (row.getAttribute("data-own") === "true" && window.ticketexportNav) {
          row.setAttribute("data-own", "false");
          window.ticketexportNav.exportFinished();
        }
        done();
      }
    });
    // A stream the server refused (signed out, gone) frees its place for the next row.
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) { done(); }
    });
    var finished = false;
    function done() {
      if (finished) { return; }
      finished = true;
      source.close();
      open -= 1;
      next();
    }
  }

  function next() {
    while (open < MAX_STREAMS && waiting.length) { watch(waiting.shift()); }
  }
  next();
})();
