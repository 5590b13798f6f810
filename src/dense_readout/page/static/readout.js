"use strict";
(function () {
  const data = JSON.parse(document.getElementById("readout-data").textContent);
  const $ = (id) => document.getElementById(id);
  // a clip or volume has a third grid axis first (t×h×w) and one picture per step t
  const K = data.scores.shape[0], G = data.grid, slices = data.slices || null;
  const T = G.length === 3 ? G[0] : 1, H = G[G.length - 2], W = G[G.length - 1], N = H * W;
  const axis = slices ? slices.axis : "";
  const whole = slices ? (axis === "slice" ? "volume" : "clip") : "image";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
    "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5"];
  const OTHER = "#8c8c8c";

  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    if (exp === 0) return sign * frac * Math.pow(2, -24);
    if (exp === 31) return frac ? NaN : sign * Infinity;
    return sign * (1 + frac / 1024) * Math.pow(2, exp - 15);
  }
  function decodeScores(text) {
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer), out = new Float32Array(bytes.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
    return out;
  }
  const scores = decodeScores(data.scores.data);
  const shortName = (k) => String(data.names[k]).split(",")[0].trim();
  const fmt = (x, d) => Number(x).toFixed(d);

  // turbo colour map (Mikhailov 2019, polynomial approximation)
  function turbo(t) {
    t = Math.min(1, Math.max(0, t));
    const r = 0.13572138 + t * (4.6153926 + t * (-42.66032258 + t * (132.13108234 + t * (-152.94239396 + t * 59.28637943))));
    const g = 0.09140261 + t * (2.19418839 + t * (4.84296658 + t * (-14.18503333 + t * (4.27729857 + t * 2.82956604))));
    const b = 0.1066733 + t * (12.64194608 + t * (-60.58204836 + t * (110.36276771 + t * (-89.90310912 + t * 27.34824973))));
    return [r, g, b].map((v) => Math.round(255 * Math.min(1, Math.max(0, v))));
  }

  const state = { mode: "labels", cls: data.initial_class, cell: null, t: 0 };
  const allLabels = new Int32Array(T * N);
  for (let i = 0; i < T * N; i++) allLabels[i] = data.cells.classes[i][0];
  let labels = allLabels.subarray(0, N);  // the shown frame's (slice's) cells
  const countsOf = (list) => {
    const counts = new Map();
    list.forEach((k) => counts.set(k, (counts.get(k) || 0) + 1));
    return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  };
  // colours from the whole clip, so that a class keeps its colour on every frame
  const colour = new Map(countsOf(allLabels).map(([k], i) => [k, i < PALETTE.length ? PALETTE[i] : OTHER]));

  const canvas = $("picture"), ctx = canvas.getContext("2d");
  const photos = (slices ? slices.uris : [data.photo.uri]).map(() => new Image());
  const scale = data.photo.scale;
  const region = data.region.map((v) => v * scale);  // [left, top, right, bottom] in canvas px
  const cellW = (region[2] - region[0]) / W, cellH = (region[3] - region[1]) / H;

  function classMap(k) {
    return scores.subarray(k * T * N + state.t * N, k * T * N + (state.t + 1) * N);
  }
  function mapCanvas(values, lo, hi, rows, cols, alpha) {
    const small = document.createElement("canvas");
    small.width = cols; small.height = rows;
    const sctx = small.getContext("2d"), img = sctx.createImageData(cols, rows);
    for (let i = 0; i < rows * cols; i++) {
      const c = turbo(hi > lo ? (values[i] - lo) / (hi - lo) : 0.5);
      img.data.set([c[0], c[1], c[2], alpha], 4 * i);
    }
    sctx.putImageData(img, 0, 0);
    return small;
  }
  function range(values) {
    let lo = Infinity, hi = -Infinity;
    values.forEach((v) => { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    return [lo, hi];
  }

  function drawGridLines(thick) {
    ctx.strokeStyle = "rgba(255,255,255,0.7)";
    ctx.lineWidth = Math.max(1, canvas.width / 800);
    ctx.beginPath();
    for (let v = 0; v <= W; v++) { ctx.moveTo(region[0] + v * cellW, region[1]); ctx.lineTo(region[0] + v * cellW, region[3]); }
    for (let u = 0; u <= H; u++) { ctx.moveTo(region[0], region[1] + u * cellH); ctx.lineTo(region[2], region[1] + u * cellH); }
    ctx.stroke();
    if (!thick) return;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = Math.max(2, canvas.width / 250);
    ctx.beginPath();
    for (let u = 0; u < H; u++) for (let v = 0; v < W; v++) {
      const k = labels[u * W + v], x = region[0] + (v + 1) * cellW, y = region[1] + (u + 1) * cellH;
      if (v + 1 < W && labels[u * W + v + 1] !== k) { ctx.moveTo(x, y - cellH); ctx.lineTo(x, y); }
      if (u + 1 < H && labels[(u + 1) * W + v] !== k) { ctx.moveTo(x - cellW, y); ctx.lineTo(x, y); }
    }
    ctx.stroke();
  }
  function drawOutside() {
    const full = region[0] <= 0.5 && region[1] <= 0.5 &&
      region[2] >= canvas.width - 0.5 && region[3] >= canvas.height - 0.5;
    if (full) return;
    ctx.fillStyle = "rgba(0,0,0,0.45)";
    ctx.beginPath();
    ctx.rect(0, 0, canvas.width, canvas.height);
    ctx.rect(region[0], region[1], region[2] - region[0], region[3] - region[1]);
    ctx.fill("evenodd");
    ctx.setLineDash([8, 6]); ctx.strokeStyle = "#ffd400"; ctx.lineWidth = Math.max(2, canvas.width / 300);
    ctx.strokeRect(region[0], region[1], region[2] - region[0], region[3] - region[1]);
    ctx.setLineDash([]);
  }
  function drawLabels() {
    ctx.globalAlpha = 0.38;
    for (let u = 0; u < H; u++) for (let v = 0; v < W; v++) {
      ctx.fillStyle = colour.get(labels[u * W + v]);
      ctx.fillRect(region[0] + v * cellW, region[1] + u * cellH, cellW, cellH);
    }
    ctx.globalAlpha = 1;
  }
  function drawClassMap() {
    // one colour scale over every frame of the clip: frames compare by colour
    const values = classMap(state.cls), [lo, hi] = range(scores.subarray(state.cls * T * N, (state.cls + 1) * T * N));
    ctx.imageSmoothingEnabled = true;
    ctx.globalAlpha = 0.55;
    ctx.drawImage(mapCanvas(values, lo, hi, H, W, 255), region[0], region[1], region[2] - region[0], region[3] - region[1]);
    ctx.globalAlpha = 1;
    drawColorbar(lo, hi);
  }
  function drawColorbar(lo, hi) {
    const bar = $("colorbar-canvas"), bctx = bar.getContext("2d");
    for (let x = 0; x < bar.width; x++) {
      const c = turbo(x / (bar.width - 1));
      bctx.fillStyle = `rgb(${c[0]},${c[1]},${c[2]})`; bctx.fillRect(x, 0, 1, bar.height);
    }
    $("bar-min").textContent = fmt(lo, 2);
    $("bar-max").textContent = fmt(hi, 2);
    $("bar-label").textContent = `Z[${state.cls}] ${shortName(state.cls)}: per-cell logit` +
      (data.exact ? ` (mean${slices ? ` of all ${T}×${H}×${W} cells` : ""} ${fmt(data.logits[state.cls], 2)} = ${whole} logit)` : "");
  }
  function drawFocus() {
    if (!state.cell) return;
    const [u, v] = state.cell;
    ctx.strokeStyle = "#000"; ctx.lineWidth = Math.max(3, canvas.width / 160);
    ctx.strokeRect(region[0] + v * cellW, region[1] + u * cellH, cellW, cellH);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = Math.max(1.5, canvas.width / 400);
    ctx.strokeRect(region[0] + v * cellW, region[1] + u * cellH, cellW, cellH);
  }
  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(photos[state.t], 0, 0, canvas.width, canvas.height);
    $("colorbar").classList.toggle("off", state.mode !== "class");  // keeps its room: no jumps
    $("legend-section").hidden = state.mode !== "labels";
    if (state.mode === "labels") drawLabels();
    if (state.mode === "class") drawClassMap();
    drawGridLines(state.mode === "labels");
    drawOutside();
    drawFocus();
    canvas.dataset.mode = state.mode;
    canvas.dataset.cls = String(state.cls);
    canvas.dataset.slice = String(state.t);
  }

  function showCell(u, v) {
    state.cell = [u, v];
    const i = state.t * N + u * W + v, list = $("cell-top5");
    $("cell-heading").textContent = `cell row ${u + 1}, column ${v + 1} of ${H}×${W}` +
      (slices ? `, ${axis} ${state.t + 1} of ${T}` : "");
    list.dataset.slice = String(state.t);
    list.replaceChildren(...data.cells.classes[i].map((k, j) => {
      const li = document.createElement("li");
      li.dataset.class = String(k);
      const name = document.createElement("span"), num = document.createElement("span");
      name.className = "name";
      name.textContent = `${shortName(k)} (${k})`;
      name.title = `${data.names[k]} (${k})`;
      num.className = "num";
      num.textContent = `${fmt(100 * data.cells.probabilities[i][j], 1)}% · Z ${fmt(data.cells.logits[i][j], 2)}`;
      li.append(name, num);
      return li;
    }));
    draw();
  }
  // The picture as large as the viewer's width allows, but short enough that it and the
  // colour bar under it fit the window's height (a square photo on a landscape screen).
  function fitPicture() {
    const top = canvas.getBoundingClientRect().top + window.scrollY;
    const room = Math.max(240, window.innerHeight - top - $("colorbar").offsetHeight - 12);
    const width = Math.min(canvas.parentElement.clientWidth, room * canvas.width / canvas.height);
    canvas.style.width = `${Math.floor(width)}px`;
    canvas.style.height = `${Math.floor(width * canvas.height / canvas.width)}px`;
    $("colorbar").style.width = canvas.style.width;
  }
  function cellAt(event) {
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * canvas.width / rect.width;
    const y = (event.clientY - rect.top) * canvas.height / rect.height;
    const v = Math.floor((x - region[0]) / cellW), u = Math.floor((y - region[1]) / cellH);
    return u >= 0 && u < H && v >= 0 && v < W ? [u, v] : null;
  }
  function onPointer(event) {
    const cell = cellAt(event);
    if (cell && (!state.cell || cell[0] !== state.cell[0] || cell[1] !== state.cell[1])) showCell(...cell);
  }
  function setSlice(t) {
    state.t = Math.min(T - 1, Math.max(0, t));
    labels = allLabels.subarray(state.t * N, (state.t + 1) * N);
    $("slice").value = String(state.t);
    $("slice-value").textContent = `${state.t + 1} of ${T} (input ${axis} ${slices.input_index[state.t]})`;
    showLegend();
    if (state.cell) showCell(...state.cell);
    else draw();
  }
  function onKey(event) {
    if (slices && (event.key === "PageUp" || event.key === "PageDown")) {
      event.preventDefault();
      setSlice(state.t + (event.key === "PageDown" ? 1 : -1));
      return;
    }
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const [u, v] = state.cell || [0, 0], [du, dv] = state.cell ? moves[event.key] : [0, 0];
    showCell(Math.min(H - 1, Math.max(0, u + du)), Math.min(W - 1, Math.max(0, v + dv)));
  }

  const optionText = (k) => `${data.names[k]} (${k})`;
  function findClass(text) {
    text = text.trim().toLowerCase();
    if (!text) return null;
    const id = text.match(/\((\d+)\)\s*$/) || text.match(/^(\d+)$/);
    if (id && +id[1] < K) return +id[1];
    const exact = [], partial = [];
    for (let k = 0; k < K; k++) {
      const name = String(data.names[k]).toLowerCase();
      if (name === text || name.split(",").map((s) => s.trim()).includes(text)) exact.push(k);
      else if (name.includes(text)) partial.push(k);
    }
    if (exact.length) return exact[0];
    return partial.length === 1 ? partial[0] : null;
  }
  function selectClass(k, fromSearch) {
    state.cls = k;
    state.mode = "class";
    document.querySelector('input[name="mode"][value="class"]').checked = true;
    if (!fromSearch) $("class-search").value = optionText(k);
    $("class-status").textContent = `showing ${shortName(k)} (${k})`;
    document.querySelectorAll("#image-top5 button").forEach((b) =>
      b.setAttribute("aria-pressed", String(+b.dataset.class === k)));
    showComparisons(k);
    draw();
  }
  function onSearch() {
    const text = $("class-search").value, k = findClass(text);
    if (k === null) {
      $("class-status").textContent = text.trim() ? "no single class matches; pick one from the list" : "";
      return;
    }
    selectClass(k, true);
  }

  function showComparisons(k) {
    const items = data.comparisons.filter((c) => c.class === k);
    $("comparisons").hidden = items.length === 0;
    $("comparison-maps").replaceChildren(...items.map((item) => {
      const figure = document.createElement("figure"), c = document.createElement("canvas");
      const [rows, cols] = item.shape, bytes = Uint8Array.from(atob(item.data), (ch) => ch.charCodeAt(0));
      const rw = region[2] - region[0], rh = region[3] - region[1];
      c.width = Math.round(Math.min(200, rw)); c.height = Math.round(c.width * rh / rw);
      const cctx = c.getContext("2d");
      cctx.drawImage(photos[0], region[0], region[1], rw, rh, 0, 0, c.width, c.height);
      cctx.globalAlpha = 0.55;
      cctx.drawImage(mapCanvas(Array.from(bytes, (b) => b / 255), 0, 1, rows, cols, 255), 0, 0, c.width, c.height);
      c.dataset.method = item.method;
      const caption = document.createElement("figcaption");
      caption.textContent = `${item.method}: ${fmt(item.seconds, 3)} s for ${item.classes} classes`;
      figure.append(c, caption);
      return figure;
    }));
  }

  function showLegend() {  // the shown frame's classes, in the clip's colours
    const onGrid = countsOf(labels);
    $("legend").replaceChildren(...onGrid.slice(0, PALETTE.length).map(([k, n]) => {
      const li = document.createElement("li"), sw = document.createElement("span");
      sw.className = "swatch"; sw.style.background = colour.get(k);
      li.append(sw, `${shortName(k)} (${k}): ${n}`);
      return li;
    }));
    if (onGrid.length > PALETTE.length) $("legend").append(Object.assign(document.createElement("li"), { textContent: `+${onGrid.length - PALETTE.length} other classes (grey)` }));
  }

  function setup() {
    $("title").textContent = data.title || "dense readout";
    const top = data.top5[0];
    $("summary").textContent = `${data.model ? data.model + " · " : ""}${data.view ? data.view + " · " : ""}${whole} top-1: ${shortName(top.class)} ` +
      `(${fmt(100 * top.probability, 1)}%) · ${slices ? T + "×" : ""}${H}×${W} cells · ${K} classes · ` +
      (data.exact ? "exact: mean of the cells = logits" : `not exact (residual ${fmt(data.residual, 3)})`);
    const warnings = (data.random_weights ? ["RANDOM WEIGHTS: these classes mean nothing"] : []).concat(data.notes);
    $("warning").hidden = warnings.length === 0;
    $("warning").textContent = warnings.join(" · ");
    $("about").textContent = data.exactness_note;
    const list = $("class-names");
    for (let k = 0; k < K; k++) { const o = document.createElement("option"); o.value = optionText(k); list.append(o); }
    $("image-top5").replaceChildren(...data.top5.map((t) => {
      const b = document.createElement("button");
      b.type = "button"; b.dataset.class = String(t.class); b.setAttribute("aria-pressed", "false");
      b.textContent = `${shortName(t.class)} ${fmt(100 * t.probability, 1)}%`;
      b.addEventListener("click", () => selectClass(t.class, false));
      return b;
    }));
    showLegend();
    document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", () => {
      state.mode = r.value;
      if (r.value === "class") showComparisons(state.cls);
      draw();
    }));
    $("class-search").addEventListener("input", onSearch);
    $("class-search").addEventListener("change", onSearch);
    canvas.addEventListener("pointermove", onPointer);
    canvas.addEventListener("pointerdown", onPointer);
    canvas.addEventListener("keydown", onKey);
    canvas.addEventListener("focus", () => { if (!state.cell) showCell(0, 0); });
    canvas.width = Math.round(data.photo.size[1] * scale);
    canvas.height = Math.round(data.photo.size[0] * scale);
    fitPicture();
    window.addEventListener("resize", fitPicture);
    if (slices) {
      $("slice-control").hidden = false;
      $("slice-label").textContent = axis;
      $("slice").max = String(T - 1);
      $("slice").addEventListener("input", () => setSlice(+$("slice").value));
      $("slice-value").textContent = `1 of ${T} (input ${axis} ${slices.input_index[0]})`;
    }
    let pending = photos.length;
    photos.forEach((p, t) => {
      p.onload = () => {
        if (--pending > 0) return;
        if (data.open_on_class) selectClass(data.initial_class, false);  // e.g. explain --class
        else draw();
        document.body.dataset.ready = "true";
      };
      p.src = slices ? slices.uris[t] : data.photo.uri;
    });
  }
  window.denseReadout = { data, scores, state, selectClass, showCell, findClass, setSlice };
  setup();
})();
