// AudioWorklet: mono 16-bit PCM in 100 ms messages at the context's rate (16 kHz when the
// browser honours the page's request), posted to the page, which sends them over the socket.
class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buffer = new Int16Array(Math.round(sampleRate / 10));
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.flush();
        this.port.postMessage("flushed");
      }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      const n = channels[0].length;
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (const ch of channels) s += ch[i];
        s = Math.max(-1, Math.min(1, s / channels.length));
        this.buffer[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.filled === this.buffer.length) this.flush();
      }
    }
    return true;
  }

  flush() {
    if (!this.filled) return;
    const out = this.buffer.slice(0, this.filled);
    this.port.postMessage(out.buffer, [out.buffer]);
    this.filled = 0;
  }
}

registerProcessor("pcm-capture", PcmCapture);
