// Progressive enhancement only: every page works without it. "/" jumps to the page's first input
// field (outside a field); the answer of a form is not sent twice by a double press of its button.
"use strict";
document.addEventListener("keydown", function (event) {
  var tag = (event.target.tagName || "").toLowerCase();
  if (event.key !== "/" || tag === "input" || tag === "select" || tag === "textarea") { return; }
  var field = document.querySelector("main input:not([type=hidden]), main select");
  if (field) { event.preventDefault(); field.focus(); }
});
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
});
