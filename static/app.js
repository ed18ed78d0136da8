// Small behaviours that need no server round trip. The pages work without this file.
"use strict";

// Grad-CAM overlay: the opacity slider and the on/off toggle act on the image in place.
document.addEventListener("input", function (event) {
  var target = event.target;
  if (target.id === "opacity") {
    var cam = document.getElementById("cam-image");
    if (cam) { cam.style.opacity = target.value; }
    var shown = document.getElementById("opacity-value");
    if (shown) { shown.textContent = Math.round(target.value * 100) + "%"; }
  }
});

document.addEventListener("change", function (event) {
  var target = event.target;
  if (target.id === "cam-toggle") {
    var cam = document.getElementById("cam-image");
    if (cam) { cam.hidden = !target.checked; }
  }
  if (target.id === "files") { showChosen(target.files); }
});

// Upload: dropping files anywhere on the drop zone fills the file input.
function showChosen(files) {
  var chosen = document.getElementById("chosen");
  if (!chosen) { return; }
  var names = Array.prototype.map.call(files, function (f) { return f.name; });
  chosen.textContent = names.length ? names.length + " chosen: " + names.join(", ") : "";
}

document.addEventListener("dragover", function (event) {
  var zone = event.target.closest && event.target.closest("#dropzone");
  if (zone) { event.preventDefault(); zone.classList.add("over"); }
});

document.addEventListener("dragleave", function (event) {
  var zone = event.target.closest && event.target.closest("#dropzone");
  if (zone) { zone.classList.remove("over"); }
});

document.addEventListener("drop", function (event) {
  var zone = event.target.closest && event.target.closest("#dropzone");
  if (!zone) { return; }
  event.preventDefault();
  zone.classList.remove("over");
  var input = document.getElementById("files");
  input.files = event.dataTransfer.files;
  showChosen(input.files);
});

// A refused or failed htmx request says why, next to what the reader acted on, instead of
// leaving the page as it was (htmx swaps nothing for an error status). The message is the
// server's own: the error page's `.problem` paragraph, or the API's error message.
function problemText(xhr) {
  var body = xhr.responseText || "";
  if (body.charAt(0) === "{") {
    try { return JSON.parse(body).error.message; } catch (ignored) { return ""; }
  }
  var page = new DOMParser().parseFromString(body, "text/html");
  var problem = page.querySelector(".problem");
  return problem ? problem.textContent.trim() : "";
}

function showProblem(element, message) {
  var camInfo = element.closest && element.closest("#cam-info");
  if (camInfo) {
    camInfo.textContent = "";
    var line = document.createElement("p");
    line.className = "problem";
    line.setAttribute("role", "alert");
    line.textContent = "No heat map: " + message + " ";
    var retry = document.createElement("a");
    retry.href = window.location.href;
    retry.textContent = "Retry";
    line.appendChild(retry);
    camInfo.appendChild(line);
    return;
  }
  var place = (element.closest && element.closest("section, form")) || document.getElementById("main");
  var shown = place.querySelector(":scope > .htmx-problem");
  if (!shown) {
    shown = document.createElement("p");
    shown.className = "problem htmx-problem";
    shown.setAttribute("role", "alert");
    place.insertBefore(shown, place.firstChild);
  }
  shown.textContent = message;
}

document.addEventListener("htmx:responseError", function (event) {
  var xhr = event.detail.xhr;
  showProblem(event.detail.elt, problemText(xhr) || "the server answered " + xhr.status + ".");
});

document.addEventListener("htmx:sendError", function (event) {
  showProblem(event.detail.elt, "the server could not be reached; nothing was changed.");
});

// A form with data-confirm asks before it is sent, and tells the server it was asked
// (confirmed=yes); without this file the server asks on a page of its own.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.dataset || !form.dataset.confirm) { return; }
  if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
  var field = form.querySelector("input[name=confirmed]");
  if (!field) {
    field = document.createElement("input");
    field.type = "hidden";
    field.name = "confirmed";
    form.appendChild(field);
  }
  field.value = "yes";
});
