/* prefsmith report: renders the embedded JSON. All text goes through textContent. */
(function () {
  "use strict";

  var D;
  var PAGE_SIZE = 50;
  var state = {
    scorer: null, group: "", mmin: null, mmax: null, correct: "all", trunc: "all", q: "",
    sortKey: "i", sortDir: 1, page: 0, selected: null
  };
  var view = [];        // filtered, sorted row indices
  var searchText = [];  // lower-cased search text per row, built lazily

  function h(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, k) || attrs[k] == null) continue;
        if (k === "text") node.textContent = String(attrs[k]);
        else if (k === "cls") node.className = attrs[k];
        else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
        else node.setAttribute(k, attrs[k]);
      }
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c == null) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  function $(id) { return document.getElementById(id); }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function fmt(x, d) {
    if (x == null || !isFinite(x)) return "–";
    d = d == null ? 3 : d;
    return (x > 0 ? "+" : x < 0 ? "−" : "") + Math.abs(x).toFixed(d);
  }
  function plain(x, d) { return x == null || !isFinite(x) ? "–" : x.toFixed(d == null ? 3 : d); }
  function pct(x) { return x == null ? "–" : (100 * x).toFixed(1); }
  function isPairs() { return D.kind !== "candidates"; }

  function margin(row) {
    if (state.scorer && row.ms && row.ms[state.scorer] != null) return row.ms[state.scorer];
    return row.m;
  }
  function reward(row, name) {
    for (var i = 0; i < row.r.length; i++) if (row.r[i].n === name) return row.r[i].rw;
    return null;
  }
  function tokenCount(row) {
    var n = 0, any = false;
    row.r.forEach(function (r) {
      if (r.nt) { n += r.nt[0]; any = true; } else if (r.t) { n += r.t.length; any = true; }
    });
    return any ? n : null;
  }
  function groupLabel(row) {
    return D.groups.map(function (g) { return row.g[g]; }).filter(function (v) { return v != null; }).join(" · ");
  }
  function rowText(i) {
    if (searchText[i] == null) {
      var row = D.rows[i];
      var parts = [row.id, groupLabel(row)];
      row.p.forEach(function (m) { parts.push(m[1]); });
      row.r.forEach(function (r) { parts.push(r.x != null ? r.x : (r.t || []).join("")); });
      searchText[i] = parts.join("\n").toLowerCase();
    }
    return searchText[i];
  }

  // ------------------------------------------------------------------ header, overview

  function renderHeadline() {
    var hd = $("headline");
    hd.appendChild(h("b", { text: D.source || "(rows)" }));
    var shown = D.rows.length === D.total_rows ? D.rows.length + " rows"
      : D.rows.length + " of " + D.total_rows + " rows (first " + D.rows.length + " shown)";
    hd.appendChild(document.createTextNode("  ·  " + D.kind + "  ·  " + shown + "  ·  " + D.generated));
  }

  function statBox(value, key, id) {
    return h("div", { cls: "stat" }, h("div", { cls: "v", id: id, text: value }), h("div", { cls: "k", text: key }));
  }

  function renderOverview() {
    var ov = $("overview");
    var stats = h("div", { cls: "stats" });
    stats.appendChild(statBox("", "rows shown (filtered)", "st-rows"));
    // K-wise rows: the margin is the worst correct minus the best incorrect reward, so
    // "margin > 0" means every correct completion beats every incorrect one.
    var accKey = D.kwise ? "all correct above all incorrect" : "accuracy (margin > 0)";
    var meanKey = D.kwise ? "mean margin (worst correct − best incorrect)" : "mean margin";
    stats.appendChild(statBox("", isPairs() ? accKey : "rows with ≥ 2 rewards", "st-acc"));
    stats.appendChild(statBox("", isPairs() ? meanKey : "mean spread", "st-mean"));
    stats.appendChild(statBox("", "truncated rows", "st-trunc"));
    var tokens = D.tokens ? "per-token log-probs saved" : "no per-token log-probs";
    ov.appendChild(h("div", { cls: "card", id: "summary" }, h("h2", { text: "Summary" }), stats,
      h("p", { cls: "note", text: (D.eval ? "margins of the scorer chosen below" : "reduction: " + D.reduction) + " · " + tokens })));
    var hist = h("div", { cls: "card" },
      h("h2", { text: (isPairs() ? "Margin" : "Reward spread") + " distribution (filtered rows)" }),
      h("div", { id: "hist" }),
      h("div", { cls: "legend-row" },
        h("span", null, h("span", { cls: "sw", style: "background:#4c8bc9" }), isPairs() ? "margin > 0 (correct)" : "spread"),
        isPairs() ? h("span", null, h("span", { cls: "sw", style: "background:#e06666" }), "margin ≤ 0 (incorrect)") : null,
        h("span", { text: "click a bar to filter" })));
    ov.appendChild(hist);
    if (D.eval) ov.appendChild(evalCard());
    else ov.appendChild(groupCard());
  }

  function accCell(x) {
    var td = h("td", null);
    if (x == null) { td.textContent = "–"; return td; }
    var a = Math.max(0, Math.min(1, (x - 0.5) * 2));
    var b = Math.max(0, Math.min(1, (0.5 - x) * 2));
    var bg = x >= 0.5 ? "rgba(47,158,68," + (0.08 + 0.45 * a) + ")" : "rgba(224,49,49," + (0.08 + 0.45 * b) + ")";
    td.appendChild(h("span", { cls: "acc", style: "background:" + bg, text: pct(x) }));
    return td;
  }

  function evalCard() {
    var E = D.eval;
    var t = h("table", { cls: "grid" });
    var head = h("tr", null, h("th", { text: "section" }));
    E.scorers.forEach(function (s) { head.appendChild(h("th", { text: s })); });
    t.appendChild(h("thead", null, head));
    var body = h("tbody");
    E.sections.forEach(function (sec) {
      var tr = h("tr", { cls: sec[0] === "Overall" ? "overall" : null }, h("td", { text: sec[0] }));
      sec[1].forEach(function (v) { tr.appendChild(accCell(v)); });
      body.appendChild(tr);
    });
    t.appendChild(body);
    return h("div", { cls: "card" }, h("h2", { text: "Accuracy by section (%)" }), t);
  }

  function groupCard() {
    // Per-group counts and accuracy of the loaded rows (pairs), or a note.
    var g = D.groups[0];
    var card = h("div", { cls: "card" }, h("h2", { text: g ? "By " + g : "Rows" }));
    if (!g) {
      card.appendChild(h("p", { cls: "muted", text: "No subset or domain field in these rows." }));
      return card;
    }
    var agg = {};
    D.rows.forEach(function (row) {
      var k = row.g[g] == null ? "(none)" : row.g[g];
      var a = agg[k] || (agg[k] = { n: 0, ok: 0, m: 0, nm: 0 });
      a.n++;
      var m = margin(row);
      if (m != null) { a.nm++; a.m += m; if (m > 0) a.ok++; }
    });
    var t = h("table", { cls: "grid" });
    t.appendChild(h("thead", null, h("tr", null, h("th", { text: g }), h("th", { text: "rows" }),
      h("th", { text: isPairs() ? "accuracy" : "" }), h("th", { text: isPairs() ? "mean margin" : "mean spread" }))));
    var body = h("tbody");
    Object.keys(agg).sort().slice(0, 40).forEach(function (k) {
      var a = agg[k];
      var tr = h("tr", null, h("td", { text: k }), h("td", { text: String(a.n) }));
      tr.appendChild(isPairs() && a.nm ? accCell(a.ok / a.nm) : h("td", { text: "" }));
      tr.appendChild(h("td", { text: a.nm ? fmt(a.m / a.nm, 2) : "–" }));
      body.appendChild(tr);
    });
    t.appendChild(body);
    card.appendChild(h("div", { cls: "scrollbox" }, t));
    if (Object.keys(agg).length > 40) card.appendChild(h("p", { cls: "note", text: "(first 40 of " + Object.keys(agg).length + ")" }));
    return card;
  }

  function kvTable(pairs) {
    var t = h("table", { cls: "kv" });
    pairs.forEach(function (p) { t.appendChild(h("tr", null, h("td", { text: p[0] }), h("td", { text: p[1] }))); });
    return t;
  }

  function renderExtras() {
    var ex = $("extras");
    if (D.settings.length || D.notes.length) {
      var groups = h("div", { cls: "kv-groups" });
      if (D.notes.length) {
        var ul = h("ul", { cls: "notes" });
        D.notes.forEach(function (n) { ul.appendChild(h("li", { text: n })); });
        groups.appendChild(h("div", null, h("h3", { text: "notes" }), ul));
      }
      D.settings.forEach(function (sec) { groups.appendChild(h("div", null, h("h3", { text: sec[0] }), kvTable(sec[1]))); });
      ex.appendChild(h("details", { cls: "card", id: "settings" }, h("summary", { text: "Run settings and notes (models, reduction, templates by hash, domains)" }), groups));
    }
    if (D.eval && (D.eval.subsets.length || D.eval.plots.length)) {
      var det = h("details", { cls: "card", id: "eval-details" }, h("summary", { text: "Subsets and plots of the evaluation" }));
      var t = h("table", { cls: "grid" });
      var head = h("tr", null, h("th", { text: "subset" }), h("th", { cls: "l", text: "section" }), h("th", { text: "pairs" }));
      D.eval.scorers.forEach(function (s) { head.appendChild(h("th", { text: s })); });
      t.appendChild(h("thead", null, head));
      var body = h("tbody");
      D.eval.subsets.forEach(function (s) {
        var tr = h("tr", null, h("td", { text: s[0] }), h("td", { cls: "l", text: s[1] }), h("td", { text: s[2] == null ? "" : String(s[2]) }));
        s[3].forEach(function (v) { tr.appendChild(accCell(v)); });
        body.appendChild(tr);
      });
      t.appendChild(body);
      det.appendChild(t);
      (D.eval.matrices || []).forEach(function (m) { det.appendChild(matrixTable(m)); });
      var plots = h("div", { cls: "plots" });
      D.eval.plots.forEach(function (p) {
        var img = h("img", { alt: p[0] });
        img.src = p[1];
        plots.appendChild(h("figure", null, img, h("figcaption", { text: p[0] })));
      });
      det.appendChild(plots);
      ex.appendChild(det);
    }
  }

  function matrixTable(m) {
    // RM-Bench: share of prompts where the chosen style (row) beats the rejected style (column).
    var t = h("table", { cls: "grid matrix" });
    var head = h("tr", null, h("th", { cls: "l", text: "chosen \\ rejected" }));
    m.styles.forEach(function (s) { head.appendChild(h("th", { text: s })); });
    t.appendChild(h("thead", null, head));
    var body = h("tbody");
    m.matrix.forEach(function (line, i) {
      var tr = h("tr", null, h("td", { cls: "l", text: m.styles[i] }));
      line.forEach(function (v) { tr.appendChild(accCell(v)); });
      body.appendChild(tr);
    });
    t.appendChild(body);
    var levels = m.levels.map(function (l) { return l[0] + " " + pct(l[1]); }).join(" · ");
    return h("div", { cls: "matrix-card" },
      h("h3", { text: "RM-Bench " + m.domain + " (" + m.prompts + " prompts) · " + m.scorer }),
      h("p", { cls: "note", text: levels + " (hard: upper triangle, chosen plainer than rejected; normal: diagonal; easy: lower triangle)" }), t);
  }

  // ------------------------------------------------------------------ filters

  function renderFilters() {
    var f = $("filters");
    if (D.scorers.length > 1) {
      var sel = h("select", { id: "f-scorer", onchange: function () { state.scorer = this.value; update(true); } });
      D.scorers.forEach(function (s) { sel.appendChild(h("option", { value: s, text: s })); });
      f.appendChild(h("label", null, "scorer", sel));
    }
    if (D.groups.length) {
      var gs = h("select", { id: "f-group", onchange: function () { state.group = this.value; update(true); } });
      gs.appendChild(h("option", { value: "", text: "all" }));
      D.groups.forEach(function (g) {
        var values = {};
        D.rows.forEach(function (row) { if (row.g[g] != null) values[row.g[g]] = (values[row.g[g]] || 0) + 1; });
        var og = h("optgroup", { label: g });
        Object.keys(values).sort().forEach(function (v) {
          og.appendChild(h("option", { value: g + "\u0000" + v, text: v + " (" + values[v] + ")" }));
        });
        gs.appendChild(og);
      });
      f.appendChild(h("label", null, D.groups.join("/"), gs));
    }
    var lo = h("input", { type: "number", step: "any", id: "f-mmin", placeholder: "min" });
    var hi = h("input", { type: "number", step: "any", id: "f-mmax", placeholder: "max" });
    function onRange() {
      state.mmin = lo.value === "" ? null : parseFloat(lo.value);
      state.mmax = hi.value === "" ? null : parseFloat(hi.value);
      update(true);
    }
    lo.addEventListener("input", onRange);
    hi.addEventListener("input", onRange);
    f.appendChild(h("label", null, isPairs() ? "margin" : "spread", lo, "to", hi));
    if (isPairs()) {
      var cs = h("select", { id: "f-correct", onchange: function () { state.correct = this.value; update(true); } },
        h("option", { value: "all", text: "all" }), h("option", { value: "correct", text: "correct" }),
        h("option", { value: "incorrect", text: "incorrect" }));
      f.appendChild(h("label", null, "pairs", cs));
    }
    var ts = h("select", { id: "f-trunc", onchange: function () { state.trunc = this.value; update(true); } },
      h("option", { value: "all", text: "all" }), h("option", { value: "yes", text: "truncated" }),
      h("option", { value: "no", text: "not truncated" }));
    f.appendChild(h("label", null, "truncation", ts));
    var q = h("input", { type: "search", id: "f-q", placeholder: "search text / id" });
    var timer = null;
    q.addEventListener("input", function () {
      clearTimeout(timer);
      var v = this.value;
      timer = setTimeout(function () { state.q = v.trim().toLowerCase(); update(true); }, 150);
    });
    f.appendChild(q);
    f.appendChild(h("button", { type: "button", text: "reset", onclick: resetFilters }));
  }

  function resetFilters() {
    state.group = ""; state.mmin = state.mmax = null; state.correct = "all"; state.trunc = "all"; state.q = "";
    ["f-group", "f-correct", "f-trunc"].forEach(function (id) { var e = $(id); if (e) e.selectedIndex = 0; });
    ["f-mmin", "f-mmax", "f-q"].forEach(function (id) { var e = $(id); if (e) e.value = ""; });
    update(true);
  }

  function setRange(lo, hi) {
    state.mmin = lo; state.mmax = hi;
    $("f-mmin").value = lo.toPrecision(4);
    $("f-mmax").value = hi.toPrecision(4);
    update(true);
  }

  function passes(row, i) {
    var m = margin(row);
    if (state.group) {
      var parts = state.group.split("\u0000");
      if (row.g[parts[0]] !== parts[1]) return false;
    }
    if (state.mmin != null && !isNaN(state.mmin) && !(m != null && m >= state.mmin)) return false;
    if (state.mmax != null && !isNaN(state.mmax) && !(m != null && m <= state.mmax)) return false;
    if (state.correct === "correct" && !(m != null && m > 0)) return false;
    if (state.correct === "incorrect" && !(m != null && m <= 0)) return false;
    if (state.trunc === "yes" && !row.tr) return false;
    if (state.trunc === "no" && row.tr) return false;
    if (state.q && rowText(i).indexOf(state.q) < 0) return false;
    return true;
  }

  // ------------------------------------------------------------------ table

  function columns() {
    var cols = [{ key: "i", label: "#", num: true, get: function (r) { return r.i; } },
      { key: "id", label: "id", get: function (r) { return r.id; } }];
    if (D.groups.length) cols.push({ key: "grp", label: D.groups.join(" · "), get: groupLabel });
    if (isPairs()) {
      cols.push({ key: "m", label: "margin", num: true, get: margin });
      if (D.rows.some(function (r) { return reward(r, "chosen") != null; })) {
        cols.push({ key: "rc", label: "r(chosen)", num: true, get: function (r) { return reward(r, "chosen"); } });
        cols.push({ key: "rr", label: "r(rejected)", num: true, get: function (r) { return reward(r, "rejected"); } });
      }
    } else {
      cols.push({ key: "n", label: "responses", num: true, get: function (r) { return r.r.length; } });
      cols.push({ key: "best", label: "best reward", num: true, get: function (r) {
        var v = r.r.map(function (x) { return x.rw; }).filter(function (x) { return x != null; });
        return v.length ? Math.max.apply(null, v) : null; } });
      cols.push({ key: "m", label: "spread", num: true, get: margin });
    }
    if (D.rows.some(function (r) { return tokenCount(r) != null; })) cols.push({ key: "tok", label: "len", num: true, title: "strong-model tokens of the responses", get: tokenCount });
    cols.push({ key: "fl", label: "flags", get: function (r) { return (r.tr ? 1 : 0) + (isPairs() && margin(r) != null && margin(r) <= 0 ? 2 : 0); } });
    return cols;
  }
  var COLS;

  function sortView() {
    var col = COLS.filter(function (c) { return c.key === state.sortKey; })[0] || COLS[0];
    var dir = state.sortDir;
    var keyed = view.map(function (i) { return [col.get(D.rows[i]), i]; });
    keyed.sort(function (a, b) {
      var x = a[0], y = b[0];
      if (x == null && y == null) return a[1] - b[1];
      if (x == null) return 1;
      if (y == null) return -1;
      if (x < y) return -dir;
      if (x > y) return dir;
      return a[1] - b[1];
    });
    view = keyed.map(function (k) { return k[1]; });
  }

  function renderHead() {
    var tr = h("tr");
    COLS.forEach(function (c) {
      var arrow = c.key === state.sortKey ? (state.sortDir > 0 ? " ▲" : " ▼") : "";
      tr.appendChild(h("th", {
        cls: c.num ? "num" : null, title: (c.title ? c.title + "; " : "") + "sort by " + c.label,
        onclick: function () {
          if (state.sortKey === c.key) state.sortDir = -state.sortDir;
          else { state.sortKey = c.key; state.sortDir = c.num && c.key !== "i" ? -1 : 1; }
          update(false);
        }
      }, c.label, h("span", { cls: "arrow", text: arrow })));
    });
    clear(document.querySelector("#rows thead")).appendChild(tr);
  }

  var maxAbsMargin = 1;

  function renderBody() {
    var tbody = clear(document.querySelector("#rows tbody"));
    var start = state.page * PAGE_SIZE;
    var slice = view.slice(start, start + PAGE_SIZE);
    slice.forEach(function (i) {
      var row = D.rows[i];
      var tr = h("tr", { cls: "row" + (state.selected === i ? " sel" : ""), "data-i": String(i) });
      tr.addEventListener("click", function () { select(i); });
      COLS.forEach(function (c) {
        var v = c.get(row);
        var td = h("td", { cls: (c.num ? "num " : "") + (c.key === "id" ? "id" : c.key === "grp" ? "grp" : "") });
        if (c.key === "fl") {
          if (isPairs() && margin(row) != null) td.appendChild(h("span", { cls: "tag " + (margin(row) > 0 ? "ok" : "bad"), text: margin(row) > 0 ? "✓" : "✗" }));
          if (row.tr) td.appendChild(h("span", { cls: "tag tr", text: "✂", title: "truncated to fit the maximum length" }));
        } else if (c.key === "m") {
          td.textContent = fmt(v, 3);
          if (v != null) {
            var w = Math.max(1, Math.round(26 * Math.min(1, Math.abs(v) / maxAbsMargin)));
            td.appendChild(h("span", { cls: "mbar", style: "width:" + w + "px;background:" + (v > 0 ? "#4c8bc9" : "#e06666") }));
          }
        } else if (c.key === "rc" || c.key === "rr" || c.key === "best") {
          td.textContent = fmt(v, 3);
        } else {
          td.textContent = v == null ? "–" : String(v);
          if (c.key === "id" || c.key === "grp") td.title = String(v);
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    var pages = Math.max(1, Math.ceil(view.length / PAGE_SIZE));
    var pager = clear($("pager"));
    var from = view.length ? start + 1 : 0, to = Math.min(view.length, start + PAGE_SIZE);
    pager.appendChild(h("span", { cls: "count", id: "count", "data-filtered": String(view.length), "data-rendered": String(slice.length),
      text: "rows " + from + "–" + to + " of " + view.length + (view.length !== D.rows.length ? " (filtered from " + D.rows.length + ")" : "") }));
    pager.appendChild(h("button", { type: "button", text: "«", disabled: state.page === 0 ? "" : null, onclick: function () { state.page = 0; renderBody(); } }));
    pager.appendChild(h("button", { type: "button", text: "‹ prev", disabled: state.page === 0 ? "" : null, onclick: function () { state.page--; renderBody(); } }));
    pager.appendChild(h("span", { text: "page " + (state.page + 1) + " / " + pages }));
    pager.appendChild(h("button", { type: "button", text: "next ›", disabled: state.page >= pages - 1 ? "" : null, onclick: function () { state.page++; renderBody(); } }));
    pager.appendChild(h("button", { type: "button", text: "»", disabled: state.page >= pages - 1 ? "" : null, onclick: function () { state.page = pages - 1; renderBody(); } }));
    document.body.setAttribute("data-rows-rendered", String(slice.length));
    document.body.setAttribute("data-rows-filtered", String(view.length));
  }

  // ------------------------------------------------------------------ histogram, stats

  var SVGNS = "http://www.w3.org/2000/svg";
  function s(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, attrs[k]);
    return node;
  }

  function renderHist() {
    var box = clear($("hist"));
    var ms = [];
    view.forEach(function (i) { var m = margin(D.rows[i]); if (m != null && isFinite(m)) ms.push(m); });
    if (!ms.length) { box.appendChild(h("p", { cls: "muted", text: "No margins in the filtered rows." })); return; }
    var lo = Infinity, hi = -Infinity;
    ms.forEach(function (m) { if (m < lo) lo = m; if (m > hi) hi = m; });
    if (lo === hi) { lo -= 0.5; hi += 0.5; }
    var nb = Math.max(8, Math.min(40, Math.round(Math.sqrt(ms.length) * 2)));
    var width = (hi - lo) / nb;
    var start = isPairs() && lo < 0 && hi > 0 ? Math.floor(lo / width) * width : lo;
    nb = Math.ceil((hi - start) / width) || 1;
    if (start + nb * width <= hi) nb++;
    var counts = [];
    for (var b = 0; b < nb; b++) counts.push(0);
    ms.forEach(function (m) { counts[Math.min(nb - 1, Math.floor((m - start) / width))]++; });
    var W = 600, H = 150, L = 34, R = 8, T = 8, B = 22;
    var maxc = Math.max.apply(null, counts);
    var svg = s("svg", { "class": "hist", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
    var x = function (v) { return L + (v - start) / (nb * width) * (W - L - R); };
    var y = function (c) { return T + (1 - c / maxc) * (H - T - B); };
    svg.appendChild(s("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#cfd4dc" }));
    counts.forEach(function (c, k) {
      var a = start + k * width, bEdge = a + width;
      var mid = a + width / 2;
      var color = !isPairs() ? "#4c8bc9" : mid > 0 ? "#4c8bc9" : "#e06666";
      var rect = s("rect", { "class": "bar", x: x(a) + 0.5, width: Math.max(1, x(bEdge) - x(a) - 1), y: y(c), height: H - B - y(c), fill: color });
      var t = s("title", {});
      t.textContent = "[" + a.toFixed(3) + ", " + bEdge.toFixed(3) + "): " + c + " rows";
      rect.appendChild(t);
      rect.addEventListener("click", function () { setRange(a, bEdge); });
      svg.appendChild(rect);
    });
    if (isPairs() && start < 0 && start + nb * width > 0) {
      svg.appendChild(s("line", { x1: x(0), x2: x(0), y1: T, y2: H - B, stroke: "#1d2330", "stroke-dasharray": "3,3" }));
    }
    var labels = [[start, "start"], [start + nb * width, "end"]];
    if (isPairs() && start < 0 && start + nb * width > 0) labels.push([0, "middle"]);
    labels.forEach(function (lv) {
      var tx = s("text", { x: x(lv[0]), y: H - 6, "text-anchor": lv[1] });
      tx.textContent = lv[0] === 0 ? "0" : lv[0].toFixed(2);
      svg.appendChild(tx);
    });
    var ty = s("text", { x: L - 4, y: T + 8, "text-anchor": "end" });
    ty.textContent = String(maxc);
    svg.appendChild(ty);
    box.appendChild(svg);
  }

  function renderStats() {
    var n = view.length, ok = 0, nm = 0, sum = 0, tr = 0;
    view.forEach(function (i) {
      var row = D.rows[i], m = margin(row);
      if (m != null) { nm++; sum += m; if (m > 0) ok++; }
      if (row.tr) tr++;
    });
    $("st-rows").textContent = String(n);
    $("st-acc").textContent = isPairs() ? (nm ? pct(ok / nm) + "%" : "–") : String(nm);
    $("st-mean").textContent = nm ? fmt(sum / nm, 3) : "–";
    $("st-trunc").textContent = String(tr);
  }

  // ------------------------------------------------------------------ detail

  function decode(b64) {
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }

  function colour(c, scale) {
    var a = Math.min(1, Math.abs(c) / scale);
    a = Math.pow(a, 0.75) * 0.85;
    if (a < 0.02) return "transparent";
    return c > 0 ? "rgba(33,102,172," + a.toFixed(3) + ")" : "rgba(178,24,43," + a.toFixed(3) + ")";
  }

  var SPECIAL = /^<\|?[A-Za-z_][A-Za-z0-9_\-]*\|?>$/;

  function tokenBody(r, vals, scale, info) {
    var body = h("div", { cls: "body" });
    var n = r.t.length;
    var frag = document.createDocumentFragment();
    for (var i = 0; i < n; i++) {
      var piece = r.t[i], sv = vals[2 * i], wv = vals[2 * i + 1], c = sv - wv;
      var span = document.createElement("span");
      var cls = "tok";
      if (piece === "") cls += " empty";
      else if (SPECIAL.test(piece)) cls += " special";
      if (piece === "\n" || piece === "\n\n") { cls += " nl"; span.textContent = "↵" + piece; }
      else span.textContent = piece;
      span.className = cls;
      span.style.background = colour(c, scale);
      if (Math.abs(c) > 0.6 * scale) span.style.color = "#fff";
      var tip = "token " + i + ": " + JSON.stringify(piece) + "\nstrong log p = " + plain(sv, 4) +
        "\nweak log p = " + plain(wv, 4) + (r.sh ? "" : " (weak mass over these characters)") +
        "\ncontribution = " + fmt(c, 4);
      span.title = tip;
      span.setAttribute("data-k", String(i));
      frag.appendChild(span);
    }
    body.appendChild(frag);
    body.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (!t || !t.getAttribute || t.getAttribute("data-k") == null) return;
      var k = +t.getAttribute("data-k");
      var sv = vals[2 * k], wv = vals[2 * k + 1];
      info.textContent = "#" + k + " " + JSON.stringify(r.t[k]) + "   strong " + plain(sv, 3) + "   weak " + plain(wv, 3) + "   contribution " + fmt(sv - wv, 3);
    });
    return body;
  }

  function responseBox(row, r, scale) {
    var side = r.c === true ? "chosen" : r.c === false ? "rejected" : (r.n === "chosen" || r.n === "rejected" ? r.n : "");
    var box = h("div", { cls: "resp " + side });
    var head = h("div", { cls: "rhead" }, h("span", { cls: "rname", text: /^\d+$/.test(r.n) ? "response " + r.n : r.n }),
      r.rw == null ? null : h("span", { cls: "reward", text: "reward " + fmt(r.rw, 4) }));
    if (r.c != null) {  // a K-wise completion: its rank by reward, correct or not
      if (r.rk != null) head.insertBefore(h("span", { cls: "tag neutral", text: "#" + r.rk + " of " + row.r.length }), head.firstChild);
      head.appendChild(h("span", { cls: "tag " + (r.c ? "ok" : "bad"), text: r.c ? "correct" : "incorrect" }));
    }
    if (!isPairs() && r.rw != null && row.r.length > 1) {
      var rewards = row.r.map(function (x) { return x.rw; }).filter(function (x) { return x != null; });
      if (r.rw === Math.max.apply(null, rewards)) head.appendChild(h("span", { cls: "tag ok", text: "best" }));
      else if (r.rw === Math.min.apply(null, rewards)) head.appendChild(h("span", { cls: "tag bad", text: "worst" }));
    }
    if (r.tr) head.appendChild(h("span", { cls: "tag tr", text: "truncated: " + r.tr }));
    if (r.nt) head.appendChild(h("span", { cls: "muted", text: r.nt[0] + " strong / " + r.nt[1] + " weak tokens" }));
    box.appendChild(head);
    if (r.v) {
      var vals = decode(r.v);
      var sub = "Σ contributions = " + fmt(r.sum, 4);
      if (r.div && r.div !== 1) {
        sub += " ÷ " + r.div + (D.reduction === "mean" ? " tokens" : " characters") + " = " + fmt(r.sum / r.div, 4) + " (" + D.reduction + ")";
      }
      if (r.rw != null) {
        var resid = r.rw * (r.div || 1) - r.sum;
        if (Math.abs(resid) > 1e-6) sub += " (reward − Σ = " + resid.toExponential(1) + ": saved log-probs were rounded)";
      }
      head.appendChild(h("span", { cls: "rsub", text: sub }));
      var info = h("div", { cls: "hover-info", text: "hover a token for its log-probs" });
      box.appendChild(tokenBody(r, vals, scale, info));
      box.appendChild(info);
      if (r.note) box.appendChild(h("div", { cls: "note", style: "padding:2px 10px", text: r.note }));
    } else {
      box.appendChild(h("div", { cls: "body", text: r.x == null ? "" : r.x }));
    }
    return box;
  }

  function rowScale(row) {
    var abs = [];
    row.r.forEach(function (r) {
      if (!r.v) return;
      var v = decode(r.v);
      for (var i = 0; i + 1 < v.length; i += 2) abs.push(Math.abs(v[i] - v[i + 1]));
    });
    if (!abs.length) return 1;
    abs.sort(function (a, b) { return a - b; });
    return Math.max(0.25, abs[Math.floor(0.95 * (abs.length - 1))]);
  }

  function renderDetail(i) {
    var pane = clear($("detail"));
    if (i == null) { pane.appendChild(h("p", { cls: "muted", text: "Click a row to see its prompt and responses." })); return; }
    var row = D.rows[i];
    pane.appendChild(h("h3", { text: "Row " + row.i + " · " + row.id }));
    var meta = h("div", { cls: "meta" });
    D.groups.forEach(function (g) { if (row.g[g] != null) meta.appendChild(h("span", { cls: "tag neutral", text: g + ": " + row.g[g] })); });
    var m = margin(row);
    if (m != null) {
      meta.appendChild(h("span", { cls: "tag " + (isPairs() ? (m > 0 ? "ok" : "bad") : "neutral"), text: (isPairs() ? "margin " : "spread ") + fmt(m, 4) + (isPairs() ? (m > 0 ? " · correct" : " · incorrect") : "") }));
    }
    if (row.ms) Object.keys(row.ms).forEach(function (k) {
      if (k !== state.scorer) meta.appendChild(h("span", { cls: "tag neutral", text: k + ": " + fmt(row.ms[k], 3) }));
    });
    if (row.tr) meta.appendChild(h("span", { cls: "tag tr", text: "truncated" }));
    pane.appendChild(meta);
    row.p.forEach(function (msg) {
      var box = h("div", { cls: "msg" }, h("div", { cls: "role", text: msg[0] }), h("div", { cls: "text", text: msg[1] }));
      box.addEventListener("click", function () { box.classList.toggle("open"); });
      box.title = "click to expand or collapse";
      pane.appendChild(box);
    });
    if (!row.p.length) pane.appendChild(h("p", { cls: "muted", text: "(no prompt field)" }));
    var scale = rowScale(row);
    if (row.r.some(function (r) { return r.v; })) {
      pane.appendChild(h("div", { cls: "scale" }, h("span", { text: "−" + scale.toFixed(2) + " nats" }), h("span", { cls: "bar" }),
        h("span", { text: "+" + scale.toFixed(2) + " nats" }),
        h("span", { text: "log p_strong − log p_weak per token: blue, the strong model prefers it; red, the weak one does" })));
      if (row.r.some(function (r) { return r.v && !r.sh; })) {
        pane.appendChild(h("p", { cls: "note", text: "Different tokenizers: the tokens are the strong model's; each token's weak log-prob is the weak model's log-prob mass over the same characters." }));
      }
    } else if (!D.tokens) {
      pane.appendChild(h("p", { cls: "note", text: "No per-token log-probs in this file: score with --save-token-logprobs to colour the responses token by token." }));
    }
    var grid = h("div", { cls: "responses" + (row.r.length === 2 ? " two" : "") });
    row.r.forEach(function (r) { grid.appendChild(responseBox(row, r, scale)); });
    pane.appendChild(grid);
    if (row.f && row.f.length) {
      pane.appendChild(h("details", { cls: "note", open: "" }, h("summary", { text: "other fields" }), kvTable(row.f)));
    }
  }

  function select(i) {
    state.selected = i;
    var rows = document.querySelectorAll("#rows tbody tr");
    for (var k = 0; k < rows.length; k++) rows[k].classList.toggle("sel", +rows[k].getAttribute("data-i") === i);
    renderDetail(i);
    if (history.replaceState) history.replaceState(null, "", "#row=" + i);
  }

  function moveSelection(step) {
    if (!view.length) return;
    var pos = view.indexOf(state.selected);
    pos = Math.max(0, Math.min(view.length - 1, pos < 0 ? 0 : pos + step));
    var page = Math.floor(pos / PAGE_SIZE);
    if (page !== state.page) { state.page = page; renderBody(); }
    select(view[pos]);
    var tr = document.querySelector("#rows tbody tr.sel");
    if (tr && tr.scrollIntoView) tr.scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------------ main

  function update(resetPage) {
    view = [];
    for (var i = 0; i < D.rows.length; i++) if (passes(D.rows[i], i)) view.push(i);
    sortView();
    if (resetPage) state.page = 0;
    maxAbsMargin = 1e-9;
    view.forEach(function (k) { var m = margin(D.rows[k]); if (m != null) maxAbsMargin = Math.max(maxAbsMargin, Math.abs(m)); });
    renderHead();
    renderBody();
    renderHist();
    renderStats();
  }

  function ms(t0) { return String(Math.round(performance.now() - t0)); }

  function main() {
    var t0 = performance.now();
    document.body.setAttribute("data-start-ms", String(Math.round(t0)));
    D = JSON.parse($("report-data").textContent);
    document.body.setAttribute("data-parse-ms", ms(t0));
    state.scorer = D.scorers.length ? D.scorers[0] : null;
    document.title = D.title;
    COLS = columns();
    renderHeadline();
    renderOverview();
    renderExtras();
    renderFilters();
    var t1 = performance.now();
    update(true);
    document.body.setAttribute("data-update-ms", ms(t1));
    var match = /row=(\d+)/.exec(location.hash || "");
    var first = match && +match[1] < D.rows.length ? +match[1] : (view.length ? view[0] : null);
    var t2 = performance.now();
    if (first != null) select(first);
    document.body.setAttribute("data-detail-ms", ms(t2));
    document.addEventListener("keydown", function (ev) {
      var tag = (ev.target && ev.target.tagName) || "";
      if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
      if (ev.key === "ArrowDown" || ev.key === "j") { moveSelection(1); ev.preventDefault(); }
      if (ev.key === "ArrowUp" || ev.key === "k") { moveSelection(-1); ev.preventDefault(); }
    });
    document.body.setAttribute("data-state", "ready");
    document.body.setAttribute("data-load-ms", String(Math.round(performance.now())));
  }

  try {
    main();
  } catch (err) {
    var box = $("error");
    box.hidden = false;
    box.textContent = "The report could not be shown: " + (err && err.stack ? err.stack : err);
    document.body.setAttribute("data-state", "error");
    throw err;
  }
})();
