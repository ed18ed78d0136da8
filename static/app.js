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
