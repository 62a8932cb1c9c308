// preimage serve: the page. Plain JS, no libraries; talks to the JSON API and the event stream.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, models: [], layers: [], classes: null, source: null, styleSource: null,
                current: null, stream: null, frames: 0 };

function notice(text) {
  const el = $("notice");
  el.textContent = text || "";
  el.hidden = !text;
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    const msg = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return body;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text === undefined ? value : text;
  select.appendChild(o);
  return o;
}

function fmt(v) {
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1000 || a < 0.001 ? v.toExponential(3) : v.toPrecision(4);
}

// -- set-up -------------------------------------------------------------------------------------

async function init() {
  try {
    state.info = await api("/api/info");
    state.models = await api("/api/models");
  } catch (e) { notice("cannot reach the server: " + e.message); return; }
  const info = state.info;
  $("server").textContent = `preimage ${info.version} · ${info.workers} job(s) at once · ${info.device}`;
  $("steps").max = $("dream-steps").max = $("style-steps").max = info.max_steps;
  $("input-size").max = info.max_input_size;
  for (const m of state.models) {
    option($("model"), m.name, m.name + (m.offline ? "" : "  (no pretrained weights here: random init)"));
  }
  $("model").value = state.models.some((m) => m.name === "efficientnet_lite0") ? "efficientnet_lite0" : state.models[0].name;
  for (const s of info.samples) { option($("sample"), "sample:" + s, s); option($("style-sample"), "sample:" + s, s); }
  $("sample").value = "sample:chelsea";
  $("style-sample").value = info.samples.includes("brick") ? "sample:brick" : "sample:" + info.samples[0];
  for (const p of info.presets.invert) option($("preset"), p);
  for (const p of info.presets.dream) option($("dream-preset"), p);
  for (const p of info.presets.style) option($("style-preset"), p);
  for (const m of info.saliency_methods) option($("method"), m);
  $("method").value = "all";
  pickSample();
  pickStyleSample();
  await loadLayers();
  refreshJobs();
  setInterval(refreshJobs, 1000);
}

let layersAsked = 0;

async function loadLayers() {
  const ticket = ++layersAsked;  // a slower, older answer must not overwrite a newer one
  const name = $("model").value;
  const m = state.models.find((x) => x.name === name);
  if (m && !m.offline) $("weights").value = "none";  // the server does not download weights
  $("model-note").textContent = m ? `${m.source}, input ${m.input_size} px${m.offline ? ", works offline" : ""}${m.note ? " · " + m.note : ""}` : "";
  const size = $("input-size").value;
  $("layer").innerHTML = "";
  option($("layer"), "", "loading layers…").disabled = true;
  try {
    const d = await api(`/api/models/${encodeURIComponent(name)}/layers` + (size ? `?input_size=${size}` : ""));
    if (ticket !== layersAsked) return;
    const previous = state.layers.some((l) => l.name === $("layer").dataset.chosen) ? $("layer").dataset.chosen : null;
    state.layers = d.layers;
    state.stages = d.stages;
    state.classes = d.classes;
    $("input-size").placeholder = d.input_size;
    showLayers(d.layers.some((l) => l.name === previous) && name === state.layersOf ? previous : d.default_layer);
    state.layersOf = name;
    $("stages").textContent = d.stages.length ? "stages: " + d.stages.join(", ") : "no stages: a depth strip needs a deep network";
    $("run-depth").disabled = !d.stages.length;
    const list = $("classes");
    list.innerHTML = "";
    (d.classes || []).forEach((c, i) => option(list, c, String(i)));
    notice("");
  } catch (e) {
    if (ticket !== layersAsked) return;
    $("layer").innerHTML = "";
    notice(e.message);
  }
}

function showLayers(selected) {
  const q = $("layer-search").value.trim().toLowerCase();
  const sel = $("layer");
  const keep = selected || sel.value;
  sel.innerHTML = "";
  for (const l of state.layers) {
    const text = `${l.name}${l.aliases.length ? " (" + l.aliases.join(", ") + ")" : ""} · ${l.kind} · ${l.shape.join("×")}`;
    if (q && !text.toLowerCase().includes(q)) continue;
    option(sel, l.name, text);
  }
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  else if (sel.options.length) sel.selectedIndex = 0;
}

function pickSample() {
  state.source = $("sample").value;
  $("source-preview").src = `/api/samples/${state.source.slice(7)}.png`;
}

function pickStyleSample() {
  state.styleSource = $("style-sample").value;
  $("style-preview").src = `/api/samples/${state.styleSource.slice(7)}.png`;
}

async function upload(input, preview, assign) {
  const file = input.files[0];
  if (!file) return;
  notice("");
  try {
    const d = await api(`/api/uploads?name=${encodeURIComponent(file.name)}`, {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
    assign(d.source);
    preview.src = URL.createObjectURL(file);
  } catch (e) {
    notice(`upload refused: ${e.message}`);
    input.value = "";
  }
}

// -- jobs ---------------------------------------------------------------------------------------

function common(kind) {
  const req = { kind, model: $("model").value, weights: $("weights").value, seed: Number($("seed").value || 0) };
  const size = $("input-size").value;
  if (size) req.input_size = Number(size);
  const every = $("preview-every").value;
  if (every) req.preview_every = Number(every);
  return req;
}

async function submit(req) {
  notice("");
  try {
    const job = await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify(req) });
    watch(job.id);
    refreshJobs();
  } catch (e) { notice(e.message); }
}

function runInvert(kind) {
  const req = common(kind);
  req.image = state.source;
  req.preset = $("preset").value;
  req.steps = Number($("steps").value);
  if ($("jitter-end").checked) req.jitter_until = 1;
  if (kind === "invert") req.layer = $("layer").value;
  submit(req);
}

function classesOf(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function runDream() {
  const req = common("dream");
  req.classes = classesOf($("dream-class").value);
  req.preset = $("dream-preset").value;
  req.steps = Number($("dream-steps").value);
  submit(req);
}

function runSaliency() {
  const req = common("saliency");
  req.image = state.source;
  req.method = $("method").value;
  const c = $("saliency-class").value.trim();
  if (c) req.classes = [c];
  submit(req);
}

function runStyle() {
  const req = common("style");
  req.image = state.source;
  req.style_image = state.styleSource;
  req.preset = $("style-preset").value;
  req.steps = Number($("style-steps").value);
  if ($("layer").value) req.layer = $("layer").value;
  submit(req);
}

function watch(id) {
  if (state.stream) state.stream.close();
  state.current = id;
  state.frames = 0;
  $("current").hidden = false;
  $("live").removeAttribute("src");
  $("final-figure").hidden = true;
  $("final-image").removeAttribute("src");
  $("frame-count").dataset.count = "0";
  $("frame-count").textContent = "0 frames";
  $("metrics").innerHTML = $("terms").innerHTML = $("downloads").innerHTML = "";
  $("job-message").textContent = "";
  const es = new EventSource(`/api/jobs/${id}/events`);
  state.stream = es;
  es.addEventListener("frame", (ev) => {
    const f = JSON.parse(ev.data);
    $("live").src = "data:image/png;base64," + f.png;
    state.frames += 1;
    $("frame-count").dataset.count = String(state.frames);
    $("frame-count").textContent = `${state.frames} frames, step ${f.step}${f.phase ? " · " + f.phase : ""}`;
  });
  es.addEventListener("status", (ev) => showJob(JSON.parse(ev.data)));
  es.addEventListener("end", (ev) => { es.close(); showJob(JSON.parse(ev.data)); refreshJobs(); });
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) state.stream = null; };
}

function showJob(j) {
  if (j.id !== state.current) return;
  $("job-title").textContent = j.title;
  const badge = $("state");
  badge.textContent = j.state === "queued" && j.position ? `queued, position ${j.position}` : j.state;
  badge.className = "badge " + j.state;
  $("progress").max = Math.max(1, j.total);
  $("progress").value = j.step;
  $("progress-text").textContent = j.total ? `step ${j.step} of ${j.total}${j.phase ? " · " + j.phase : ""}` : "";
  $("job-message").textContent = j.message || "";
  $("cancel-current").disabled = ["done", "failed", "cancelled", "diverged"].includes(j.state);
  const terms = $("terms");
  terms.innerHTML = "";
  for (const [k, v] of Object.entries(j.terms || {})) {
    const tr = terms.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = fmt(v);
  }
  const r = j.result || {};
  if (r.image) {
    $("final-image").src = `/api/jobs/${j.id}/files/${encodeURIComponent(r.compare || r.image)}`;
    $("final-figure").hidden = false;
  }
  const metrics = $("metrics");
  metrics.innerHTML = "";
  const rows = [];
  if (r.metrics) {
    for (const [k, v] of Object.entries(r.metrics)) {
      if (v && typeof v === "object") for (const [l, e] of Object.entries(v)) rows.push([`${k} ${l}`, e]);
      else rows.push([k, v]);
    }
  }
  for (const s of r.stages || []) rows.push([s.layer, `PSNR ${fmt(s.psnr)}  SSIM ${fmt(s.ssim)}`]);
  for (const c of r.classes || []) rows.push([`${c.class} ${c.name}`, `p = ${fmt(c.prob)}`]);
  if (r.class) rows.push(["explained class", `${r.class} (p = ${fmt(r.prob)})`]);
  if (r.methods) rows.push(["methods", r.methods.join(", ")]);
  if (r.ig_relative_gap !== undefined) rows.push(["IG completeness gap", `${fmt(100 * r.ig_relative_gap)} %`]);
  for (const [k, v] of rows) { const tr = metrics.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = fmt(v); }
  const dl = $("downloads");
  dl.innerHTML = "";
  for (const f of j.files || []) {
    const a = document.createElement("a");
    a.href = `/api/jobs/${j.id}/files/${encodeURIComponent(f)}`;
    a.textContent = f;
    a.download = f;
    dl.appendChild(a);
  }
}

async function cancel(id) {
  try { await api(`/api/jobs/${id}/cancel`, { method: "POST" }); } catch (e) { notice(e.message); }
  refreshJobs();
}

async function refreshJobs() {
  let jobs;
  try { jobs = await api("/api/jobs"); } catch (e) { return; }
  const body = $("jobs").tBodies[0];
  body.innerHTML = "";
  for (const j of jobs.slice().reverse()) {
    const tr = body.insertRow();
    tr.dataset.jobId = j.id;
    tr.dataset.state = j.state;
    const title = tr.insertCell();
    const link = document.createElement("a");
    link.href = "#"; link.textContent = `${j.id} ${j.title}`;
    link.onclick = (ev) => { ev.preventDefault(); watch(j.id); };
    title.appendChild(link);
    tr.insertCell().textContent = j.state === "queued" ? `queued, position ${j.position}` : j.state + (j.message ? ": " + j.message : "");
    tr.insertCell().textContent = j.total ? `${j.step}/${j.total}` : "";
    const c = tr.insertCell();
    if (j.state === "queued" || j.state === "running") {
      const b = document.createElement("button");
      b.textContent = "cancel"; b.className = "cancel";
      b.onclick = () => cancel(j.id);
      c.appendChild(b);
    }
  }
}

// -- wiring -------------------------------------------------------------------------------------

document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== "tab-" + b.dataset.tab; });
}));
$("model").addEventListener("change", loadLayers);
$("input-size").addEventListener("change", loadLayers);
$("layer-search").addEventListener("input", () => showLayers());
$("layer").addEventListener("change", () => { $("layer").dataset.chosen = $("layer").value; });
$("sample").addEventListener("change", pickSample);
$("style-sample").addEventListener("change", pickStyleSample);
$("upload").addEventListener("change", () => upload($("upload"), $("source-preview"), (s) => { state.source = s; }));
$("style-upload").addEventListener("change", () => upload($("style-upload"), $("style-preview"), (s) => { state.styleSource = s; }));
$("run-invert").addEventListener("click", () => runInvert("invert"));
$("run-depth").addEventListener("click", () => runInvert("depth"));
$("run-dream").addEventListener("click", runDream);
$("run-saliency").addEventListener("click", runSaliency);
$("run-style").addEventListener("click", runStyle);
$("final-image").addEventListener("load", () => {
  // small results are shown enlarged by a whole factor (crisp pixels), up to 256 px high
  const img = $("final-image");
  const scale = Math.max(1, Math.floor(256 / Math.max(1, img.naturalHeight)));
  img.style.width = img.naturalWidth * scale + "px";
});
$("cancel-current").addEventListener("click", () => state.current && cancel(state.current));
init();
