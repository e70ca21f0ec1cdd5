// The reconciliation workbench's keys (docs/console.md, "Keyboard"); every action is also a plain
// form, so the pages work without this script. Outside a field: j / k or the arrow keys move
// between the rows of the page's list (a candidate's tick box, else the row's link, takes the
// focus); Space ticks a candidate (the browser's own); Enter on a candidate matches the ticked;
// u and r go to the undo and resolve forms' reason (type it, Enter sends); n / p open the next /
// previous open item.
"use strict";
(function () {
  var current = -1;

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("main [data-keys=rows] [data-row]"));
  }

  function target(row) {
    return row.querySelector("input[type=checkbox]") || row.querySelector("a, button");
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var focused = all.findIndex(function (row) { return row.contains(document.activeElement); });
    var from = focused >= 0 ? focused : current;
    current = Math.min(all.length - 1, Math.max(0, from + step));
    all.forEach(function (row, i) { row.classList.toggle("current", i === current); });
    var control = target(all[current]);
    if (control) { control.focus(); }
  }

  function inField(element) {
    var tag = (element.tagName || "").toLowerCase();
    return tag === "select" || tag === "textarea" || (tag === "input" && element.type !== "checkbox");
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || inField(event.target)) { return; }
    var key = event.key;
    if (key === "j" || key === "ArrowDown") { event.preventDefault(); move(1); return; }
    if (key === "k" || key === "ArrowUp") { event.preventDefault(); move(-1); return; }
    if (key === "Enter" && event.target.name === "pick") {
      var button = document.getElementById("match-button");
      if (button) { event.preventDefault(); event.target.form.requestSubmit(button); }
      return;
    }
    var field = { u: "[data-key=u]", r: "[data-key=r]" }[key];
    if (field && document.querySelector(field)) {
      event.preventDefault();
      document.querySelector(field).focus();
      return;
    }
    var link = { n: "a[data-key=n]", p: "a[data-key=p]" }[key];
    if (link && document.querySelector(link)) {
      event.preventDefault();
      window.location.assign(document.querySelector(link).href);
    }
  });
}());
