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
// A part of a page that refreshes itself: an element with data-refresh-url (a fragment of the same
// origin, rendered and escaped by the server) and data-refresh-s gets the fragment again every N
// seconds. Without script the page reloads itself (<noscript> meta refresh) or by its reload link.
function refreshEvery(part) {
  var seconds = Math.max(2, parseInt(part.dataset.refreshS, 10) || 10);
  function again() {
    fetch(part.dataset.refreshUrl, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (answer) {
        if (answer.redirected) { window.location.assign(answer.url); }   // the session ended: sign in again
        if (answer.redirected || !answer.ok) { throw new Error("refresh: " + answer.status); }
        return answer.text();
      })
      .then(function (html) { part.innerHTML = html; part.dataset.refreshed = String(Date.now()); })
      .catch(function () { part.dataset.refreshFailed = "1"; })
      .then(function () { window.setTimeout(again, seconds * 1000); });
  }
  window.setTimeout(again, seconds * 1000);
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-refresh-url]").forEach(refreshEvery);
});
