// Ask before the buttons that stop machines or throw work away.
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

// Keep a console tail scrolled to its end unless the reader scrolled up.
document.addEventListener("htmx:beforeSwap", function (event) {
  var box = event.detail.target;
  if (box && box.classList && box.classList.contains("console")) {
    box.dataset.stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 24 ? "1" : "";
  }
});
document.addEventListener("htmx:afterSwap", function (event) {
  var box = event.detail.target;
  if (box && box.classList && box.classList.contains("console") && box.dataset.stick !== "") {
    box.scrollTop = box.scrollHeight;
  }
});
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".console").forEach(function (box) { box.scrollTop = box.scrollHeight; });
});

// A filter that submits itself when its value changes (no inline handler: the
// Content-Security-Policy allows scripts from static files only).
document.addEventListener("change", function (event) {
  if (event.target.matches && event.target.matches("[data-autosubmit]")) {
    event.target.form.submit();
  }
});

// Polling pauses while the tab is hidden. hx-trigger's "[!document.hidden]"
// filter would need eval, which the policy forbids, so it is done here.
document.addEventListener("htmx:beforeRequest", function (event) {
  var trigger = event.detail.elt.getAttribute("hx-trigger") || "";
  if (document.hidden && trigger.indexOf("every ") === 0) {
    event.preventDefault();
  }
});
