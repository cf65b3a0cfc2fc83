// A chosen file: its waveform, decoded and drawn here in the browser, with each word's span from
// POST /v1/transcribe or POST /v1/align over it; choosing a word plays its span.
const $ = (id) => document.getElementById(id);
let clip = null; // { file, samples, duration } of the chosen file
let playing = null; // { button, end } of the word playing, end in seconds

function setStatus(text) {
  $("file-status").textContent = text;
}

async function decode(file) {
  // Any rate will do for drawing; the service decodes the file again itself.
  const context = new OfflineAudioContext(1, 1, 16000);
  const buffer = await context.decodeAudioData(await file.arrayBuffer());
  const samples = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    buffer.getChannelData(c).forEach((x, i) => (samples[i] += x / buffer.numberOfChannels));
  }
  return { samples, duration: buffer.duration };
}

function drawWave(canvas, samples) {
  const scale = window.devicePixelRatio || 1;
  canvas.width = Math.round(canvas.clientWidth * scale);
  canvas.height = Math.round(canvas.clientHeight * scale);
  const g = canvas.getContext("2d");
  g.fillStyle = "#f4f4f4";
  g.fillRect(0, 0, canvas.width, canvas.height);
  let peak = 1e-6;
  for (const x of samples) peak = Math.max(peak, Math.abs(x));
  const middle = canvas.height / 2;
  const perColumn = samples.length / canvas.width;
  g.fillStyle = "#1565c0";
  for (let column = 0; column < canvas.width; column++) {
    let lo = 0;
    let hi = 0;
    const end = Math.min(samples.length, Math.ceil((column + 1) * perColumn));
    for (let i = Math.floor(column * perColumn); i < end; i++) {
      lo = Math.min(lo, samples[i]);
      hi = Math.max(hi, samples[i]);
    }
    const top = middle - (hi / peak) * middle;
    g.fillRect(column, top, 1, Math.max(1, ((hi - lo) / peak) * middle));
  }
}

function showSpans(words, duration) {
  const buttons = words.map((w) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "span";
    button.textContent = w.word;
    button.dataset.start = w.start;
    button.dataset.end = w.end;
    button.style.left = `${(100 * w.start) / duration}%`;
    button.style.width = `${(100 * (w.end - w.start)) / duration}%`;
    button.title = `${w.word}: ${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
    button.setAttribute("aria-label", `${w.word}, ${w.start.toFixed(2)} to ${w.end.toFixed(2)} s`);
    button.addEventListener("click", () => play(button, w.start, w.end));
    return button;
  });
  $("spans").replaceChildren(...buttons);
  mark(null);
}

function mark(playing) {
  for (const b of $("spans").children) b.setAttribute("aria-pressed", String(b === playing));
}

function play(button, start, end) {
  const player = $("player");
  const word = { button, end };
  playing = word;
  mark(button);
  player.currentTime = start;
  // Watched once playing: before that the player is still paused, which would end the watch.
  player.play().then(
    () => requestAnimationFrame(() => watch(word)),
    (err) => setStatus(`cannot play: ${err.message || err}`),
  );
}

function watch(word) {
  // Every animation frame: timeupdate comes only every ~250 ms, a short word would overrun.
  if (playing !== word) return; // another word took over
  const player = $("player");
  if (player.currentTime >= word.end) {
    player.pause();
    player.currentTime = word.end;
  }
  if (player.paused) {
    playing = null;
    mark(null);
    return;
  }
  requestAnimationFrame(() => watch(word));
}

async function choose() {
  const file = $("file").files[0];
  if (!file) return;
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(file);
  player.hidden = false;
  playing = null;
  $("spans").replaceChildren();
  $("file-text").textContent = "";
  delete $("wave").dataset.duration;
  $("transcribe").disabled = $("align").disabled = false;
  $("track").hidden = false;
  clip = { file, samples: new Float32Array(0), duration: null };
  let decoded;
  try {
    decoded = await decode(file);
  } catch (err) {
    // The service reads more formats than the browser: words still show, on a blank track.
    drawWave($("wave"), clip.samples);
    setStatus(`no waveform: the browser cannot decode this file (${err.message || err})`);
    return;
  }
  if (clip.file !== file) return; // another file was chosen meanwhile
  clip = { file, ...decoded };
  drawWave($("wave"), clip.samples);
  $("wave").dataset.duration = clip.duration;
  setStatus(`${clip.duration.toFixed(2)} s`);
}

async function request(task) {
  const asked = clip;
  const form = new FormData();
  form.append("file", asked.file);
  if (task === "align") {
    const text = $("align-text").value;
    if (!text.trim()) {
      setStatus("paste the transcript to align first");
      $("align-text").focus();
      return;
    }
    form.append("text", text);
  }
  setStatus(task === "align" ? "aligning…" : "transcribing…");
  const response = await fetch(`/v1/${task}`, { method: "POST", body: form });
  const body = await response.json();
  if (clip.file !== asked.file) return; // the answer is for a file no longer shown
  if (!response.ok) {
    setStatus(`error: ${body.error ? body.error.message : response.status}`);
    return;
  }
  $("file-text").textContent = body.text;
  showSpans(body.words, clip.duration || body.duration);
  setStatus(`${body.words.length} words in ${body.duration.toFixed(2)} s`);
}

async function run(task) {
  if (!clip) return;
  const buttons = [$("transcribe"), $("align")];
  buttons.forEach((b) => (b.disabled = true)); // one request at a time
  try {
    await request(task);
  } catch (err) {
    setStatus(`error: ${err.message || err}`);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

export function setUpFilePanel() {
  $("file").addEventListener("change", choose);
  for (const task of ["transcribe", "align"]) $(task).addEventListener("click", () => run(task));
  window.addEventListener("resize", () => clip && drawWave($("wave"), clip.samples));
}
