// The page: live transcription over WS /v1/stream; a chosen file's words (file.js).
import { setUpFilePanel } from "/static/file.js";

const $ = (id) => document.getElementById(id);
let live = null; // the running microphone session

async function showModel() {
  try {
    const body = await (await fetch("/v1/models")).json();
    const model = body.data.find((m) => m.task === "transcribe") || body.data[0];
    $("model").textContent = model ? model.id : "(no model)";
  } catch (err) {
    $("model").textContent = `unavailable (${err})`;
  }
}

function setStatus(text) {
  $("status").textContent = text;
}

function onMessage(msg) {
  if (msg.type === "ready") {
    setStatus(`listening (${msg.model})`);
  } else if (msg.type === "partial") {
    $("partial").textContent = msg.text;
  } else if (msg.type === "final") {
    const span = document.createElement("span");
    span.className = "final";
    span.textContent = msg.text;
    span.title = msg.words.map((w) => `${w.word} ${w.start.toFixed(2)}–${w.end.toFixed(2)} s`).join("\n");
    const finals = $("finals");
    if (finals.childElementCount) finals.append(" ");
    finals.append(span);
    $("partial").textContent = "";
  } else if (msg.type === "end") {
    setStatus("done");
  } else if (msg.type === "error") {
    setStatus(`error: ${msg.message}`);
  }
}

async function startMic() {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext({ sampleRate: 16000 });
  await context.audioWorklet.addModule("/static/pcm-worklet.js");
  const source = context.createMediaStreamSource(media);
  const node = new AudioWorkletNode(context, "pcm-capture");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/stream`);
  socket.binaryType = "arraybuffer";
  live = { media, context, source, node, socket };
  $("finals").textContent = "";
  $("partial").textContent = "";
  setStatus("connecting");

  node.port.onmessage = (event) => {
    if (event.data === "flushed") {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "stop" }));
    } else if (socket.readyState === WebSocket.OPEN) {
      socket.send(event.data);
    }
  };
  socket.onopen = () => {
    const start = { type: "start", sample_rate: context.sampleRate, encoding: "pcm_s16le", interim_results: true };
    socket.send(JSON.stringify(start));
    source.connect(node);
    node.connect(context.destination); // keeps the graph pulling; the node outputs silence
  };
  socket.onmessage = (event) => onMessage(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (event.code !== 1000 && !$("status").textContent.startsWith("error")) {
      setStatus(`closed (${event.code} ${event.reason})`);
    }
    release();
  };
  $("mic").textContent = "Stop";
  $("mic").classList.add("on");
}

function stopMic() {
  if (!live) return;
  setStatus("finishing");
  live.source.disconnect();
  live.media.getTracks().forEach((t) => t.stop());
  live.node.port.postMessage("flush"); // the last samples, then "flushed" sends stop
}

function release() {
  if (!live) return;
  live.media.getTracks().forEach((t) => t.stop());
  live.context.close();
  live = null;
  $("mic").textContent = "Start microphone";
  $("mic").classList.remove("on");
}

$("mic").addEventListener("click", () => {
  if (live) {
    stopMic();
  } else {
    startMic().catch((err) => {
      setStatus(`error: ${err.message || err}`);
      release();
    });
  }
});

setUpFilePanel();
showModel();
