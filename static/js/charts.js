// Draws every [data-figure] element from the JSON script next to it. Runs on htmx.onLoad,
// so charts inside swapped partials are drawn too. No figure data ever goes through |safe.
(function () {
  function draw(root) {
    if (!window.Plotly) return;
    root.querySelectorAll("[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.dataset.figure);
      if (!source || el.dataset.drawn === "1") return;
      var fig = JSON.parse(source.textContent);
      window.Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false });
      el.dataset.drawn = "1";
    });
  }
  function start() {
    if (window.htmx) {
      window.htmx.onLoad(draw);
    } else {
      draw(document);
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
