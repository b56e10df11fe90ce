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
  // htmx snapshots the page (innerHTML) before it pushes a URL, and Back puts that HTML back:
  // a drawn plot's style attributes would then break the CSP, and its handlers would be gone.
  // So the snapshot holds undrawn charts, drawn again right after it is taken and on restore.
  function undraw() {
    document.querySelectorAll("[data-figure]").forEach(function (el) {
      if (el.dataset.drawn !== "1") return;
      window.Plotly.purge(el);
      el.textContent = "";
      el.removeAttribute("style");  // set by Plotly through the CSSOM: fine live, not as HTML
      el.classList.remove("js-plotly-plot");
      el.dataset.drawn = "0";
    });
    // Plotly's hidden measuring SVG lives in <body> too; Plotly makes it again when needed.
    var tester = document.getElementById("js-plotly-tester");
    if (tester) tester.remove();
    setTimeout(function () { draw(document); }, 0);
  }
  function start() {
    if (window.htmx) {
      window.htmx.onLoad(draw);
      document.body.addEventListener("htmx:beforeHistorySave", function () {
        if (window.Plotly) undraw();
      });
      document.body.addEventListener("htmx:historyRestore", function () { draw(document); });
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
