// cryoset view: plain JavaScript over the JSON API (no build step, nothing fetched from the internet).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { mics: [], cur: 0, picks: null, insp: null, classes: null, keep: new Set(), recovery: null, recAccepted: new Set() };

function say(text, ok) { const m = $("msg"); m.textContent = text || ""; m.className = ok ? "ok" : ""; }

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let r;
  try { r = await fetch(path, opts); } catch (e) { throw new Error("the server does not answer (" + e.message + ")"); }
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: "HTTP " + r.status }; }
  if (!r.ok) { const err = new Error(data.error || ("HTTP " + r.status)); err.status = r.status; throw err; }
  return data;
}
const fmt = (v, d) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

// ------------------------------------------------------------------ tabs
for (const b of document.querySelectorAll(".tab")) {
  b.onclick = () => {
    say("");
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === b));
    document.querySelectorAll(".pane").forEach((p) => p.classList.toggle("active", p.id === "tab-" + b.dataset.tab));
    if (b.dataset.tab === "classes") loadClasses();
    if (b.dataset.tab === "recovery") loadRecovery();
    if (b.dataset.tab === "inspect") drawInspection();
  };
}

// ------------------------------------------------------------------ thresholds (shared)
function thresholds() {
  return {
    min_ncc: $("use_ncc").checked ? Number($("min_ncc").value) : null,
    min_power: $("use_minp").checked ? Number($("min_power").value) : null,
    max_power: $("use_maxp").checked ? Number($("max_power").value) : null,
    max_ctf_resolution_a: $("use_res").checked && $("maxres").value !== "" ? Number($("maxres").value) : null,
  };
}
function ctfRes(key) { const m = state.mics.find((x) => x.key === key); return m ? m.fit_resolution_a : null; }
// the verdict pick inspection gives (thresholds only; "" passes); fixed: a reason thresholds do not change
function verdict(ncc, power, key, fixed, t) {
  if (fixed) return fixed;
  const r = ctfRes(key);
  if (t.max_ctf_resolution_a !== null && r !== null && r > t.max_ctf_resolution_a) return "CTF fit worse than " + t.max_ctf_resolution_a + " A";
  if (t.min_ncc !== null && !(ncc !== null && ncc >= t.min_ncc)) return "NCC below " + t.min_ncc;
  if (t.min_power !== null && !(power !== null && power >= t.min_power)) return "power below " + t.min_power;
  if (t.max_power !== null && !(power !== null && power <= t.max_power)) return "power above " + t.max_power;
  return "";
}

// ------------------------------------------------------------------ micrographs
async function loadMics() {
  const info = await api("/api/project");
  $("root").textContent = info.root;
  state.mics = (await api("/api/micrographs")).micrographs;
  const rows = state.mics.map((m, i) => `<tr data-i="${i}"><td>${m.key}</td><td>${fmt(m.fit_resolution_a, 1)}</td><td>${fmt(m.defocus_a, 0)}</td><td class="np">${m.picks}</td></tr>`);
  $("miclist").tBodies[0].innerHTML = rows.join("");
  $("ctflist").tBodies[0].innerHTML = state.mics.map((m, i) => `<tr data-i="${i}"><td>${m.key}</td><td>${fmt(m.fit_resolution_a, 1)}</td><td>${fmt(m.defocus_a, 0)}</td></tr>`).join("");
  for (const t of ["miclist", "ctflist"]) for (const tr of $(t).tBodies[0].rows) tr.onclick = () => show(Number(tr.dataset.i));
  const res = state.mics.map((m) => m.fit_resolution_a).filter((v) => v !== null);
  if (res.length) $("maxres").value = Math.ceil(Math.max(...res));
  if (state.mics.length) await show(0);
}

async function show(i) {
  if (i < 0 || i >= state.mics.length) return;
  state.cur = i;
  const m = state.mics[i];
  for (const t of ["miclist", "ctflist"]) for (const tr of $(t).tBodies[0].rows) tr.classList.toggle("sel", Number(tr.dataset.i) === i);
  $("curname").textContent = m.key;
  loadImage();
  if (m.ctf_plot) { $("ctfplot").src = `/api/micrographs/${encodeURIComponent(m.key)}/ctf.png`; } else { $("ctfplot").removeAttribute("src"); }
  try { state.picks = await api(`/api/micrographs/${encodeURIComponent(m.key)}/picks`); drawPicks(); say(""); }
  catch (e) { say(e.message); }
  updateCounts();
}

function loadImage() {
  const m = state.mics[state.cur];
  if (!m) return;
  $("contrastv").textContent = $("contrast").value;
  $("mic").src = `/api/micrographs/${encodeURIComponent(m.key)}/image.png?contrast=${$("contrast").value}&lowpass_a=${Number($("lowpass").value) || 0}`;
}
$("mic").onerror = async () => {
  try { const r = await fetch($("mic").src); const d = await r.json(); say(d.error); } catch (e) { say("the micrograph image could not be loaded"); }
};

function drawPicks() {
  const p = state.picks; if (!p) return;
  const svg = $("overlay");
  svg.setAttribute("viewBox", `0 0 ${p.nx} ${p.ny}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const t = thresholds();
  const r = (p.diameter_px || 20) / 2;
  const parts = p.picks.map((q, idx) => {
    const fixed = q.reason && !/^(NCC |power )/.test(q.reason) ? q.reason : "";
    const v = verdict(q.ncc, q.power, p.key, fixed, t);
    const cls = fixed ? "fp" : (v ? "fail" : "acc");
    const title = fixed || v || `pick (NCC ${fmt(q.ncc, 3)}, power ${fmt(q.power, 2)})`;
    return `<circle class="${cls}" data-idx="${idx}" cx="${q.x_px}" cy="${q.y_px}" r="${r}"><title>${title}</title></circle>`;
  });
  svg.innerHTML = parts.join("");
  $("micinfo").textContent = `${p.key}: ${p.nx}×${p.ny} px, shown binned ${p.bin}×; ${p.picks.filter((q) => !q.reason).length} picks, ${p.picks.filter((q) => q.reason).length} rejected`;
}

$("overlay").addEventListener("click", async (ev) => {
  const p = state.picks; if (!p) return;
  const svg = $("overlay");
  const box = svg.getBoundingClientRect();
  const x = (ev.clientX - box.left) / box.width * p.nx, y = (ev.clientY - box.top) / box.height * p.ny;
  const r = (p.diameter_px || 20) / 2;
  const near = p.picks.some((q) => Math.hypot(q.x_px - x, q.y_px - y) <= r);
  try {
    state.picks = { ...p, ...(await api(`/api/micrographs/${encodeURIComponent(p.key)}/picks`, { action: near ? "remove" : "add", x_px: x, y_px: y, version: p.version })) };
    drawPicks();
    const m = state.mics[state.cur]; m.picks = state.picks.picks.filter((q) => !q.reason).length;
    $("miclist").tBodies[0].rows[state.cur].querySelector(".np").textContent = m.picks;
    say(near ? "pick removed and saved" : "pick added and saved", true);
    state.insp = null;
  } catch (e) { say(e.message); }
});

$("contrast").oninput = loadImage;
$("lowpass").onchange = loadImage;
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT") return;
  if (ev.key === "ArrowDown" || ev.key === "j") { show(state.cur + 1); ev.preventDefault(); }
  else if (ev.key === "ArrowUp" || ev.key === "k") { show(state.cur - 1); ev.preventDefault(); }
  else if (ev.key === "+" || ev.key === "=") { $("contrast").stepDown(); loadImage(); }
  else if (ev.key === "-") { $("contrast").stepUp(); loadImage(); }
});

// ------------------------------------------------------------------ inspection
async function loadInspection() {
  state.insp = await api("/api/inspection");
  const d = state.insp;
  // slider ranges: the server's histogram range (0.5–99.5th percentiles)
  const setup = (id, h, init, use) => {
    const lo = h.edges[0], hi = h.edges[h.edges.length - 1];
    const s = $(id); s.min = lo; s.max = hi; s.step = (hi - lo) / 200 || 0.001;
    s.value = init !== null && init !== undefined ? init : (id === "max_power" ? hi : lo);
    $(use).checked = init !== null && init !== undefined;
  };
  if (!$("min_ncc").dataset.ready) {
    setup("min_ncc", d.histograms.ncc, d.thresholds.min_ncc, "use_ncc");
    setup("min_power", d.histograms.power, d.thresholds.min_power, "use_minp");
    setup("max_power", d.histograms.power, d.thresholds.max_power, "use_maxp");
    if (d.thresholds.max_ctf_resolution_a !== null) { $("maxres").value = d.thresholds.max_ctf_resolution_a; $("use_res").checked = true; }
    $("min_ncc").dataset.ready = "1";
  }
  $("total").textContent = d.ncc.length;
}

function updateCounts() {
  const d = state.insp; if (!d) return;
  const t = thresholds();
  let pass = 0, cur = 0;
  const key = state.mics[state.cur] ? state.mics[state.cur].key : null;
  for (let i = 0; i < d.ncc.length; i++) {
    if (!verdict(d.ncc[i], d.power[i], d.key[i], d.fixed_reason[i], t)) { pass++; if (d.key[i] === key) cur++; }
  }
  $("passCount").textContent = pass;
  $("passCurrent").textContent = cur;
  for (const [id, v] of [["min_ncc", t.min_ncc], ["min_power", t.min_power], ["max_power", t.max_power]]) $(id + "v").textContent = v === null ? "off" : Number(v).toFixed(3);
  const res = t.max_ctf_resolution_a;
  $("ctfcount").textContent = res === null ? "no micrograph rejected by fit" : `${state.mics.filter((m) => m.fit_resolution_a !== null && m.fit_resolution_a > res).length} of ${state.mics.length} micrographs rejected`;
}

// a histogram the server binned (edges, counts) with the thresholds as red lines
function hist(canvas, h, lines) {
  const c = $(canvas), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!h.counts.length) return;
  const nb = h.counts.length, lo = h.edges[0], hi = h.edges[nb];
  const top = Math.max(...h.counts), W = c.width, H = c.height - 14;
  g.fillStyle = "#58a";
  h.counts.forEach((n, i) => g.fillRect(i * W / nb, H - n / top * H, W / nb - 1, n / top * H));
  g.fillStyle = "#333"; g.font = "10px sans-serif";
  g.fillText(lo.toFixed(3), 2, c.height - 2); g.fillText(hi.toFixed(3), W - 40, c.height - 2);
  g.strokeStyle = "#c00"; g.lineWidth = 2;
  for (const t of lines) if (t !== null) { const x = (t - lo) / (hi - lo) * W; g.beginPath(); g.moveTo(x, 0); g.lineTo(x, H); g.stroke(); }
}

function scatter() {
  const d = state.insp, c = $("scatter"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const idx = d.ncc.map((_, i) => i).filter((i) => d.ncc[i] !== null && d.power[i] !== null);
  if (!idx.length) return;
  const xs = idx.map((i) => d.ncc[i]), ys = idx.map((i) => Math.log10(Math.max(d.power[i], 1e-6)));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const t = thresholds();
  idx.forEach((i, k) => {
    const v = verdict(d.ncc[i], d.power[i], d.key[i], d.fixed_reason[i], t);
    g.fillStyle = d.fixed_reason[i] ? "#f33" : (v ? "#fa0" : "#2a2");
    g.fillRect((xs[k] - x0) / (x1 - x0 || 1) * (c.width - 6) + 2, c.height - 4 - (ys[k] - y0) / (y1 - y0 || 1) * (c.height - 8), 3, 3);
  });
}

async function drawInspection() {
  try { if (!state.insp) await loadInspection(); } catch (e) { say(e.message); return; }
  const t = thresholds();
  hist("hncc", state.insp.histograms.ncc, [t.min_ncc]);
  hist("hpow", state.insp.histograms.power, [t.min_power, t.max_power]);
  scatter();
  updateCounts();
}
// moving a slider (or typing a resolution) turns its threshold on
const SWITCH = { min_ncc: "use_ncc", min_power: "use_minp", max_power: "use_maxp", maxres: "use_res" };
for (const id of ["min_ncc", "min_power", "max_power", "use_ncc", "use_minp", "use_maxp", "maxres", "use_res"]) {
  $(id).addEventListener("input", () => { if (SWITCH[id]) $(SWITCH[id]).checked = true; drawInspection(); drawPicks(); });
}
$("apply").onclick = async () => {
  say("applying…", true);
  try {
    const r = await api("/api/inspection/apply", thresholds());
    $("applied").textContent = `written: ${r.picks} picks, ${r.rejected} rejected`;
    say(`thresholds applied: ${r.picks} picks kept, ${r.rejected} rejected`, true);
    state.insp = null;
    const cur = state.cur;
    await loadMics(); await show(cur); await drawInspection();
  } catch (e) { say(e.message); }
};

// ------------------------------------------------------------------ classes
async function loadClasses() {
  try { state.classes = await api("/api/classes"); } catch (e) { say(e.message); return; }
  const d = state.classes;
  state.keep = new Set(d.classes.filter((c) => c.keep).map((c) => c.class_number));
  state.recAccepted = new Set(d.recovered_classes);
  drawClasses();
}
function recoveredClasses() {
  return state.classes ? state.classes.classes.filter((c) => c.recovered > 0).map((c) => c.class_number)
    : state.recovery.classes.map((g) => g.class_number);
}
function drawClasses() {
  const d = state.classes;
  const all = recoveredClasses();
  $("keeprec").checked = all.length > 0 && all.every((j) => state.recAccepted.has(j));
  $("keeprec").indeterminate = all.some((j) => state.recAccepted.has(j)) && !$("keeprec").checked;
  $("gallery").innerHTML = d.classes.map((c) => `<div class="card ${state.keep.has(c.class_number) ? "" : "reject"}" data-j="${c.class_number}">
    <img src="/api/classes/${c.class_number}/image.png" alt="class ${c.class_number}">
    <b>class ${c.class_number}</b> ${state.keep.has(c.class_number) ? "kept" : "rejected"}<br>
    n=${c.population} · ${fmt(c.resolution_a, 1)} Å<br>ESS ${fmt(c.ess, 2)} · ECA ${fmt(c.eca, 2)}<br>junk rule: ${c.verdict}${c.recovered ? `<br>${c.recovered} recovered` : ""}</div>`).join("");
  for (const el of $("gallery").children) el.onclick = () => {
    const j = Number(el.dataset.j);
    if (state.keep.has(j)) state.keep.delete(j); else state.keep.add(j);
    drawClasses();
  };
  $("classinfo").textContent = `${d.particles} particles, ${d.kept} kept (${d.recovered} recovered from junk classes)` + (d.selected_by ? `; saved by ${d.selected_by.user} at ${d.selected_by.utc}` : "") + (d.store ? `; kept flags also written to the store ${d.store}` : "");
}
$("keeprec").onchange = () => {
  state.recAccepted = new Set($("keeprec").checked ? recoveredClasses() : []);
  drawClasses();
};
async function saveSelection() {
  const version = state.classes ? state.classes.version : state.recovery.version;
  const sorted = (s) => [...s].sort((a, b) => a - b);
  state.classes = await api("/api/classes/selection", { keep: sorted(state.keep), keep_recovered: state.recAccepted.size > 0, recovered_classes: sorted(state.recAccepted), version });
  state.recovery = await api("/api/recovery");
  state.recAccepted = new Set(state.classes.recovered_classes);
  say(`selection saved: ${state.classes.kept} particles kept`, true);
}
$("saveclasses").onclick = async () => {
  try { await saveSelection(); drawClasses(); } catch (e) { say(e.message); }
};

// ------------------------------------------------------------------ recovery
async function loadRecovery() {
  try {
    state.recovery = await api("/api/recovery");
    if (!state.classes) { state.keep = new Set(state.recovery.keep); state.recAccepted = new Set(state.recovery.recovered_classes); }
  } catch (e) { say(e.message); return; }
  drawRecovery();
}
function drawRecovery() {
  const r = state.recovery;
  $("recovery").innerHTML = r.classes.length ? r.classes.map((g) => {
    const on = state.recAccepted.has(g.class_number);
    const rows = g.particles.map((p) => `<tr><td>${p.micrograph ?? "–"}</td><td>${fmt(p.x_px, 0)}</td><td>${fmt(p.y_px, 0)}</td><td>${fmt(p.max_prob, 2)}</td><td>${fmt(p.ess, 2)}</td><td>${fmt(p.eca, 2)}</td><td>${p.kept ? "yes" : "no"}</td></tr>`).join("");
    return `<div class="recgroup ${on ? "" : "reject"}" data-j="${g.class_number}">
      <div class="card ${on ? "" : "reject"}"><img src="/api/classes/${g.class_number}/image.png" alt="class ${g.class_number}">
      <b>class ${g.class_number}</b> recovery ${on ? "accepted" : "dropped"}<br>junk rule: ${g.verdict} · n=${g.population}<br>${g.recovered} recovered</div>
      <table><thead><tr><th>micrograph</th><th>x</th><th>y</th><th>max prob</th><th>ESS</th><th>ECA</th><th>kept (saved)</th></tr></thead><tbody>${rows}</tbody></table></div>`;
  }).join("") : "<p>the recovery pass took back no particle</p>";
  for (const el of $("recovery").querySelectorAll(".recgroup .card")) el.onclick = () => {
    const j = Number(el.parentElement.dataset.j);
    if (state.recAccepted.has(j)) state.recAccepted.delete(j); else state.recAccepted.add(j);
    drawRecovery();
  };
  const n = r.classes.filter((g) => state.recAccepted.has(g.class_number)).reduce((a, g) => a + g.recovered, 0);
  $("recinfo").textContent = `${r.recovered} particles recovered from ${r.classes.length} junk class(es); ${n} accepted`;
}
$("saverecovery").onclick = async () => {
  try { await saveSelection(); drawRecovery(); } catch (e) { say(e.message); }
};

loadMics().then(loadInspection).then(updateCounts).catch((e) => say(e.message));
