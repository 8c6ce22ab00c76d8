/* The plotly figures of the course's pages, drawn once the page (and its one plotly.js) has loaded:
   .elm-figure holds a figure; .elm-static-app every precomputed state of an app (elm_lite/static_apps.py),
   and plotly sliders and buttons under its figure pick one state. */
(function () {
  "use strict";

  function layoutFor(spec, state, active) {
    var base = spec.layouts[state.layout], controls = spec.controls_layout, layout = Object.assign({}, base);
    var bottom = base.margin && base.margin.b !== undefined ? base.margin.b : 80;
    layout.height = (base.height || 450) + spec.extra_height;
    layout.margin = Object.assign({}, base.margin, {b: bottom + spec.extra_height});
    layout.annotations = (base.annotations || []).concat(controls.annotations);
    ["sliders", "updatemenus"].forEach(function (kind) {
      layout[kind] = controls[kind].map(function (c) {
        var i = spec.controls.findIndex(function (k) { return k[1] === c.name; });
        return Object.assign({}, c, {active: active[i]});
      });
    });
    return layout;
  }

  /* The stored setting nearest to `active` that keeps control `changed` where the reader put it
     (a grid need not hold every combination, e.g. notebook 04's). */
  function nearest(spec, active, changed) {
    if (spec.states[active.join(",")]) return active;
    var best = null, bestCost = Infinity;
    Object.keys(spec.states).forEach(function (key) {
      var idx = key.split(",").map(Number);
      if (idx[changed] !== active[changed]) return;
      var cost = idx.reduce(function (sum, v, i) { return sum + Math.abs(v - active[i]); }, 0);
      if (cost < bestCost) { best = idx; bestCost = cost; }
    });
    return best;
  }

  /* Figures and states travel as gzip-compressed, base64-encoded JSON (elm_lite/static_apps.py). */
  function load(root) {
    var text = atob(root.querySelector("script.elm-packed").textContent.trim());
    var bytes = Uint8Array.from(text, function (c) { return c.charCodeAt(0); });
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).json();
  }

  function start(root, spec) {
    var gd = root.querySelector(".elm-static-figure"), readout = root.querySelector(".elm-static-readout");
    var active = spec.initial.slice(), pending = false;

    function draw() {
      pending = false;
      var state = spec.states[active.join(",")];
      readout.innerHTML = state.readout;
      return Plotly.react(gd, state.data, layoutFor(spec, state, active), {displaylogo: false});
    }
    function changed(i, value) {
      if (i < 0 || active[i] === value) return;
      var wanted = active.slice();
      wanted[i] = value;
      active = nearest(spec, wanted, i) || active;   // no stored state there: the controls go back
      if (!pending) { pending = true; window.setTimeout(draw, 0); }
    }
    draw().then(function () {
      gd.on("plotly_sliderchange", function (e) {
        changed(spec.controls.findIndex(function (k) { return k[1] === e.slider.name; }), e.slider.active);
      });
      gd.on("plotly_buttonclicked", function (e) {
        changed(spec.controls.findIndex(function (k) { return k[1] === e.menu.name; }), e.active);
      });
      root.classList.add("elm-static-ready");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".elm-figure").forEach(function (root) {
      load(root).then(function (figure) {
        var gd = root.appendChild(document.createElement("div"));
        figure.config = Object.assign({displaylogo: false}, figure.config);
        return Plotly.newPlot(gd, figure);
      }).then(function () { root.classList.add("elm-figure-ready"); });
    });
    document.querySelectorAll(".elm-static-app").forEach(function (root) {
      load(root).then(function (spec) { start(root, spec); });
    });
  });
})();
