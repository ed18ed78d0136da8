// Small behaviours that need no server round trip. The pages work without this file.
"use strict";

// Grad-CAM overlay: the opacity slider and the on/off toggle act on the image in place, and the
// viewer's links (other slices, windows, methods) and the address then carry the new settings,
// so they survive the next click. Without this file the server's links carry them.
function applyOverlay() {
  var cam = document.getElementById("cam-image");
  var slider = document.getElementById("opacity");
  var toggle = document.getElementById("cam-toggle");
  if (cam && slider) { cam.style.opacity = slider.value; }
  if (cam && toggle) { cam.hidden = !toggle.checked || !cam.getAttribute("src") || !!cam.dataset.failed; }
  var shown = document.getElementById("opacity-value");
  if (shown && slider) { shown.textContent = Math.round(slider.value * 100) + "%"; }
}

function withView(address, slider, toggle) {
  var url = new URL(address, window.location.href);
  url.searchParams.set("opacity", slider.value);
  if (toggle.checked) { url.searchParams.delete("cam"); } else { url.searchParams.set("cam", "off"); }
  return url.pathname + url.search;
}

function keepView() {
  var viewer = document.getElementById("viewer");
  var slider = document.getElementById("opacity");
  var toggle = document.getElementById("cam-toggle");
  if (!viewer || !slider || !toggle) { return; }
  viewer.querySelectorAll("a[data-keeps-view]").forEach(function (link) {
    link.setAttribute("href", withView(link.getAttribute("href"), slider, toggle));
    if (link.hasAttribute("hx-get")) {
      link.setAttribute("hx-get", withView(link.getAttribute("hx-get"), slider, toggle));
      // htmx reads hx-get when it processes a link. The links alone: processing the viewer
      // would start #cam-info's request again while its first one is under way.
      if (window.htmx) { window.htmx.process(link); }
    }
  });
  window.history.replaceState(window.history.state, "", withView(window.location.href, slider, toggle));
}

document.addEventListener("input", function (event) {
  if (event.target.id === "opacity") { applyOverlay(); }
});

document.addEventListener("change", function (event) {
  var target = event.target;
  if (target.id === "cam-toggle") { applyOverlay(); }
  if (target.id === "opacity" || target.id === "cam-toggle") { keepView(); }
  if (target.id === "files") { showChosen(target.files); }
});

// The heat map arrives out of band with the fragment that made it: give it the current settings
// once htmx has settled it (settling puts back the attributes the server sent).
document.addEventListener("htmx:afterSettle", applyOverlay);

// An overlay that fails to load says so under the slice, with a retry, instead of a broken image.
document.addEventListener("error", function (event) {
  var image = event.target;
  if (!image || image.id !== "cam-image") { return; }
  image.dataset.failed = "true";
  image.hidden = true;
  var info = document.getElementById("cam-info");
  if (info) {
    showProblem(info, "the heat map image did not load; the server may be busy, or the result was deleted.");
  }
}, true);  // error events do not bubble; they reach the document while capturing

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

// A request given a limit (hx-request timeout, with data-limit-s to say it) that ran past it.
document.addEventListener("htmx:timeout", function (event) {
  var limit = event.detail.elt.getAttribute("data-limit-s");
  showProblem(event.detail.elt, "no answer from the server within " + (limit ? limit + " s" : "the time allowed") +
    "; it may be busy.");
});

// Upload: once sent, the form says a prediction is under way and its button cannot be pressed
// again (a second press would upload the files twice).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.id !== "upload-form" || event.defaultPrevented) { return; }
  var button = form.querySelector("button[type=submit]");
  form.setAttribute("aria-busy", "true");
  if (button) { button.disabled = true; button.textContent = "Predicting…"; }
  var status = document.getElementById("upload-status");
  if (status) { status.textContent = "Uploading and predicting: this takes a few seconds a slice."; }
});

// Back to the upload page from the browser's cache: the form is ready again.
window.addEventListener("pageshow", function () {
  var form = document.getElementById("upload-form");
  if (!form || !form.hasAttribute("aria-busy")) { return; }
  form.removeAttribute("aria-busy");
  var button = form.querySelector("button[type=submit]");
  if (button) { button.disabled = false; button.textContent = "Predict"; }
  var status = document.getElementById("upload-status");
  if (status) { status.textContent = ""; }
});
