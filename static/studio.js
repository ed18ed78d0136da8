// Threshold studio: redraws every figure from the out-of-fold arrays, in the browser, as the
// slider moves. The server rendered the same table for the starting threshold (and computes it
// for the API); this file only keeps it live. No request is made while the slider moves.
"use strict";

(function () {
  var root = document.getElementById("studio");
  if (!root || typeof Plotly === "undefined") { return; }
  var Z = 1.959963984540054;  // two-sided 95%
  var slider = document.getElementById("threshold");
  var number = document.getElementById("threshold-number");
  var prevalenceInput = document.getElementById("prevalence");
  var data = null;
  var pending = false;
  var started = 0;
  var current = parseFloat(root.dataset.threshold);  // exact (a preset may have more decimals)

  function fmt(x, digits) {
    if (x === null || x === undefined || isNaN(x)) { return "n/a"; }
    var text = x.toFixed(digits === undefined ? 3 : digits);
    return (parseFloat(text) === 0 && text.charAt(0) === "-") ? text.slice(1) : text;
  }

  function ratio(k, n) { return n ? k / n : null; }

  // Wilson score interval, as ml.metrics.wilson_ci computes it.
  function wilson(k, n) {
    if (!n) { return null; }
    var p = k / n, z2 = Z * Z, den = 1 + z2 / n;
    var centre = (p + z2 / (2 * n)) / den;
    var half = Z * Math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den;
    return [k === 0 ? 0 : Math.max(0, centre - half), k === n ? 1 : Math.min(1, centre + half)];
  }

  function counts(t) {
    var c = { tp: 0, fp: 0, tn: 0, fn: 0 };
    for (var i = 0; i < data.scores.length; i++) {
      var called = data.scores[i] >= t, truth = data.labels[i] === 1;
      if (called && truth) { c.tp++; } else if (called) { c.fp++; }
      else if (truth) { c.fn++; } else { c.tn++; }
    }
    return c;
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }

  function table(t) {
    var c = counts(t);
    var n = c.tp + c.fp + c.tn + c.fn;
    var rows = {
      sensitivity: [c.tp, c.tp + c.fn], specificity: [c.tn, c.tn + c.fp],
      ppv: [c.tp, c.tp + c.fp], npv: [c.tn, c.tn + c.fn], accuracy: [c.tp + c.tn, n]
    };
    ["tp", "fp", "tn", "fn"].forEach(function (k) { setText("cm-" + k, String(c[k])); });
    Object.keys(rows).forEach(function (key) {
      var k = rows[key][0], m = rows[key][1], ci = wilson(k, m);
      setText("m-" + key, fmt(ratio(k, m)));
      setText("ci-" + key, ci ? fmt(ci[0]) + "–" + fmt(ci[1]) : "n/a");
    });
    setText("m-f1", fmt(ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)));
    var sens = ratio(c.tp, c.tp + c.fn), spec = ratio(c.tn, c.tn + c.fp);
    var prev = parseFloat(prevalenceInput.value);
    if (prev > 0 && prev < 1 && sens !== null && spec !== null) {
      var tp = sens * prev, fp = (1 - spec) * (1 - prev), tn = spec * (1 - prev), fn = (1 - sens) * prev;
      setText("prevalence-line", "At prevalence " + prev + ": PPV " + fmt(ratio(tp, tp + fp)) +
        ", NPV " + fmt(ratio(tn, tn + fn)) + ".");
    } else {
      var dataPrev = data.labels.reduce(function (a, b) { return a + b; }, 0) / data.labels.length;
      setText("prevalence-line", "PPV and NPV above are at the data's prevalence, " + fmt(dataPrev) + ".");
    }
    var changed = 0, stored = data.stored_results;
    for (var i = 0; i < stored.scores.length; i++) {
      if ((stored.scores[i] >= t) !== stored.stroke[i]) { changed++; }
    }
    setText("changed-count", String(changed));
    return { sens: sens, spec: spec, ppv: ratio(c.tp, c.tp + c.fp) };
  }

  function band(curve, name) {
    return [
      { x: curve.band.grid, y: curve.band.low, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false },
      { x: curve.band.grid, y: curve.band.high, mode: "lines", line: { width: 0 }, fill: "tonexty",
        fillcolor: "rgba(11,92,173,0.15)", name: "95% band (patients resampled)", hoverinfo: "skip" }
    ];
  }

  var layout = function (title, x, y) {
    return { title: { text: title }, margin: { l: 50, r: 10, t: 40, b: 70 }, height: 320,
             xaxis: { title: { text: x }, range: [0, 1] }, yaxis: { title: { text: y }, range: [0, 1.02] },
             legend: { orientation: "h", y: -0.25 } };
  };
  var config = { displaylogo: false, responsive: true };

  function firstDraw(t, at) {
    var roc = data.curves.roc, pr = data.curves.pr;
    Plotly.newPlot("plot-roc", band(roc).concat([
      { x: roc.fpr, y: roc.tpr, mode: "lines", name: "ROC, AUC " + fmt(roc.auc) },
      { x: [1 - at.spec], y: [at.sens], mode: "markers", marker: { size: 12, color: "#b00020" }, name: "threshold" }
    ]), layout("ROC (out-of-fold)", "1 − specificity", "sensitivity"), config);
    Plotly.newPlot("plot-pr", band(pr).concat([
      { x: pr.recall, y: pr.precision, mode: "lines", name: "PR, AP " + fmt(pr.auc) },
      { x: [at.sens], y: [at.ppv], mode: "markers", marker: { size: 12, color: "#b00020" }, name: "threshold" }
    ]), layout("Precision-recall (out-of-fold)", "recall (sensitivity)", "precision (PPV)"), config);
    var normal = [], stroke = [];
    data.scores.forEach(function (s, i) { (data.labels[i] === 1 ? stroke : normal).push(s); });
    var histLayout = layout("Scores by true class", "score", "share");
    histLayout.yaxis = { title: { text: "share of class" } };
    histLayout.barmode = "overlay";
    histLayout.shapes = [{ type: "line", x0: t, x1: t, y0: 0, y1: 1, yref: "paper", line: { color: "#b00020", width: 2 } }];
    Plotly.newPlot("plot-hist", [
      { x: normal, type: "histogram", histnorm: "probability", name: "Normal", opacity: 0.6, xbins: { start: 0, end: 1, size: 0.02 } },
      { x: stroke, type: "histogram", histnorm: "probability", name: "Stroke", opacity: 0.6, xbins: { start: 0, end: 1, size: 0.02 } }
    ], histLayout, config);
  }

  function redraw() {
    pending = false;
    var t = current;
    var at = table(t);
    Plotly.restyle("plot-roc", { x: [[at.spec === null ? null : 1 - at.spec]], y: [[at.sens]] }, [3]);
    Plotly.restyle("plot-pr", { x: [[at.sens]], y: [[at.ppv]] }, [3]);
    Plotly.relayout("plot-hist", { "shapes[0].x0": t, "shapes[0].x1": t });
    setText("redraw-ms", String(Math.round(performance.now() - started)));
    root.dataset.drawn = String(t);
  }

  function onThreshold(exact) {
    current = (typeof exact === "number") ? exact : parseFloat(slider.value);
    var t = current;
    number.value = t.toFixed(3);
    setText("shown-threshold", t.toFixed(3));
    var save = document.getElementById("save-threshold");  // absent for a read-only role
    if (save) { save.value = String(t); }
    var link = document.getElementById("changed-link");
    link.href = root.dataset.changedUrl + "&threshold=" + String(t);
    var url = new URL(window.location.href);
    url.searchParams.set("threshold", String(t));
    window.history.replaceState(null, "", url);
    started = performance.now();
    if (!pending) { pending = true; window.requestAnimationFrame(redraw); }
  }

  slider.addEventListener("input", function () { onThreshold(); });
  number.addEventListener("change", function () {
    var t = Math.min(1, Math.max(0, parseFloat(number.value) || 0));
    slider.value = t.toFixed(3);
    onThreshold(t);
  });
  prevalenceInput.addEventListener("input", function () { table(current); });
  document.querySelectorAll("a.preset").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      var exact = parseFloat(link.dataset.threshold);
      slider.value = exact.toFixed(3);
      onThreshold(exact);
      slider.focus();
    });
  });

  fetch(root.dataset.url, { headers: { Accept: "application/json" } })
    .then(function (response) { return response.json(); })
    .then(function (json) {
      data = json;
      var t = current;
      started = performance.now();
      firstDraw(t, table(t));
      root.dataset.ready = "true";
      setText("redraw-ms", String(Math.round(performance.now() - started)));
    });
})();
