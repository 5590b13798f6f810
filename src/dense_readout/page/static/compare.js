"use strict";
// The compare report: every view is drawn from the JSON in #bench-data (no network).
(function () {
  const data = JSON.parse(document.getElementById("bench-data").textContent);
  const methods = Object.keys(data.methods);
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8", "#98df8a"];
  const colour = (name) => palette[methods.indexOf(name) % palette.length];
  const NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, parent, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function fmt(key, value) {
    if (value === null || value === undefined) return "\u2014";
    const percent = ["pointing_game", "energy_pointing_game", "maxboxacc_v2", "loc"].includes(key);
    return percent ? (100 * value).toFixed(1) : value >= 100 ? value.toFixed(0) : value.toFixed(3);
  }

  function table() {
    const node = document.getElementById("scores");
    const head = node.insertRow();
    ["method"].concat(data.columns.map((c) => c[1])).forEach((h) => {
      const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    });
    methods.forEach((name) => {
      const row = node.insertRow();
      row.insertCell().textContent = name;
      data.columns.forEach(([key]) => {
        const cell = row.insertCell();
        const value = data.methods[name][key];
        const ci = (data.ci[name] || {})[key];
        cell.textContent = fmt(key, value);
        if (ci && ci[0] !== null) cell.title = "95% CI " + fmt(key, ci[0]) + " to " + fmt(key, ci[1]);
        if (value !== undefined && isBest(key, value)) cell.className = "best";
      });
    });
  }

  function isBest(key, value) {
    const direction = data.directions[key];
    if (!direction) return false;
    const values = methods.map((m) => data.methods[m][key]).filter((v) => v !== undefined && v !== null);
    return value === (direction === "higher" ? Math.max(...values) : Math.min(...values));
  }

  function axes(svg, box, xr, yr, xlabel, ylabel, logx) {
    const [x0, y0, w, h] = box;
    const sx = (v) => x0 + w * ((logx ? Math.log10(v) : v) - xr[0]) / (xr[1] - xr[0] || 1);
    const sy = (v) => y0 + h - h * (v - yr[0]) / (yr[1] - yr[0] || 1);
    el("rect", { x: x0, y: y0, width: w, height: h, fill: "none", stroke: "#999" }, svg);
    el("text", { x: x0 + w / 2, y: y0 + h + 30, "text-anchor": "middle" }, svg, xlabel);
    el("text", { x: 12, y: y0 + h / 2, transform: `rotate(-90 12 ${y0 + h / 2})`, "text-anchor": "middle" }, svg, ylabel);
    for (let i = 0; i <= 4; i++) {
      const xv = xr[0] + (i / 4) * (xr[1] - xr[0]);
      const yv = yr[0] + (i / 4) * (yr[1] - yr[0]);
      el("text", { x: x0 + (w * i) / 4, y: y0 + h + 14, "text-anchor": "middle" }, svg,
        logx ? Math.pow(10, xv).toPrecision(2) : xv.toFixed(2));
      el("text", { x: x0 - 4, y: sy(yv) + 4, "text-anchor": "end" }, svg, yv.toFixed(2));
    }
    return [sx, sy];
  }

  function range(values, pad) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    const p = (hi - lo) * pad;
    return [lo - p, hi + p];
  }

  function scatter() {
    const select = document.getElementById("scatter-metric");
    const cost = document.getElementById("scatter-cost");
    data.columns.filter(([key]) => data.directions[key] && !key.includes("second") && !key.includes("ratio"))
      .forEach(([key, header]) => {
        if (methods.some((m) => data.methods[m][key] !== undefined)) {
          const option = document.createElement("option");
          option.value = key; option.textContent = header; select.appendChild(option);
        }
      });
    const draw = () => {
      const svg = document.getElementById("scatter");
      svg.textContent = "";
      const key = select.value, ckey = cost.value;
      const points = methods.filter((m) => data.methods[m][key] != null && data.methods[m][ckey] > 0)
        .map((m) => [m, data.methods[m][ckey], data.methods[m][key]]);
      if (!points.length) return;
      const [sx, sy] = axes(svg, [60, 15, 540, 290], range(points.map((p) => Math.log10(p[1])), 0.1),
        range(points.map((p) => p[2]), 0.1), "cost (× one forward pass, log scale)", key, true);
      points.forEach(([m, c, v]) => {
        el("circle", { cx: sx(c), cy: sy(v), r: 5, fill: colour(m), "data-method": m }, svg);
        el("text", { x: sx(c) + 7, y: sy(v) - 5 }, svg, m);
      });
    };
    select.addEventListener("change", draw);
    cost.addEventListener("change", draw);
    draw();
  }

  function lines(id, series, xlabel, ylabel, xticks) {
    const svg = document.getElementById(id);
    const all = Object.values(series).flat();
    if (!all.length) { el("text", { x: 20, y: 30 }, svg, "not measured in this run"); return; }
    const n = Math.max(...Object.values(series).map((s) => s.length));
    const [sx, sy] = axes(svg, [50, 15, 350, 230], [0, 1], range(all.concat([0]), 0.05), xlabel, ylabel, false);
    Object.entries(series).forEach(([m, values]) => {
      const points = values.map((v, i) => `${sx(i / Math.max(1, values.length - 1))},${sy(v)}`).join(" ");
      el("polyline", { points, fill: "none", stroke: colour(m), "stroke-width": 2, "data-method": m }, svg);
    });
    if (xticks) xticks(svg, sx, n);
  }

  function curves() {
    for (const mode of ["deletion", "insertion"]) {
      const series = {};
      methods.forEach((m) => { if ((data.curves[m] || {})[mode]) series[m] = data.curves[m][mode]; });
      lines(mode, series, `fraction of pixels ${mode === "deletion" ? "removed" : "inserted"}`, "p(target)");
    }
  }

  function cascade() {
    const series = {};
    methods.forEach((m) => { if (data.cascade[m]) series[m] = [1].concat(data.cascade[m]); });
    lines("cascade", series, "randomised top-down: trained, " + data.cascade_units.join(", "), "Spearman ρ");
  }

  function examples() {
    const node = document.getElementById("examples");
    const positions = Object.keys(data.example_images);
    if (!positions.length) return;
    const head = node.insertRow();
    head.insertCell().textContent = "image";
    positions.forEach((p) => {
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + data.example_images[p];
      img.width = 84; img.height = 84; img.alt = "example " + p;
      head.insertCell().appendChild(img);
    });
    methods.forEach((m) => {
      const maps = data.example_maps[m] || {};
      const row = node.insertRow();
      row.insertCell().textContent = m;
      positions.forEach((p) => {
        const cell = row.insertCell();
        if (!maps[p]) return;
        cell.appendChild(heatmap(maps[p]));
      });
    });
  }

  function heatmap(map) {
    const h = map.length, w = map[0].length;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const v = Math.max(0, Math.min(1, map[y][x])), i = 4 * (y * w + x);
      image.data[i] = 255 * Math.min(1, 2 * v); image.data[i + 1] = 255 * Math.max(0, 2 * v - 1) * 0.9;
      image.data[i + 2] = 255 * (1 - v) * 0.6; image.data[i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    return canvas;
  }

  function legend() {
    const node = document.getElementById("legend");
    methods.forEach((m) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = colour(m);
      span.appendChild(swatch); span.appendChild(document.createTextNode(m));
      node.appendChild(span);
    });
    const counts = methods.map((m) => Math.max(0, ...Object.values(data.images[m] || {})));
    document.getElementById("summary").textContent =
      `${methods.length} methods, up to ${Math.max(0, ...counts)} images per method.`;
  }

  table(); scatter(); curves(); cascade(); examples(); legend();
  document.body.dataset.ready = "true";
})();
