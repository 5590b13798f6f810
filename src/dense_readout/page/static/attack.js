(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("attack-data").textContent);
  const $ = (id) => document.getElementById(id);
  const [h, w] = data.grid;
  const slider = $("step"), cells = $("cells"), info = $("cell-info");
  const role = data.targeted ? "target" : "true class";
  const full = (id) => data.names[String(id)] ?? String(id);
  const short = (id) => full(id).split(",")[0].trim() || full(id);
  const label = (id) => (short(id) === String(id) ? String(id) : `${short(id)} (${id})`);
  const pct = (p) => `${(100 * p).toFixed(1)}%`;
  const hue = (id) => {
    if (id === data.target) return 0;
    const angle = (id * 137.508) % 360;
    return angle < 25 || angle > 335 ? (angle + 70) % 360 : angle;
  };
  let step = 0, active = [0, 0], shown = null;
  $("title").textContent = `PGD attack, ${data.targeted ? "toward" : "away from"} ${label(data.target)}`;
  $("summary").textContent = data.success_step >= 0
    ? `The image top-1 ${data.targeted ? "becomes the target" : "leaves the true class"} at step ${data.success_step} of ${data.steps}.`
    : `The image top-1 does not ${data.targeted ? "reach the target" : "leave the true class"} in ${data.steps} steps.`;
  $("target-prob-label").textContent = `${role} probability`;
  $("target-share-label").textContent = `cells on the ${role}`;
  $("stage").style.aspectRatio = `${data.size[1]} / ${data.size[0]}`;
  slider.max = String(data.steps);
  slider.setAttribute("aria-valuemax", String(data.steps));
  cells.style.gridTemplateColumns = `repeat(${w}, 1fr)`;
  cells.style.gridTemplateRows = `repeat(${h}, 1fr)`;
  const buttons = [];
  for (let u = 0; u < h; u++) {
    for (let v = 0; v < w; v++) {
      const cell = document.createElement("button");
      cell.type = "button";
      cell.className = "cell";
      cell.tabIndex = u === 0 && v === 0 ? 0 : -1;
      cell.dataset.u = String(u);
      cell.dataset.v = String(v);
      cell.append(document.createElement("span"));
      cell.addEventListener("mouseenter", () => showCell(u, v));
      cell.addEventListener("click", () => showCell(u, v));
      cell.addEventListener("focus", () => { active = [u, v]; showCell(u, v); });
      cell.addEventListener("keydown", move);
      cells.append(cell);
      buttons.push(cell);
    }
  }
  function move(event) {
    const delta = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[event.key];
    if (!delta) return;
    event.preventDefault();
    const u = Math.min(h - 1, Math.max(0, active[0] + delta[0]));
    const v = Math.min(w - 1, Math.max(0, active[1] + delta[1]));
    buttons[active[0] * w + active[1]].tabIndex = -1;
    buttons[u * w + v].tabIndex = 0;
    buttons[u * w + v].focus();
  }
  function showCell(u, v) {
    if (shown) buttons[shown[0] * w + shown[1]].classList.remove("shown");
    shown = [u, v];
    buttons[u * w + v].classList.add("shown");
    const s = data.per_step[step];
    const top = s.labels[u][v], rank = s.target_ranks[u][v];
    Object.assign(info.dataset, { u: String(u), v: String(v), label: String(top), rank: String(rank) });
    $("cell-heading").textContent = `cell row ${u + 1}, column ${v + 1} at step ${step}`;
    $("cell-top1").textContent = `top-1: ${full(top)} (${top}) · ${pct(s.probs[u][v])}`;
    $("cell-rank").textContent = `${role} ${label(data.target)}: rank ${rank + 1} of ${data.num_classes} here`;
  }
  function setStep(value) {
    step = Math.max(0, Math.min(data.steps, Math.round(Number(value)) || 0));
    const s = data.per_step[step];
    slider.value = String(step);
    slider.setAttribute("aria-valuetext", `step ${step} of ${data.steps}`);
    $("photo").src = s.image;
    $("step-number").textContent = step === 0 ? `step 0 (clean) of ${data.steps}` : `step ${step} of ${data.steps}`;
    $("image-top1").textContent = `${label(s.prediction)} · ${pct(s.prediction_probability)}`;
    $("target-prob").textContent = pct(s.target_probability);
    const count = Math.round(s.target_cell_fraction * h * w);
    $("target-share").textContent = `${pct(s.target_cell_fraction)} (${count} of ${h * w} cells)`;
    buttons.forEach((cell, i) => {
      const u = Math.floor(i / w), v = i % w, top = s.labels[u][v];
      cell.style.backgroundColor = `hsla(${hue(top)}, 85%, 50%, 0.38)`;
      cell.classList.toggle("target", top === data.target);
      cell.firstChild.textContent = `${short(top)} ${Math.round(100 * s.probs[u][v])}%`;
      cell.setAttribute("aria-label", `row ${u + 1}, column ${v + 1}: ${short(top)} ${pct(s.probs[u][v])}`);
    });
    $("prev").disabled = step === 0;
    $("next").disabled = step === data.steps;
    document.body.dataset.step = String(step);
    if (shown) showCell(shown[0], shown[1]);
  }
  slider.addEventListener("input", () => setStep(slider.value));
  $("prev").addEventListener("click", () => setStep(step - 1));
  $("next").addEventListener("click", () => setStep(step + 1));
  $("show-labels").addEventListener("change", (event) => {
    $("stage").classList.toggle("plain", !event.target.checked);
  });
  setStep(0);
  window.attackPage = { data, setStep, showCell };
  document.body.dataset.ready = "true";
})();
