// View editor: offer only the operators of the chosen field's type, show the matching
// value input, reveal blank condition rows on demand, and reorder columns with buttons.
// Without this script the form still works; the server validates every combination.
"use strict";

(function () {
  function setupCondition(row) {
    var fieldSelect = row.querySelector(".field-select");
    var opSelect = row.querySelector(".op-select");
    var groups = Array.prototype.map.call(opSelect.querySelectorAll("optgroup"), function (g) {
      return g.cloneNode(true);
    });
    var values = row.querySelectorAll(".value");

    function fieldType() {
      var option = fieldSelect.options[fieldSelect.selectedIndex];
      return option ? option.getAttribute("data-type") || "" : "";
    }

    function showValue() {
      var type = fieldType();
      var option = opSelect.options[opSelect.selectedIndex];
      var kind = type && option ? option.getAttribute("data-kind") : "";
      values.forEach(function (span) {
        var match = span.getAttribute("data-kind") === kind &&
          (kind !== "ids" || span.getAttribute("data-type") === type);
        span.hidden = !match;
      });
      opSelect.hidden = !type;
    }

    function filterOperators() {
      var type = fieldType();
      var previous = opSelect.value;
      while (opSelect.firstChild) {
        opSelect.removeChild(opSelect.firstChild);
      }
      groups.forEach(function (group) {
        if (!type || group.getAttribute("data-type") === type) {
          opSelect.appendChild(group.cloneNode(true));
        }
      });
      var keep = Array.prototype.some.call(opSelect.options, function (o) {
        return o.value === previous;
      });
      if (keep) {
        opSelect.value = previous;
      } else if (opSelect.options.length) {
        opSelect.selectedIndex = 0;
      }
      showValue();
    }

    fieldSelect.addEventListener("change", filterOperators);
    opSelect.addEventListener("change", showValue);
    filterOperators();
  }

  function setupGroup(fieldset) {
    var rows = Array.prototype.slice.call(fieldset.querySelectorAll(".condition"));
    var button = fieldset.querySelector(".add-condition");
    var shownBlank = false;
    rows.forEach(function (row) {
      if (row.getAttribute("data-blank") === "1") {
        if (shownBlank) {
          row.hidden = true;
        }
        shownBlank = true;
      }
    });
    function update() {
      button.hidden = !rows.some(function (row) { return row.hidden; });
    }
    button.addEventListener("click", function () {
      var next = rows.find(function (row) { return row.hidden; });
      if (next) {
        next.hidden = false;
        next.querySelector(".field-select").focus();
      }
      update();
    });
    update();
  }

  function setupColumns(list) {
    function renumber() {
      var position = 1;
      list.querySelectorAll("li").forEach(function (item) {
        var box = item.querySelector("input[type=checkbox]");
        var order = item.querySelector(".order-input");
        order.value = box.checked ? String(position++) : "";
      });
    }
    list.querySelectorAll("li").forEach(function (item) {
      var label = item.querySelector("label").textContent.trim();
      [["up", "\u2191", "Move " + label + " up"], ["down", "\u2193", "Move " + label + " down"]]
        .forEach(function (spec) {
          var b = document.createElement("button");
          b.type = "button";
          b.className = "move move-" + spec[0];
          b.textContent = spec[1];
          b.setAttribute("aria-label", spec[2]);
          b.addEventListener("click", function () {
            if (spec[0] === "up" && item.previousElementSibling) {
              list.insertBefore(item, item.previousElementSibling);
            } else if (spec[0] === "down" && item.nextElementSibling) {
              list.insertBefore(item.nextElementSibling, item);
            }
            renumber();
          });
          item.appendChild(b);
        });
      item.querySelector("input[type=checkbox]").addEventListener("change", renumber);
      item.querySelector(".order-input").hidden = true;
    });
    renumber();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".view-editor .condition").forEach(setupCondition);
    document.querySelectorAll(".view-editor .conditions").forEach(setupGroup);
    var columns = document.getElementById("column-list");
    if (columns) {
      setupColumns(columns);
    }
  });
})();
