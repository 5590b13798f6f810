(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("patch-map-data").textContent);
  const $ = (id) => document.getElementById(id);
  const count = data.coords.length;
  const canvas = $("map"), ctx = canvas.getContext("2d");
  const RADIUS = count > 2000 ? 3 : 4, HIT = RADIUS + 3;
  // Nine colours that stay apart (tab10 without its grey) for the nine most frequent classes
  // (names come most frequent first); every other class is one grey, "other".
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#bcbd22", "#17becf"];
  const TOP = PALETTE.length, OTHER = "#8c8c8c", NONE = "#d9d9d9";
  // Short names (first synonym) unless two classes share one: then their full names.
  function labels(names) {
    const short = names.map((name) => String(name).split(",")[0].trim() || String(name));
    const seen = new Map();
    short.forEach((s) => seen.set(s, (seen.get(s) || 0) + 1));
    return short.map((s, k) => (seen.get(s) > 1 ? String(names[k]) : s));
  }
  const MODES = {
    group: { names: data.groups, index: data.points.group, label: "image class" },
    top1: { names: data.top1_names, index: data.points.top1, label: "readout top-1 of the cell" },
  };
  for (const m of Object.values(MODES)) m.short = labels(m.names);
  const available = Object.keys(MODES).filter((m) => MODES[m].index.some((k) => k >= 0));
  let mode = data.colour_by, view = { k: 1, tx: 0, ty: 0 }, width = 0, height = 0;
  // fitted: the view is "fit all" until the user pans or zooms, and stays so when the plot resizes
  let selected = -1, hovered = -1, fitted = true, drag = null;
  const shown = new Set();  // legend entries pressed (a filter); empty: every point is shown

  // legend entry of a class rank: the rank itself for the top nine, TOP for "other", -1 for none
  const entryOfRank = (k) => (k < 0 ? -1 : Math.min(k, TOP));
  const entryOf = (i) => entryOfRank(MODES[mode].index[i]);
  const colourOfEntry = (e) => (e < 0 ? NONE : e < TOP ? PALETTE[e] : OTHER);
  const colourOf = (i) => colourOfEntry(entryOf(i));
  const visible = (i) => shown.size === 0 || shown.has(entryOf(i));
  const className = (m, i) => {
    const k = MODES[m].index[i];
    return k < 0 ? "(none)" : MODES[m].short[k];
  };
  const image = (i) => data.images[data.points.image[i]];
  const cellText = (i) => `cell (${data.points.cell[i][0]}, ${data.points.cell[i][1]})`;

  // --- coordinates: data (x right, y up) <-> canvas CSS pixels --------------------------------
  const xs = data.coords.map((c) => c[0]), ys = data.coords.map((c) => c[1]);
  const extent = (values) => values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)],
    [Infinity, -Infinity]);
  const [[x0, x1], [y0, y1]] = [extent(xs), extent(ys)], bounds = { x0, x1, y0, y1 };
  const toScreen = (i) => [xs[i] * view.k + view.tx, -ys[i] * view.k + view.ty];
  const toData = (sx, sy) => [(sx - view.tx) / view.k, -(sy - view.ty) / view.k];
  function fit() {
    const pad = 24, dx = bounds.x1 - bounds.x0 || 1, dy = bounds.y1 - bounds.y0 || 1;
    view.k = Math.max(1e-9, Math.min((width - 2 * pad) / dx, (height - 2 * pad) / dy));
    view.tx = width / 2 - ((bounds.x0 + bounds.x1) / 2) * view.k;
    view.ty = height / 2 + ((bounds.y0 + bounds.y1) / 2) * view.k;
    fitted = true;
  }
  function zoomAt(sx, sy, factor) {
    const k = Math.min(Math.max(view.k * factor, 1e-9), 1e9);
    view.tx = sx - ((sx - view.tx) * k) / view.k;
    view.ty = sy - ((sy - view.ty) * k) / view.k;
    view.k = k;
    fitted = false;
    draw();
  }
  function pan(dx, dy) { view.tx += dx; view.ty += dy; fitted = false; draw(); }

  // --- hit testing: a uniform grid over the data's bounding box -------------------------------
  const side = Math.max(1, Math.ceil(Math.sqrt(count / 4)));
  const cellW = (bounds.x1 - bounds.x0 || 1) / side, cellH = (bounds.y1 - bounds.y0 || 1) / side;
  const gridOf = (x, y) => [Math.floor((x - bounds.x0) / cellW), Math.floor((y - bounds.y0) / cellH)];
  const buckets = Array.from({ length: side * side }, () => []);
  for (let i = 0; i < count; i++) {
    const [gx, gy] = gridOf(xs[i], ys[i]);
    buckets[Math.min(side - 1, gy) * side + Math.min(side - 1, gx)].push(i);
  }
  function hit(sx, sy) {
    const [x, y] = toData(sx, sy), r = HIT / view.k;
    const [ax, ay] = gridOf(x - r, y - r), [bx, by] = gridOf(x + r, y + r);
    let best = -1, bestD = HIT * HIT;
    for (let gy = Math.max(0, ay); gy <= Math.min(side - 1, by); gy++) {
      for (let gx = Math.max(0, ax); gx <= Math.min(side - 1, bx); gx++) {
        for (const i of buckets[gy * side + gx]) {
          if (!visible(i)) continue;
          const [px, py] = toScreen(i), d = (px - sx) ** 2 + (py - sy) ** 2;
          if (d <= bestD) { best = i; bestD = d; }
        }
      }
    }
    return best;
  }

  // --- drawing ---------------------------------------------------------------------------------
  function resize() {
    const rect = canvas.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
    width = rect.width; height = rect.height;
    canvas.width = Math.max(1, Math.round(width * ratio));
    canvas.height = Math.max(1, Math.round(height * ratio));
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    if (fitted && width > 0) fit();
    draw();
  }
  function draw() {
    ctx.clearRect(0, 0, width, height);
    const batches = new Map();
    for (let i = 0; i < count; i++) {
      const [sx, sy] = toScreen(i);
      if (sx < -HIT || sy < -HIT || sx > width + HIT || sy > height + HIT || !visible(i)) continue;
      const colour = colourOf(i);
      if (!batches.has(colour)) batches.set(colour, []);
      batches.get(colour).push(sx, sy);
    }
    // grey first, so that the coloured classes are drawn over the crowd of "other"
    const order = [NONE, OTHER, ...PALETTE].filter((colour) => batches.has(colour));
    for (const colour of order) dots(batches.get(colour), colour, "rgba(0, 0, 0, 0.35)");
    if (selected >= 0) {
      for (const j of neighboursOf(selected)) ring(j, RADIUS + 3, "#111", 1.5);
      star(selected);
    }
    if (hovered >= 0) ring(hovered, RADIUS + 2.5, "#1f6fd6", 2);
    if (document.activeElement === canvas) crosshair();
  }
  function crosshair() {
    ctx.beginPath();
    ctx.moveTo(width / 2 - 9, height / 2); ctx.lineTo(width / 2 + 9, height / 2);
    ctx.moveTo(width / 2, height / 2 - 9); ctx.lineTo(width / 2, height / 2 + 9);
    ctx.strokeStyle = "#1f6fd6"; ctx.lineWidth = 1.5; ctx.stroke();
  }
  function nearestToCentre() {
    let best = -1, bestD = Infinity;
    for (let i = 0; i < count; i++) {
      if (!visible(i)) continue;
      const [sx, sy] = toScreen(i), d = (sx - width / 2) ** 2 + (sy - height / 2) ** 2;
      if (d < bestD) { best = i; bestD = d; }
    }
    return best;
  }
  function dots(at, fill, stroke) {
    if (!at.length) return;
    ctx.beginPath();
    for (let n = 0; n < at.length; n += 2) {
      ctx.moveTo(at[n] + RADIUS, at[n + 1]);
      ctx.arc(at[n], at[n + 1], RADIUS, 0, 2 * Math.PI);
    }
    ctx.fillStyle = fill;
    ctx.fill();
    if (stroke) { ctx.strokeStyle = stroke; ctx.lineWidth = 0.6; ctx.stroke(); }
  }
  function ring(i, r, colour, lineWidth) {
    const [sx, sy] = toScreen(i);
    ctx.beginPath();
    ctx.arc(sx, sy, r, 0, 2 * Math.PI);
    ctx.strokeStyle = colour; ctx.lineWidth = lineWidth; ctx.stroke();
  }
  function star(i) {
    const [sx, sy] = toScreen(i);
    ctx.beginPath();
    for (let n = 0; n < 10; n++) {
      const r = n % 2 ? 4.5 : 11, a = -Math.PI / 2 + (n * Math.PI) / 5;
      ctx.lineTo(sx + r * Math.cos(a), sy + r * Math.sin(a));
    }
    ctx.closePath();
    ctx.fillStyle = "#ff1744"; ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
  }

  // --- tooltip, selection panel, legend --------------------------------------------------------
  const neighboursOf = (i) => data.neighbours[i].filter((j) => j >= 0 && j !== i);
  function outline(element, box) {
    Object.assign(element.style, { left: `${100 * box[0]}%`, top: `${100 * box[1]}%`,
      width: `${100 * (box[2] - box[0])}%`, height: `${100 * (box[3] - box[1])}%` });
  }
  function describe(i) {
    const lines = [image(i).name, cellText(i)];
    for (const m of available) lines.push(`${MODES[m].label}: ${className(m, i)}`);
    return lines;
  }
  function showTooltip(i, clientX, clientY) {
    const tip = $("tooltip"), thumb = data.thumbs[i];
    $("tooltip-thumb").src = thumb.uri;
    $("tooltip-thumb").width = Math.round(1.5 * thumb.size[0]);
    $("tooltip-thumb").height = Math.round(1.5 * thumb.size[1]);
    outline($("tooltip-outline"), thumb.outline);
    $("tooltip-text").replaceChildren(...describe(i).map((line) => {
      const div = document.createElement("div");
      div.textContent = line;
      return div;
    }));
    tip.hidden = false;
    tip.dataset.index = String(i);
    const w = tip.offsetWidth, h = tip.offsetHeight;
    const left = clientX + 16 + w > window.innerWidth ? clientX - 16 - w : clientX + 16;
    const top = clientY + 16 + h > window.innerHeight ? clientY - 16 - h : clientY + 16;
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${Math.max(0, top)}px`;
  }
  function hideTooltip() { $("tooltip").hidden = true; }
  function setHover(i) { if (i !== hovered) { hovered = i; draw(); } }
  function select(i) {
    selected = i;
    document.body.dataset.selected = String(i);
    if (i < 0) { $("source").hidden = true; $("neighbour-section").hidden = true; draw(); return; }
    const source = image(i), box = data.points.box[i], [w, h] = source.size;
    $("detail-heading").textContent = `point ${i + 1} of ${count}`;
    $("source-image").src = source.uri;
    $("source-frame").style.width = `min(100%, ${Math.round((340 * w) / h)}px)`;
    $("source-image").alt = `${source.name} with ${cellText(i)} outlined`;
    outline($("cell-outline"), [box[0] / w, box[1] / h, box[2] / w, box[3] / h]);
    $("source-caption").textContent = `${describe(i).join(" · ")} · box ${box.join(", ")} px`;
    $("source").hidden = false;
    const buttons = neighboursOf(i).map((j, rank) => neighbourButton(j, rank));
    $("neighbours").replaceChildren(...buttons);
    $("neighbour-section").hidden = buttons.length === 0;
    draw();
  }
  function neighbourButton(j, rank) {
    const button = document.createElement("button"), img = document.createElement("img");
    const label = document.createElement("span");
    button.type = "button";
    button.className = "neighbour";
    button.dataset.index = String(j);
    img.src = data.thumbs[j].uri;
    img.alt = "";
    label.textContent = `${rank + 1}. ${className(mode, j)}`;
    button.title = describe(j).join("\n");
    button.setAttribute("aria-label", `neighbour ${rank + 1}: ${describe(j).join(", ")}`);
    button.append(img, label);
    button.addEventListener("click", () => select(j));
    return button;
  }
  function setMode(m) {
    if (!MODES[m]) return;
    mode = m;
    shown.clear();
    document.body.dataset.mode = m;
    for (const radio of document.querySelectorAll('input[name="colour"]')) radio.checked = radio.value === m;
    $("colour-label").textContent = available.length < 2 ? `colour: ${MODES[m].label}` : "";
    legend();
    draw();
  }
  function legend() {
    const { names, short, index } = MODES[mode], tally = new Map(), members = new Map();
    for (const k of index) {
      const e = entryOfRank(k);
      tally.set(e, (tally.get(e) || 0) + 1);
      if (e === TOP) members.set(k, true);
    }
    const entries = [...tally.keys()].filter((e) => e >= 0).sort((a, b) => a - b);
    if (tally.has(-1)) entries.push(-1);
    const items = entries.map((e) => {
      const li = document.createElement("li"), button = document.createElement("button");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colourOfEntry(e);
      button.type = "button";
      button.dataset.entry = String(e);
      button.setAttribute("aria-pressed", String(shown.has(e)));
      const text = e < 0 ? "(none)" : e < TOP ? short[e] : `${members.size} other classes`;
      button.title = e >= 0 && e < TOP ? String(names[e]) : "press to show only these points";
      button.append(swatch, `${text} (${tally.get(e)})`);
      button.addEventListener("click", () => {
        if (shown.has(e)) shown.delete(e); else shown.add(e);
        filtered();
      });
      li.append(button);
      return li;
    });
    if (shown.size) {
      const li = document.createElement("li"), all = document.createElement("button");
      all.type = "button";
      all.id = "show-all";
      all.textContent = "show all";
      all.addEventListener("click", () => { shown.clear(); filtered(); });
      li.append(all);
      items.push(li);
    }
    $("legend").replaceChildren(...items);
  }
  function filtered() {
    document.body.dataset.filter = [...shown].sort((a, b) => a - b).join(",");
    if (hovered >= 0 && !visible(hovered)) { hovered = -1; hideTooltip(); }
    legend();
    draw();
  }

  // --- events ------------------------------------------------------------------------------------
  const local = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, moved: false };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (drag && (drag.moved || Math.hypot(event.clientX - drag.x, event.clientY - drag.y) > 3)) {
      drag.moved = true;
      canvas.classList.add("dragging");
      hideTooltip();
      pan(event.clientX - drag.x, event.clientY - drag.y);
      drag.x = event.clientX; drag.y = event.clientY;
      return;
    }
    const i = hit(...local(event));
    setHover(i);
    if (i >= 0) showTooltip(i, event.clientX, event.clientY); else hideTooltip();
  });
  canvas.addEventListener("pointerup", (event) => {
    if (drag && !drag.moved) {
      const i = hit(...local(event));
      if (i >= 0) select(i);
    }
    drag = null;
    canvas.classList.remove("dragging");
  });
  canvas.addEventListener("pointerleave", () => { if (!drag) { hideTooltip(); setHover(-1); } });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoomAt(...local(event), Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015)));
  }, { passive: false });
  canvas.addEventListener("keydown", (event) => {
    const step = 40, moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step],
      ArrowDown: [0, -step] };
    if (moves[event.key]) pan(...moves[event.key]);
    else if (event.key === "+" || event.key === "=") zoomAt(width / 2, height / 2, 1.5);
    else if (event.key === "-") zoomAt(width / 2, height / 2, 1 / 1.5);
    else if (event.key === "0") { fit(); draw(); }
    else if (event.key === "Enter" || event.key === " ") select(nearestToCentre());
    else return;
    event.preventDefault();
  });
  $("zoom-in").addEventListener("click", () => zoomAt(width / 2, height / 2, 1.5));
  $("zoom-out").addEventListener("click", () => zoomAt(width / 2, height / 2, 1 / 1.5));
  $("zoom-reset").addEventListener("click", () => { fit(); draw(); });
  for (const radio of document.querySelectorAll('input[name="colour"]')) {
    radio.addEventListener("change", () => { if (radio.checked) setMode(radio.value); });
  }
  canvas.addEventListener("focus", draw);
  canvas.addEventListener("blur", draw);
  new ResizeObserver(resize).observe(canvas);

  // --- start -------------------------------------------------------------------------------------
  $("title").textContent = data.title;
  const used = new Set(data.points.image).size;
  $("summary").textContent = `${count} patches from ${used} image${used === 1 ? "" : "s"}`;
  $("colour-modes").hidden = available.length < 2;
  resize();
  setMode(mode);
  select(-1);
  window.patchMap = {
    data,
    mode: () => mode,
    setMode,
    select,
    selected: () => selected,
    colourOf,
    visible,
    hit: (clientX, clientY) => hit(clientX - canvas.getBoundingClientRect().left,
      clientY - canvas.getBoundingClientRect().top),
    screenPosition: (i) => {
      const rect = canvas.getBoundingClientRect(), [sx, sy] = toScreen(i);
      return { x: rect.left + sx, y: rect.top + sy };
    },
    view: () => ({ ...view }),
    draw,
  };
  document.body.dataset.ready = "true";
})();
