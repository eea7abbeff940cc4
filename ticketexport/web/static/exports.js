// My exports: rows still moving update live, one EventSource per active row.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var rows = document.querySelectorAll("tr[data-events-url]");
  Array.prototype.forEach.call(rows, function (row) {
    var source = new EventSource(row.getAttribute("data-events-url"));
    source.addEventListener("export", function (event) {
      var state = JSON.parse(event.data);
      var badge = row.querySelector('[data-field="status"]');
      if (badge) { badge.textContent = state.status; badge.className = "badge badge-" + state.status; }
      var cell = row.querySelector('[data-field="rows"]');
      if (cell) {
        cell.textContent = Number(state.rows).toLocaleString("en-US") +
          (state.total !== null ? " / " + Number(state.total).toLocaleString("en-US") : "");
      }
      if (state.status !== "queued" && state.status !== "running") { source.close(); }
    });
  });
})();
