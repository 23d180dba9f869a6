// The tatlas serve page: calls the server's own OpenAI-compatible API (no CDN, no framework).
"use strict";

const $ = (id) => document.getElementById(id);
const keyField = $("api-key");
keyField.value = localStorage.getItem("tatlas-key") || "";
keyField.addEventListener("change", () => { localStorage.setItem("tatlas-key", keyField.value); loadModels(); });

function headers(extra = {}) {
  const h = { ...extra };
  if (keyField.value) h["Authorization"] = "Bearer " + keyField.value;
  return h;
}

async function failure(response) {
  try { return (await response.json()).error.message; } catch { return response.status + " " + response.statusText; }
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function loadModels() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (!r.ok) { status(await failure(r), true); return; }
  const models = (await r.json()).data;
  for (const [select, kind] of [["audio-model", "transcription"], ["embed-model", "embedding"], ["chat-model", "chat"]]) {
    const el = $(select);
    el.innerHTML = "";
    for (const m of models.filter((m) => m.kind === kind)) el.add(new Option(`${m.id} (${m.system})`, m.id));
    el.closest("section").classList.toggle("empty", el.options.length === 0);
  }
  status(models.length + " model(s) served");
}

// ------------------------------------------------------------------ speech to text
const clock = (s) => { const m = Math.floor(s / 60); return `${m}:${(s % 60).toFixed(2).padStart(5, "0")}`; };

async function transcribe(blob, name) {
  const list = $("transcript");
  list.innerHTML = "";
  $("audio-note").textContent = `transcribing ${name} …`;
  $("audio-note").className = "note";
  const form = new FormData();
  form.append("file", blob, name);
  form.append("model", $("audio-model").value);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  if ($("words").checked) form.append("timestamp_granularities[]", "word");
  const r = await fetch("/v1/audio/transcriptions", { method: "POST", body: form, headers: headers() });
  if (!r.ok) { $("audio-note").textContent = await failure(r); $("audio-note").className = "error"; return; }
  const out = await r.json();
  $("audio-note").textContent = `${out.language}, ${out.duration.toFixed(1)} s`;
  for (const s of out.segments) {
    const li = document.createElement("li");
    li.innerHTML = `<span class="ts">[${clock(s.start)} → ${clock(s.end)}]</span>`;
    li.append(document.createTextNode(s.text.trim()));
    list.append(li);
  }
  if (out.words) {
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = out.words.map((w) => `${w.word}@${w.start.toFixed(2)}`).join(" ");
    list.append(li);
  }
}

$("audio-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) transcribe(f, f.name); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  const f = e.dataTransfer.files[0]; if (f) transcribe(f, f.name);
});

// Recording: the microphone's samples as 16-bit PCM WAV (every browser records it; the server reads WAV).
function wav(chunks, rate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (o, s) => [...s].forEach((c, i) => view.setUint8(o + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (const x of c) { view.setInt16(o, Math.max(-1, Math.min(1, x)) * 0x7fff, true); o += 2; }
  return new Blob([view], { type: "audio/wav" });
}

let recording = null;
$("record").addEventListener("click", async () => {
  if (recording) {
    const { ctx, stream, node, chunks } = recording;
    recording = null;
    node.disconnect(); stream.getTracks().forEach((t) => t.stop()); await ctx.close();
    $("record").textContent = "● record";
    transcribe(wav(chunks, ctx.sampleRate), "recording.wav");
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const ctx = new AudioContext();
    const node = ctx.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    ctx.createMediaStreamSource(stream).connect(node); node.connect(ctx.destination);
    recording = { ctx, stream, node, chunks };
    $("record").textContent = "■ stop and transcribe";
  } catch (e) { $("audio-note").textContent = "no microphone: " + e.message; $("audio-note").className = "error"; }
});

// ------------------------------------------------------------------ zero-shot
const asDataURL = (file) => new Promise((ok, bad) => {
  const reader = new FileReader(); reader.onload = () => ok(reader.result); reader.onerror = bad; reader.readAsDataURL(file);
});

$("zs-image").addEventListener("change", async (e) => {
  const f = e.target.files[0]; if (f) $("zs-preview").src = await asDataURL(f);
});
$("zs-run").addEventListener("click", async () => {
  const f = $("zs-image").files[0];
  const body = $("zs-scores").tBodies[0];
  body.innerHTML = "";
  if (!f) { body.innerHTML = `<tr><td class="error">choose an image first</td></tr>`; return; }
  const labels = $("zs-labels").value.split(",").map((s) => s.trim()).filter(Boolean);
  const r = await fetch("/v1/images/classifications", {
    method: "POST", headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ model: $("embed-model").value, image: await asDataURL(f), labels }),
  });
  if (!r.ok) { body.innerHTML = `<tr><td class="error"></td></tr>`; body.querySelector("td").textContent = await failure(r); return; }
  for (const { label, score } of (await r.json()).data) {
    const row = body.insertRow();
    row.insertCell().textContent = label;
    row.insertCell().textContent = (100 * score).toFixed(1) + " %";
    row.insertCell().innerHTML = `<div class="bar" style="width:${Math.round(150 * score)}px"></div>`;
  }
});

// ------------------------------------------------------------------ chat (streamed)
const history = [];

function bubble(who, text) {
  const div = document.createElement("div");
  div.className = "msg " + who;
  div.innerHTML = `<span class="who">${who}</span><span class="text"></span>`;
  div.querySelector(".text").textContent = text;
  $("chat-log").append(div);
  return div.querySelector(".text");
}

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  const image = $("chat-image").files[0];
  const content = image ? [{ type: "image_url", image_url: { url: await asDataURL(image) } }, { type: "text", text }] : text;
  history.push({ role: "user", content });
  bubble("user", text + (image ? ` [${image.name}]` : ""));
  $("chat-input").value = ""; $("chat-image").value = "";
  const out = bubble("assistant", "");
  out.parentElement.dataset.state = "streaming";
  $("chat-send").disabled = true;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: $("chat-model").value, messages: history, stream: true,
                             max_tokens: Number($("chat-max").value) || 128 }),
    });
    if (!r.ok) throw new Error(await failure(r));
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", reply = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim(); buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const piece = chunk.choices.length ? chunk.choices[0].delta.content : "";
        if (piece) { reply += piece; out.textContent = reply; out.parentElement.dataset.pieces = (Number(out.parentElement.dataset.pieces || 0) + 1); }
      }
    }
    history.push({ role: "assistant", content: reply });
    out.parentElement.dataset.state = "done";
  } catch (err) {
    out.textContent = err.message; out.className = "text error"; out.parentElement.dataset.state = "error";
    history.pop();
  } finally { $("chat-send").disabled = false; }
});

loadModels();
