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
