// Small inline SVG charts (no chart library: a line chart and a bar chart
// are a few dozen lines, and a library would weigh more than the app).
// Every chart has a text alternative: its title and the latest values.

const NS = "http://www.w3.org/2000/svg";

/** One line of a chart: its name and `[unix ms, value]` points. */
export interface Line {
  name: string;
  points: Array<[number, number]>;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  return element;
}

const WIDTH = 480;
const HEIGHT = 140;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };
const COLORS = ["#0b57d0", "#b3261e", "#1e6b34", "#8a4f00", "#6a1b9a", "#00695c"];

/** A number short enough for an axis label. */
function short(value: number): string {
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(1)}G`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (abs >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return abs >= 10 || value === 0 ? value.toFixed(0) : value.toFixed(2);
}

/** A line chart of `lines` over time; redraw with `update` as points arrive. */
export class LineChart {
  readonly element: HTMLElement;
  private readonly plot: SVGSVGElement;
  private readonly legend: HTMLElement;
  private lines: Line[] = [];

  constructor(private readonly title: string, private readonly unit = "") {
    this.plot = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart-plot" });
    this.legend = document.createElement("div");
    this.legend.className = "chart-legend";
    this.element = document.createElement("figure");
    this.element.className = "chart";
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    this.element.append(caption, this.plot, this.legend);
    this.draw();
  }

  /** Replaces the lines and redraws. */
  setLines(lines: Line[]): void {
    this.lines = lines;
    this.draw();
  }

  /** Appends a point to the line `name` (created if new), keeping at most `keep` points. */
  push(name: string, at: number, value: number, keep = 360): void {
    let line = this.lines.find((l) => l.name === name);
    if (!line) {
      line = { name, points: [] };
      this.lines.push(line);
    }
    const last = line.points[line.points.length - 1];
    if (last && last[0] >= at) return;
    line.points.push([at, value]);
    if (line.points.length > keep) line.points.splice(0, line.points.length - keep);
    this.draw();
  }

  private draw(): void {
    this.plot.replaceChildren();
    const all = this.lines.flatMap((l) => l.points);
    const latest = this.lines
      .filter((l) => l.points.length)
      .map((l) => `${l.name} ${short(l.points[l.points.length - 1][1])}${this.unit}`)
      .join(", ");
    this.plot.setAttribute("aria-label", `${this.title}: ${latest || "no data yet"}`);
    if (all.length === 0) {
      const text = svg("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "chart-empty" });
      text.textContent = "no data yet";
      this.plot.append(text);
      this.legend.replaceChildren();
      return;
    }
    const times = all.map((p) => p[0]);
    const values = all.map((p) => p[1]);
    const t0 = Math.min(...times);
    const t1 = Math.max(...times, t0 + 1);
    const max = Math.max(...values, 0) || 1;
    const x = (t: number) => PAD.left + ((t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
    const y = (v: number) => HEIGHT - PAD.bottom - (v / max) * (HEIGHT - PAD.top - PAD.bottom);
    this.plot.append(
      svg("line", { x1: PAD.left, y1: y(0), x2: WIDTH - PAD.right, y2: y(0), class: "chart-axis" }),
      svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: y(0), class: "chart-axis" }),
    );
    const label = (x1: number, y1: number, text: string, anchor: string) => {
      const node = svg("text", { x: x1, y: y1, "text-anchor": anchor, class: "chart-label" });
      node.textContent = text;
      this.plot.append(node);
    };
    label(PAD.left - 4, PAD.top + 8, `${short(max)}${this.unit}`, "end");
    label(PAD.left - 4, y(0), "0", "end");
    const clock = (t: number) => new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    label(PAD.left, HEIGHT - 4, clock(t0), "start");
    label(WIDTH - PAD.right, HEIGHT - 4, clock(t1), "end");
    const legend: HTMLElement[] = [];
    this.lines.forEach((line, index) => {
      const color = COLORS[index % COLORS.length];
      if (line.points.length) {
        const d = line.points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
        this.plot.append(svg("path", { d, stroke: color, class: "chart-line" }));
        // The newest point as a dot: a line of one point draws nothing else.
        const [t, v] = line.points[line.points.length - 1];
        this.plot.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: color }));
      }
      const key = document.createElement("span");
      key.className = "chart-key";
      key.style.setProperty("--key", color);
      const last = line.points[line.points.length - 1];
      key.textContent = last ? `${line.name}: ${short(last[1])}${this.unit}` : line.name;
      legend.push(key);
    });
    this.legend.replaceChildren(...legend);
  }
}

/** One bar of a stacked bar chart: a label and a value per part. */
export interface StackedBar {
  label: string;
  parts: Record<string, number>;
}

/** A stacked bar chart (e.g. cost per day split by project). */
export function stackedBars(title: string, bars: StackedBar[], format: (value: number) => string): HTMLElement {
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  const names = [...new Set(bars.flatMap((b) => Object.keys(b.parts)))].sort();
  const totals = bars.map((b) => Object.values(b.parts).reduce((a, v) => a + v, 0));
  const max = Math.max(...totals, 0) || 1;
  const plot = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart-plot" });
  plot.setAttribute("aria-label", `${title}: ${bars.map((b, i) => `${b.label} ${format(totals[i])}`).join(", ")}`);
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, bars.length);
  const base = HEIGHT - PAD.bottom;
  const scale = (HEIGHT - PAD.top - PAD.bottom) / max;
  bars.forEach((b, i) => {
    let top = base;
    names.forEach((name, n) => {
      const value = b.parts[name] ?? 0;
      if (value <= 0) return;
      const height = value * scale;
      top -= height;
      const rect = svg("rect", { x: PAD.left + i * slot + slot * 0.15, y: top, width: slot * 0.7, height, fill: COLORS[n % COLORS.length] });
      const tip = svg("title", {});
      tip.textContent = `${b.label} ${name}: ${format(value)}`;
      rect.append(tip);
      plot.append(rect);
    });
    const text = svg("text", { x: PAD.left + i * slot + slot / 2, y: HEIGHT - 4, "text-anchor": "middle", class: "chart-label" });
    text.textContent = b.label;
    plot.append(text);
  });
  const top = svg("text", { x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end", class: "chart-label" });
  top.textContent = format(max);
  plot.append(top, svg("line", { x1: PAD.left, y1: base, x2: WIDTH - PAD.right, y2: base, class: "chart-axis" }));
  const legend = document.createElement("div");
  legend.className = "chart-legend";
  names.forEach((name, n) => {
    const key = document.createElement("span");
    key.className = "chart-key";
    key.style.setProperty("--key", COLORS[n % COLORS.length]);
    key.textContent = name;
    legend.append(key);
  });
  figure.append(caption, plot, legend);
  return figure;
}
