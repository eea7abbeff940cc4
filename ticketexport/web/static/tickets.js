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

// The Schedule… form sends only the fields its cadence uses: the others are disabled (a
// disabled field is not submitted). Without scripts every field is sent, and the server
// names any that does not apply.
(function () {
  "use strict";
  var cadence = document.getElementById("schedule-cadence");
  if (!cadence) { return; }
  var sets = document.querySelectorAll("#schedule-form fieldset[data-cadence]");
  function sync() {
    for (var i = 0; i < sets.length; i++) {
      var kinds = sets[i].getAttribute("data-cadence").split(" ");
      var used = kinds.indexOf(cadence.value) >= 0;
      sets[i].disabled = !used;
      sets[i].hidden = !used;
    }
  }
  cadence.addEventListener("change", sync);
  sync();
})();
