// How a figure is written on the pages, for the scripts that rewrite one in place (the threshold
// studio's table as its slider moves): the browser's copy of ml/evaluate/numbers.py.
// tests/e2e/test_studio.py checks that both write the same text for the same values.
"use strict";

window.ctNumbers = (function () {
  // 0.123 for a number, "n/a" for a missing or undefined one (null, NaN); never "-0.000".
  // toFixed rounds an exact half away from zero where Python rounds it to the even digit
  // (0.0625 -> 0.062, as 1/16 is exact in binary), so exact halves are found and rounded so.
  // Numbers from 1e21 up are written in exponent form by toFixed; no rate comes near them.
  function number(value, digits) {
    if (value === null || value === undefined) { return "n/a"; }
    var x = Number(value), places = digits === undefined ? 3 : digits;
    if (!isFinite(x)) { return "n/a"; }
    var text = x.toFixed(places);
    var exact = Math.abs(x).toFixed(100);  // the binary value's own decimal digits
    var cut = exact.indexOf(".") + (places ? places + 1 : 0);
    if (/^\.?50*$/.test(exact.slice(cut)) && Number(exact.charAt(cut - 1)) % 2 === 0) {
      text = (x < 0 ? "-" : "") + exact.slice(0, cut);
    }
    return (text.charAt(0) === "-" && Number(text) === 0) ? text.slice(1) : text;
  }

  // "0.520–0.760" for a [low, high] pair, "n/a" for a missing one.
  function interval(pair, digits) {
    if (!pair || !pair.length) { return "n/a"; }
    return number(pair[0], digits) + "–" + number(pair[1], digits);
  }

  return { number: number, interval: interval };
})();
