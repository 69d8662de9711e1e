// A small canvas chart of throughput: the last 60 seconds, sent and received, in bits per
// second, with a "nice" scale. No library: it draws on every sample and on resize.
"use strict";

class ThroughputChart {
  constructor(canvas, seconds = 60) {
    this.canvas = canvas;
    this.seconds = seconds;
    this.samples = []; // {t: ms, tx: bit/s, rx: bit/s}
    this.emptyText = "No traffic data while disconnected";
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  push(t, tx, rx) {
    this.samples.push({ t, tx, rx });
    const cutoff = t - (this.seconds + 2) * 1000;
    while (this.samples.length && this.samples[0].t < cutoff) this.samples.shift();
    this.draw();
  }

  clear() {
    this.samples = [];
    this.draw();
  }

  peak(key) {
    return this.samples.reduce((m, s) => Math.max(m, s[key]), 0);
  }

  // The top of the scale: its quarters are round numbers (1, 2, 3, 4, 6 or 8 × 10^k).
  static niceMax(v) {
    if (v <= 0) return 1e6;
    const exp = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 3, 4, 6, 8, 10]) if (v <= m * exp) return m * exp;
    return 10 * exp;
  }

  static bits(v) {
    const units = ["bit/s", "Kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(v >= 10 ? 1 : 2)} ${units[i]}`;
  }

  // An axis label: no trailing zeros ("750 Kbit/s", "1.5 Mbit/s").
  static axis(v) {
    const units = ["bit/s", "Kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return `${+v.toFixed(2)} ${units[i]}`;
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 78, right = 10, top = 10, bottom = 24;
    const pw = w - left - right, ph = h - top - bottom;
    const max = ThroughputChart.niceMax(Math.max(this.peak("tx"), this.peak("rx")) * 1.1);
    g.font = "11px " + getComputedStyle(document.body).fontFamily;
    g.textBaseline = "middle";
    // grid and labels
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.strokeStyle = i === 0 ? "#2a3a5e" : "rgba(42,58,94,0.55)";
      g.lineWidth = 1;
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(left + pw, Math.round(y) + 0.5);
      g.stroke();
      g.fillStyle = "#7d8aa6";
      g.textAlign = "right";
      g.fillText(ThroughputChart.axis((max * i) / 4), left - 8, y);
    }
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillText(`${this.seconds} s ago`, left, h - 6);
    g.textAlign = "right";
    g.fillText("now", left + pw, h - 6);
    if (this.samples.length === 0) {
      g.textAlign = "center";
      g.fillStyle = "#5f6d8c";
      g.fillText(this.emptyText, left + pw / 2, top + ph / 2);
      return;
    }
    const now = this.samples[this.samples.length - 1].t;
    const x = (t) => left + pw - ((now - t) / (this.seconds * 1000)) * pw;
    const y = (v) => top + ph - (Math.min(v, max) / max) * ph;
    const series = (key, stroke, fillTop) => {
      const pts = this.samples.filter((s) => now - s.t <= this.seconds * 1000);
      if (pts.length === 0) return;
      if (pts.length === 1) {
        // One second of data: a dot until there is a line.
        g.beginPath();
        g.arc(x(pts[0].t), y(pts[0][key]), 3, 0, 2 * Math.PI);
        g.fillStyle = stroke;
        g.fill();
        return;
      }
      g.save();
      g.beginPath();
      g.rect(left, top - 2, pw, ph + 4);
      g.clip();
      g.beginPath();
      pts.forEach((s, i) => (i ? g.lineTo(x(s.t), y(s[key])) : g.moveTo(x(s.t), y(s[key]))));
      const grad = g.createLinearGradient(0, top, 0, top + ph);
      grad.addColorStop(0, fillTop);
      grad.addColorStop(1, "rgba(0,0,0,0)");
      g.lineTo(x(pts[pts.length - 1].t), top + ph);
      g.lineTo(x(pts[0].t), top + ph);
      g.closePath();
      g.fillStyle = grad;
      g.fill();
      g.beginPath();
      pts.forEach((s, i) => (i ? g.lineTo(x(s.t), y(s[key])) : g.moveTo(x(s.t), y(s[key]))));
      g.strokeStyle = stroke;
      g.lineWidth = 2;
      g.lineJoin = "round";
      g.stroke();
      g.restore();
    };
    series("rx", "#9b8cff", "rgba(155,140,255,0.28)");
    series("tx", "#3fd5c6", "rgba(63,213,198,0.30)");
  }
}

window.ThroughputChart = ThroughputChart;
