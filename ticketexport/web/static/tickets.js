// The export button names the chosen format ("Export to CSV", "Export to Excel (.xlsx)"),
// so what the click produces is said on the button itself.
(function () {
  "use strict";
  var select = document.getElementById("export-format");
  var button = document.getElementById("export-button");
  if (!select || !button) { return; }
  function sync() { button.textContent = "Export to " + select.options[select.selectedIndex].text; }
  select.addEventListener("change", sync);
  sync();
})();
