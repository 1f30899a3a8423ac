// Measures the rendered report in the browser and writes what it found, as JSON, into
// <pre id="layout-check"> (read back with chromium --dump-dom):
//   titles:  per figure, the texts that a figure's title block overlaps
//   headers: per ranked-table header, the words that it breaks across lines
// Appended to a copy of report.html by tests/analysis/test_report_layout.py.
(function () {
  function box(el) {
    var r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 ? r : null;
  }
  function overlap(a, b) {
    return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  }
  function titleOverlaps(plot) {
    var title = plot.querySelector('.gtitle');
    var tbox = title && box(title);
    if (!tbox) return [];
    var hits = [];
    plot.querySelectorAll('text').forEach(function (t) {
      if (t === title || title.contains(t)) return;
      var b = box(t);
      if (b && t.textContent.trim() && overlap(tbox, b)) hits.push(t.textContent.trim());
    });
    return hits;
  }
  function brokenWords(th) {
    var broken = [];
    var walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      var re = /[A-Za-z0-9]+/g, m;
      while ((m = re.exec(node.data)) !== null) {
        var range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        var tops = new Set(Array.from(range.getClientRects()).map(function (r) {
          return Math.round(r.top);
        }));
        if (tops.size > 1) broken.push(m[0]);
      }
    }
    return broken;
  }
  function check() {
    var out = {titles: {}, headers: {}, figures: 0};
    document.querySelectorAll('.js-plotly-plot').forEach(function (plot) {
      out.figures += 1;
      out.titles[plot.id] = titleOverlaps(plot);
    });
    document.querySelectorAll('table.sortable th').forEach(function (th) {
      out.headers[th.textContent.trim()] = brokenWords(th);
    });
    var pre = document.createElement('pre');
    pre.id = 'layout-check';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  window.addEventListener('load', function () { setTimeout(check, 1500); });
})();
