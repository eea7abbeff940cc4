// The navigation's count of the user's queued and running exports, kept live by the pages
// that watch exports: each tells it when one of the user's own exports has finished.
(function () {
  "use strict";
  function exportFinished() {
    var link = document.getElementById("nav-exports");
    if (!link) { return; }
    var running = Math.max(0, Number(link.getAttribute("data-running") || 0) - 1);
    link.setAttribute("data-running", String(running));
    var count = link.querySelector(".nav-count");
    if (running === 0) {
      if (count) { count.remove(); }
    } else if (count) {
      count.textContent = "(" + running + ")";
    }
  }
  window.ticketexportNav = { exportFinished: exportFinished };
})();
