// Threshold studio. The figures are the reports' own (ml/evaluate/figures.py, served as Plotly
// JSON by data.json): each is drawn once. A slider move then changes only what a threshold
// changes: the marker on each curve and the line on the score histogram (the parts the figures
// tag with data.moving), the confusion matrix and the table. The server rendered the same table
// for the starting threshold (and computes it for the API); this file only keeps it live. No
// request is made while the slider moves.
//
// The marker and the line are moved by setting their SVG attributes, not by Plotly.restyle or
// relayout: those redraw the whole plot (about 25 ms each in the e2e timing test), this takes
// well under 1 ms. Plotly's own copy of the figure keeps the starting position, so after any
// redraw of its own (resize, zoom, a legend click) the moved parts are put back where they belong.
"use strict";

(function () {
  var root = document.getElementById("studio");
  if (!root || typeof Plotly === "undefined" || !window.ctNumbers) { return; }
  var number = window.ctNumbers.number, interval = window.ctNumbers.interval;
  var Z = 1.959963984540054;  // two-sided 95%
  var slider = document.getElementById("threshold");
  var numberInput = document.getElementById("threshold-number");
  var prevalenceInput = document.getElementById("prevalence");
  var prevalenceProblem = document.getElementById("prevalence-problem");
  var data = null;
  var plots = [];  // one per figure: its element and the parts that move
  var pending = false;
  var started = 0;
  var current = parseFloat(root.dataset.threshold);  // exact (a preset may have more decimals)
  var at = null;  // the rates at `current`, for the markers

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
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  // The deployment prevalence typed, or why it is refused (the server's rule, from the page).
  function prevalence() {
    var raw = prevalenceInput.value.trim();
    if (prevalenceInput.validity.badInput) { raw = "?"; }
    if (raw === "") { return { value: null, problem: null }; }
    var value = Number(raw);
    if (value > 0 && value < 1) { return { value: value, problem: null }; }
    return { value: null, problem: prevalenceProblem.dataset.rule + ", not '" + raw + "'." };
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
      var k = rows[key][0], m = rows[key][1];
      setText("m-" + key, number(ratio(k, m)));
      setText("ci-" + key, interval(wilson(k, m)));
    });
    setText("m-f1", number(ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)));
    var sens = ratio(c.tp, c.tp + c.fn), spec = ratio(c.tn, c.tn + c.fp);
    var prev = prevalence().value;
    if (prev !== null && sens !== null && spec !== null) {
      var tp = sens * prev, fp = (1 - spec) * (1 - prev), tn = spec * (1 - prev), fn = (1 - sens) * prev;
      setText("prevalence-line", "At prevalence " + prev + ": PPV " + number(ratio(tp, tp + fp)) +
        ", NPV " + number(ratio(tn, tn + fn)) + ".");
    } else {
      setText("prevalence-line", "PPV and NPV above are at the data's prevalence, " +
        number(data.prevalence) + ".");
    }
    var changed = 0, stored = data.stored_results;
    for (var i = 0; i < stored.scores.length; i++) {
      if ((stored.scores[i] >= t) !== stored.stroke[i]) { changed++; }
    }
    setText("changed-count", String(changed));
    return { sens: sens, spec: spec, ppv: ratio(c.tp, c.tp + c.fp) };
  }

  // --- the moving parts of the figures ---------------------------------------------------------

  function tagged(items, key) {
    for (var i = 0; i < (items || []).length; i++) {
      if (items[i][key] === data.moving) { return i; }
    }
    return -1;
  }

  // Where each figure's marker stands for the rates at a threshold; the line stands at t.
  var MARKERS = {
    roc: function (r) { return r.spec === null ? [null, null] : [1 - r.spec, r.sens]; },
    pr: function (r) { return [r.sens, r.ppv]; }
  };

  function draw(name, figure) {
    var element = document.getElementById("plot-" + name);
    var plot = {
      element: element, marker: MARKERS[name], parts: null,
      trace: tagged(figure.data, "meta"),
      shape: tagged(figure.layout.shapes, "name"),
      annotation: tagged(figure.layout.annotations, "name")
    };
    plot.drawnAt = plot.annotation >= 0 ? figure.layout.annotations[plot.annotation].x : null;
    var marker = figure.data[plot.trace];
    if (marker && (marker.x[0] === null || marker.y[0] === null)) {
      // Plotly draws nothing for a point without a position, and adding one later would mean a
      // restyle: it is drawn somewhere and hidden at once by move().
      marker.x = [0];
      marker.y = [0];
    }
    plots.push(plot);
    return Plotly.newPlot(element, figure.data, figure.layout, { displaylogo: false, responsive: true })
      .then(function () {
        plot.parts = null;  // looked for before Plotly had drawn them
        ["plotly_afterplot", "plotly_relayout", "plotly_restyle", "plotly_redraw"].forEach(function (event) {
          element.on(event, function () { plot.parts = null; move(plot); });
        });
        move(plot);
      });
  }

  // The SVG elements Plotly drew for the tagged parts, found again after each redraw of its own.
  function parts(plot) {
    if (plot.parts) { return plot.parts; }
    var found = { point: null, line: null, label: null, labelText: null };
    if (plot.trace >= 0) {
      plot.element.querySelectorAll(".scatterlayer .trace").forEach(function (group) {
        var cd = group.__data__;  // d3's binding: the trace's calcdata
        if (cd && cd[0] && cd[0].trace && cd[0].trace.index === plot.trace) {
          found.point = group.querySelector("path.point");
        }
      });
    }
    if (plot.shape >= 0) {
      found.line = plot.element.querySelector('.shapelayer path[data-index="' + plot.shape + '"]');
    }
    if (plot.annotation >= 0) {
      found.label = plot.element.querySelector('g.annotation[data-index="' + plot.annotation + '"]');
      found.labelText = found.label && found.label.querySelector("text");
    }
    plot.parts = found;
    return found;
  }

  // Each part is set to where it belongs from the axes alone, never moved from where it is: a
  // part may be set twice after one redraw (Plotly sends more than one event).
  function move(plot) {
    if (!at) { return; }
    var layout = plot.element._fullLayout;
    if (!layout) { return; }
    var xa = layout.xaxis, ya = layout.yaxis, found = parts(plot);
    if (plot.marker) {
      var xy = plot.marker(at);
      var known = xy[0] !== null && xy[1] !== null;
      if (found.point) {  // absent while its trace is hidden from the legend
        found.point.style.display = known ? "" : "none";
        if (known) { found.point.setAttribute("transform", "translate(" + xa.c2p(xy[0]) + "," + ya.c2p(xy[1]) + ")"); }
      }
    }
    if (found.line) {  // a vertical line: "M x,y0 L x,y1" in the figure's pixels
      var x = xa._offset + xa.l2p(current);
      found.line.setAttribute("d", found.line.getAttribute("d").replace(/([ML])[-\d.e]+,/g, "$1" + x + ","));
    }
    if (found.label) {  // Plotly placed it at drawnAt
      found.label.setAttribute("transform", "translate(" + (xa.l2p(current) - xa.l2p(plot.drawnAt)) + ",0)");
      found.labelText.textContent = found.labelText.textContent.replace(/[-\d.]+$/, number(current));
    }
  }

  // --- the slider, the prevalence and the presets ---------------------------------------------

  function replaceUrl(name, value) {
    var url = new URL(window.location.href);
    if (value === null) { url.searchParams.delete(name); } else { url.searchParams.set(name, value); }
    window.history.replaceState(null, "", url);
  }

  function redraw() {
    pending = false;
    var t = current;
    at = table(t);
    plots.forEach(move);
    replaceUrl("threshold", String(t));
    setText("redraw-ms", String(Math.round(performance.now() - started)));
    root.dataset.drawn = String(t);
  }

  function onThreshold(exact) {
    current = (typeof exact === "number") ? exact : parseFloat(slider.value);
    var t = current;
    numberInput.value = number(t);
    setText("shown-threshold", number(t));
    var save = document.getElementById("save-threshold");  // absent for a read-only role
    if (save) { save.value = String(t); }
    document.getElementById("changed-link").href = root.dataset.changedUrl + "&threshold=" + String(t);
    started = performance.now();
    if (!pending && data) { pending = true; window.requestAnimationFrame(redraw); }
  }

  // Applied while typing when valid; refused with the reason once the field is left.
  function onPrevalence(event) {
    var typed = prevalence();
    if (typed.problem && event.type === "input") { return; }
    prevalenceProblem.textContent = typed.problem || "";
    prevalenceProblem.hidden = !typed.problem;
    if (typed.problem) { prevalenceInput.setAttribute("aria-invalid", "true"); }
    else { prevalenceInput.removeAttribute("aria-invalid"); }
    var kept = typed.value === null ? null : String(typed.value);
    replaceUrl("prevalence", kept);
    document.querySelectorAll("a.level, a.source").forEach(function (link) {
      var url = new URL(link.href);
      if (kept === null) { url.searchParams.delete("prevalence"); } else { url.searchParams.set("prevalence", kept); }
      link.href = url.toString();
    });
    if (data) { table(current); }
  }

  slider.addEventListener("input", function () { onThreshold(); });
  numberInput.addEventListener("change", function () {
    var t = Math.min(1, Math.max(0, parseFloat(numberInput.value) || 0));
    slider.value = number(t);
    onThreshold(t);
  });
  prevalenceInput.addEventListener("input", onPrevalence);
  prevalenceInput.addEventListener("change", onPrevalence);
  document.querySelectorAll("a.preset").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      var exact = parseFloat(link.dataset.threshold);
      slider.value = number(exact);
      onThreshold(exact);
      slider.focus();
    });
  });

  fetch(root.dataset.url, { headers: { Accept: "application/json" } })
    .then(function (response) { return response.json(); })
    .then(function (json) {
      data = json;
      data.prevalence = data.labels.reduce(function (a, b) { return a + b; }, 0) / data.labels.length;
      started = performance.now();
      at = table(current);
      return Promise.all(Object.keys(data.figures).map(function (name) {
        return draw(name, data.figures[name]);
      }));
    })
    .then(function () {
      root.dataset.drawn = String(current);
      root.dataset.ready = "true";
      setText("redraw-ms", String(Math.round(performance.now() - started)));
    });
})();
